"""Errors that seglib raises for problems a user can fix."""


class SeglibError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class ConfigError(SeglibError):
    """The configuration file or an override is invalid."""


class InputDataError(SeglibError):
    """An input table is missing, malformed or lacks a required column."""


class TrainingError(SeglibError):
    """Distributed training failed; the message carries the failing rank's traceback."""


class UnsafeWriteError(SeglibError):
    """A write would touch a table, folder or catalog entry that seglib did not create itself."""
