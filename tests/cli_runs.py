"""Running `rmaunet` in-process as a user would see it, and the rule every refused input must meet."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings

from rmaunet.cli import main

__all__ = ["run_cli", "assert_clean_exit"]


def run_cli(argv: list[str]) -> tuple[int, str]:
    """Exit status and stderr of one command, with warnings and log records printed as outside pytest."""
    err = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    # Outside pytest, a record from a library without handlers reaches logging.lastResort: stderr, WARNING up.
    root.handlers, root.level = [logging.StreamHandler(err)], logging.WARNING
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _print_warning
            code = main(argv)
    finally:
        root.handlers, root.level = handlers, level
    return code, err.getvalue()


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def assert_clean_exit(code: int, stderr: str, what: str, expected_in_error: str | tuple[str, ...]) -> None:
    """Exit 0 with nothing on stderr, or exit 2 with one `rmaunet: error:` line naming (one of) `expected_in_error`."""
    lines = stderr.splitlines()
    assert "Traceback" not in stderr, f"{what}: traceback\n{stderr[-2000:]}"
    if code == 0:
        assert not lines, f"{what}: exit 0 with stderr {stderr[:500]!r}"
        return
    assert code == 2, f"{what}: exit {code}, stderr {stderr[:500]!r}"
    assert len(lines) == 1 and lines[0].startswith("rmaunet: error: "), f"{what}: stderr {stderr[:1000]!r}"
    assert len(lines[0]) <= 700, f"{what}: a {len(lines[0])}-character error line"
    names = (expected_in_error,) if isinstance(expected_in_error, str) else expected_in_error
    assert any(name in lines[0] for name in names), f"{what}: error does not name {' or '.join(names)}: {lines[0]}"
