"""Exceptions for user-facing errors.

Every error a user can cause (a bad path, a broken file, an unknown name) is raised as a
:class:`MlebenchError` subclass with a message that names the file, value or option. The CLI
turns them into one line on stderr and a non-zero exit instead of a traceback.
"""

from __future__ import annotations


class MlebenchError(Exception):
    """Base class of the errors a user can cause and fix."""

    exit_code: int = 1


class DataError(MlebenchError):
    """A data set on disk is missing, incomplete or malformed."""


class ConfigError(MlebenchError):
    """A name, option or configuration value is not valid."""


class OutputError(MlebenchError):
    """An output cannot be written where it was asked for (it would destroy something, or the
    file system refuses it); the message names the option, the path and the cause."""
