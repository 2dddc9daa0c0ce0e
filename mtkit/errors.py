"""Exceptions for failures a user can fix; the CLI prints them as one line, without a traceback."""

from __future__ import annotations


class MtkitError(Exception):
    """An expected failure (bad input, missing file, refused operation). Exit status 1."""

    exit_code = 1


class UsageError(MtkitError):
    """The command line or a recipe asks for something invalid. Exit status 2."""

    exit_code = 2


class DataError(MtkitError):
    """A data file cannot be used; the message names the file (and line where there is one)."""

    def __init__(self, message: str, path: object = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)


class CheckpointError(MtkitError):
    """A checkpoint or run directory is unreadable, corrupted or inconsistent."""


class Interrupted(MtkitError):
    """Training stopped by a signal after saving its state; the message says how to resume."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
