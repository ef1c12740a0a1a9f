"""Errors raised on bad input: each names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A data file (or manifest) is missing, corrupt or inconsistent.

    The message always starts with the offending path, so that a user with a
    directory of hundreds of files knows which one to look at.
    """

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)

    def __reduce__(self) -> tuple[type, tuple[Path | None, str]]:
        # Rebuild from (path, problem) so the error survives a process pool.
        return DataError, (self.path, self.problem)
