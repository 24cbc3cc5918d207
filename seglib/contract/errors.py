"""Errors that seglib raises for problems a user can fix, and the exit statuses they map to."""

from enum import IntEnum


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


class ExitStatus(IntEnum):
    """The `seg` command's exit statuses, so that a scheduler (a Databricks job, Airflow, cron) can
    branch on what happened without reading the log."""

    OK = 0
    USAGE = 2  # the command line or config is invalid, or a write was refused: fix the config
    INPUT_DATA = 3  # an input table is missing, empty or malformed: fix the data or its mapping
    FAILURE = 4  # a stage failed at run time (training, the platform, a bug): see the traceback
    RETRAIN = 10  # seg score finished and its drift checks recommend retraining


def exit_status(error: BaseException) -> ExitStatus:
    if isinstance(error, InputDataError):
        return ExitStatus.INPUT_DATA
    if isinstance(error, TrainingError) or not isinstance(error, SeglibError):
        return ExitStatus.FAILURE
    return ExitStatus.USAGE
