"""Exceptions that the command line turns into one clear sentence instead of a stack trace."""
from __future__ import annotations


class AttnkitError(Exception):
    """Base class: an error whose message is meant for the user as it is."""


class ConfigError(AttnkitError, ValueError):
    """A config names something that does not exist or passes a wrong argument."""


class DataError(AttnkitError, ValueError):
    """A data file is missing, unreadable or malformed. The message names the file and the record."""


class CheckpointError(AttnkitError, ValueError):
    """A checkpoint is missing, malformed, or was written for another model."""
