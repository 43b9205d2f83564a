"""Errors a user can fix; the CLI turns each into one line and exit status 2."""

from __future__ import annotations

__all__ = ["RmaunetError", "DataError", "SpecError", "ConfigError", "StoreError"]


class RmaunetError(Exception):
    """Base class: a problem with the user's input, not a bug."""


class DataError(RmaunetError):
    """A dataset file or folder is missing, corrupt or has the wrong shape."""


class SpecError(RmaunetError):
    """A study spec (YAML) names something unknown or out of range."""


class ConfigError(RmaunetError):
    """A TrialConfig field has an invalid value."""


class StoreError(RmaunetError):
    """The results store cannot be read or written."""
