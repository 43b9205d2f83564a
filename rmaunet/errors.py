"""Errors a user can fix; the CLI turns each into one line and exit status 2."""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "RmaunetError",
    "DataError",
    "SpecError",
    "ConfigError",
    "StoreError",
    "one_line",
    "plural",
    "aligned_columns",
    "without_password",
    "TransientStoreError",
    "RayStartError",
    "StudyBusyError",
    "MAX_MESSAGE_CHARS",
]

# A message names a file and a problem; anything longer is a value echoed back at length
# (a huge list, a file's contents) that would bury the line the user needs.
MAX_MESSAGE_CHARS = 600


def one_line(text: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` with its whitespace runs (newlines included) collapsed, cut to `limit` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """ "1 row", "3 rows": a count with its noun in agreement."""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


def aligned_columns(rows: Sequence[Sequence[str]]) -> list[str]:
    """A table's rows as lines padded for a terminal: the first column left-aligned (labels),
    the others right-aligned (figures), two spaces between."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    ]


def without_password(text: str) -> str:
    """`text` with the password of every URL's `user:password@` part masked (an Optuna storage's
    postgresql://…): fit for logs and error lines, which `ps`, job logs and dashboards show."""
    return re.sub(r"(://[^/@:\s]*:)[^/@\s]*@", r"\1***@", text)


class RmaunetError(Exception):
    """Base class: a problem with the user's input, not a bug. Its text is always one short line,
    with any URL's password masked."""

    exit_status = 2  # what the CLI exits with (README, "Exit statuses")

    def __str__(self) -> str:
        return one_line(without_password(super().__str__()))


class DataError(RmaunetError):
    """A dataset file or folder is missing, corrupt or has the wrong shape."""


class SpecError(RmaunetError):
    """A study spec (YAML) names something unknown or out of range."""


class ConfigError(RmaunetError):
    """A TrialConfig field has an invalid value."""


class StoreError(RmaunetError):
    """The results store cannot be read or written."""


class TransientStoreError(StoreError):
    """The store failed the way a cloud store does now and then (a 5xx answer such as S3's
    503 SlowDown, a timeout, a dropped connection) and kept failing through every retry.
    Not a property of the trial: a trial that meets it errors and Ray Tune retries it; it is
    never recorded as the trial's failure."""


class RayStartError(RmaunetError):
    """A local Ray runtime did not come up (Ray gives its node 30 s, which a busy machine can
    exceed); nothing was trained, so the study did not finish: exit status 1."""

    exit_status = 1


class StudyBusyError(StoreError):
    """Another driver holds the study's lease (rmaunet.store.StudyLease): it is running it now."""

    exit_status = 3


def duration(seconds: float) -> str:
    """ "4.2 s", "45 s", "12 min", "3.5 h": as precise as a person needs."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
