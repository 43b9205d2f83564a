"""The study specs shipped inside the package (`rmaunet/search_spaces/`).

The YAML specs and the files they name (such as `table11_references.csv`) live in the
package, so a wheel install finds them as well as a source checkout; the top-level
`search_spaces` folder of the repository is a symbolic link to the same files. Specs are
located through `importlib.resources`, never through a path relative to the source tree.

    from rmaunet.specs import bundled_spec, bundled_spec_names
    bundled_spec("demo")                  # Path to .../rmaunet/search_spaces/demo.yaml
    bundled_spec("paper_table4_losses.yaml")
"""

from __future__ import annotations

import atexit
from contextlib import ExitStack
from functools import cache
from importlib.resources import as_file, files
from pathlib import Path

from rmaunet.errors import SpecError

__all__ = ["SPEC_FOLDER", "bundled_spec", "bundled_spec_folder", "bundled_spec_names", "resolve_spec"]

SPEC_FOLDER = "search_spaces"

_extracted = ExitStack()
atexit.register(_extracted.close)


@cache
def bundled_spec_folder() -> Path:
    """The folder of bundled specs as a real directory (a plain or editable install
    returns it in place; a zipped install is extracted once, for the process's life)."""
    return _extracted.enter_context(as_file(files("rmaunet") / SPEC_FOLDER))


def bundled_spec_names() -> list[str]:
    """The names of the bundled specs, without `.yaml`, sorted."""
    return sorted(p.stem for p in bundled_spec_folder().glob("*.yaml"))


def bundled_spec(name: str) -> Path:
    """The bundled spec called `name` (`demo`, `demo.yaml` or `search_spaces/demo.yaml`)."""
    stem = Path(name).name.removesuffix(".yaml")
    path = bundled_spec_folder() / f"{stem}.yaml"
    if not path.is_file():
        raise SpecError(f"{name}: no bundled spec of that name (bundled: {', '.join(bundled_spec_names())})")
    return path


def resolve_spec(text: str) -> Path:
    """A spec named on the command line: a file when one is there, else the bundled spec of
    that name (`paper_table4_losses`, or `search_spaces/paper_table4_losses.yaml` run from
    outside the repository), so the README's commands work from an installed wheel too."""
    path = Path(text)
    if path.exists() or text.strip() == "":
        return path  # a file (or something that is not one): the spec reader says what is wrong with it
    stem = path.name.removesuffix(".yaml")
    if stem in bundled_spec_names():
        return bundled_spec(stem)
    raise SpecError(
        f"{text}: no such spec file, and no bundled spec of that name (`rmaunet study list` lists them: "
        f"{', '.join(bundled_spec_names())})"
    )
