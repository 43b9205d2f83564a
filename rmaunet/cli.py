"""The `rmaunet` command (also `python -m rmaunet`).

Each area registers its own subcommands (`rmaunet.data.cli`, `rmaunet.study_cli`,
`rmaunet.reporting.cli`); this module only assembles them and turns a user error
(`RmaunetError`) into one line on stderr and its exit status: 2, or 3 for a study another
driver is running.
"""

from __future__ import annotations

import os

# Before anything can import TensorFlow: its C++ INFO / WARNING lines would otherwise come
# ahead of the one line a refused input gets (a user's own setting wins). The lines it
# writes before its logging starts cannot be turned off; spec loading holds those back.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import argparse
import sys
from collections.abc import Sequence

from rmaunet.errors import RmaunetError

__all__ = ["main", "build_parser", "Parser"]


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default in its help, unless the help already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or "%(default)" in text
            or default is None
            or default is argparse.SUPPRESS
            or default is False
            or default == []
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """Every rmaunet parser: no abbreviated options (`--smok` is an error, not `--smoke`:
    an abbreviation that a new option later makes ambiguous would break a user's script),
    and defaults shown in `--help`. Subcommand parsers inherit this class."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    import rmaunet
    from rmaunet import maintenance_cli, study_cli
    from rmaunet.data import cli as data_cli
    from rmaunet.mapping import cli as mapping_cli
    from rmaunet.reporting import cli as report_cli

    parser = Parser(
        prog="rmaunet",
        description=(
            "Ablation studies and hyperparameter searches of RMAU-NET (landslide segmentation "
            "and detection) on Ray: make or check data, run a study from a YAML spec, and turn "
            "its results into the paper's tables."
        ),
        epilog="Run `rmaunet COMMAND --help` for each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"rmaunet {rmaunet.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data_cli.register(sub)
    study_cli.register(sub)
    report_cli.register(sub)
    study_cli.register_demo(sub)
    maintenance_cli.register(sub)
    mapping_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_libraries()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # a spec named on the command line is resolved here (rmaunet.specs)
        return int(args.func(args) or 0)
    except RmaunetError as exc:
        print(f"rmaunet: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("rmaunet: interrupted", file=sys.stderr)
        return 130


def _quiet_libraries() -> None:
    """Keep library chatter from landing ahead of the one line a refused input gets.

    absl's Python logger (TensorFlow and Keras log through it) goes to ERROR. PIL's
    decompression-bomb warning (an image past 89 M pixels, read anyway) becomes the error
    it is at twice that size: the readers refuse such a file in one line.
    """
    import logging
    import warnings

    logging.getLogger("absl").setLevel(logging.ERROR)
    # tifffile logs what it finds wrong in a file before raising; the reader's one line says it.
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    warnings.filterwarnings("error", message=r"Image size \(\d+ pixels\) exceeds limit")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
