"""One exception family for everything datadistill reports to a user."""

from __future__ import annotations


class DatadistillError(Exception):
    """Base class: a problem the user can fix; the CLI prints it without a traceback (exit 2)."""


class DataError(DatadistillError):
    """The input data is missing, malformed or unusable (names the file, column or row)."""


class ConfigError(DatadistillError):
    """An option or parameter is out of range, unknown or inconsistent."""


class ArtifactError(DatadistillError):
    """A saved DistilledSet or run directory cannot be written, read or trusted."""


class DatadistillWarning(UserWarning):
    """Something the user should know that does not stop the work (the CLI prints it as one line)."""
