"""What a user's files hand the program, read defensively: YAML documents and names that become paths.

`read_yaml` is the one YAML reader of the package (study specs, and the report command's
spec and references). It refuses what a plain `yaml.safe_load` accepts or chokes on: bytes
that are not UTF-8, a duplicate key (YAML lets the last one silently win), alias
expansion past `MAX_YAML_NODES` (a few hundred bytes of nested aliases expand to billions
of nodes), files over `MAX_YAML_BYTES` and anything but a regular file (`/dev/zero` never
ends, a FIFO blocks the reader). Plain scalars resolve by YAML 1.2's core schema, not
PyYAML's YAML 1.1: `epochs: 1:30` is text, not the sexagesimal 90; `010` is ten, not
eight; `yes` / `off` are text; `1e-4` is a number. Every mapping it returns is a
`LineDict` that knows its own line and the line of each key, so a later check can cite
`file:line`.

`is_safe_name` / `slug` keep names that become file or folder names (a study's Parquet file,
its report folder) inside the folder they are meant for.

Imports nothing heavy (PyYAML only): a spec is validated before TensorFlow or Ray start.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from rmaunet.errors import SpecError

__all__ = [
    "read_yaml",
    "parse_yaml",
    "read_regular_file",
    "LineDict",
    "is_safe_name",
    "slug",
    "MAX_YAML_NODES",
    "MAX_YAML_BYTES",
    "SAFE_NAME",
]

# The largest shipped spec has a few hundred nodes; these bounds leave room for real specs
# and refuse a file or an alias expansion built to exhaust memory.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_NODES = 20_000
# Letters, digits, `_`, `.` and `-`, not starting with a dot: never `..`, a hidden file or a path.
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")


class LineDict(dict):
    """A YAML mapping that remembers its line and each (scalar) key's line, 1-based."""

    line: int = 0
    key_lines: dict[Any, int] = {}

    def line_of(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)


class _NodeBudgetExceeded(yaml.YAMLError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and oversized alias expansion, and records lines."""

    def construct_document(self, node: yaml.Node) -> Any:
        _count_expanded_nodes(node)
        return super().construct_document(node)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:  # a 5000-digit integer, a timestamp 2020-13-45: cite the line
            raise yaml.constructor.ConstructorError(None, None, f"bad value ({exc})", node.start_mark) from None


def _count_expanded_nodes(root: yaml.Node) -> None:
    """Refuse a document whose aliases, expanded, make more than MAX_YAML_NODES nodes (or loop).

    Aliases share one node object, so sizes are memoised per node: the walk is linear in
    the file while the total it computes is the expanded size.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise yaml.constructor.ConstructorError(None, None, "an alias refers to itself", node.start_mark)
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        if total > MAX_YAML_NODES:
            raise yaml.constructor.ConstructorError(
                None, None, f"more than {MAX_YAML_NODES} values once aliases are expanded", node.start_mark
            )
        open_nodes.discard(key)
        sizes[key] = total
        return total

    size(root)


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> LineDict:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *defaults` then explicit keys: overriding is what a merge is for
        key = loader.construct_object(key_node, deep=True)
        try:
            seen = first_line.get(key)
        except TypeError:
            continue  # unhashable: SafeConstructor refuses it with its own message
        if seen is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen})", key_node.start_mark
            )
        first_line[key] = key_node.start_mark.line + 1
    mapping = LineDict(loader.construct_mapping(node, deep=True))
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = first_line
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

# YAML 1.2 core schema for plain scalars (https://yaml.org/spec/1.2.2/#1032-tag-resolution):
# PyYAML resolves by YAML 1.1, where `1:30` is 90, `010` is 8, `1_000` is 1000 and `on` is true.
_BOOL, _INT, _FLOAT = ("tag:yaml.org,2002:" + t for t in ("bool", "int", "float"))
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL, _INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_CORE_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_CORE_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_StrictLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_StrictLoader.add_implicit_resolver(_INT, _CORE_INT, list("-+0123456789"))
_StrictLoader.add_implicit_resolver(_FLOAT, _CORE_FLOAT, list("-+0123456789."))


def _construct_core_int(loader: _StrictLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)  # "010" is ten: YAML 1.2 has no implicit octal


def _construct_core_bool(loader: _StrictLoader, node: yaml.ScalarNode) -> bool:
    return loader.construct_scalar(node).lower() == "true"


_StrictLoader.add_constructor(_INT, _construct_core_int)
_StrictLoader.add_constructor(_BOOL, _construct_core_bool)


def read_yaml(path: Path | str, what: str = "spec") -> Any:
    """Parse a YAML file; SpecError `path[:line]: reason` for anything unreadable or refused."""
    path = Path(path)
    raw = read_regular_file(path, what, MAX_YAML_BYTES, SpecError)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError(f"{path}:{line}: {what} is not UTF-8 text (byte 0x{raw[exc.start]:02x})") from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, where: str, *, lines: bool = True) -> Any:
    """YAML text parsed by read_yaml's rules (YAML 1.2 scalars, no duplicate keys, bounded
    aliases); SpecError `where[:line]: reason`, without the line for `lines=False` (a
    command-line value such as --set's)."""

    def at(line: int) -> str:
        return f"{where}:{line}" if lines else where

    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.reader.ReaderError as exc:  # a control character: no mark, a position
        line = text[: exc.position].count("\n") + 1
        raise SpecError(f"{at(line)}: invalid YAML (control character #x{exc.character:02x})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        place = at(mark.line + 1) if mark else where
        raise SpecError(f"{place}: invalid YAML ({getattr(exc, 'problem', None) or exc})") from None
    except RecursionError:
        raise SpecError(f"{where}: invalid YAML (nested too deeply)") from None


def read_regular_file(path: Path, what: str, limit: int, error: type[Exception] = SpecError) -> bytes:
    """The bytes of `path` if it is a regular file (a link to one is fine) of at most `limit`
    bytes; else `error("path: reason")`. Never opens a FIFO, a device or a folder, and never
    reads past `limit`: a size from stat can lie (/proc files say 0)."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{path}: {what} must be a regular file, not {_file_kind(mode)}")
        # O_NONBLOCK: if the file was swapped for a FIFO since the stat, open does not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise error(f"{path}: {what} must be a regular file")
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    if len(raw) > limit:
        raise error(f"{path}: {what} file is larger than {limit // 1024} KiB")
    return raw


def _file_kind(mode: int) -> str:
    kinds = {stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a FIFO", stat.S_ISCHR: "a character device"}
    kinds |= {stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}
    return next((name for test, name in kinds.items() if test(mode)), "a special file")


def is_safe_name(value: Any) -> bool:
    """True for a string (or integer) that is safe as a file or folder name: see SAFE_NAME."""
    return not isinstance(value, bool) and isinstance(value, (str, int)) and SAFE_NAME.fullmatch(str(value)) is not None


def slug(value: Any) -> str:
    """A name that is safe as a folder name, made from any value (unsafe characters become `_`)."""
    text = re.sub(r"[^A-Za-z0-9_.-]", "_", str(value))[:128].lstrip(".")
    return text or "_"
