"""Errors raised on bad input: each names the file and the problem.

    EquiglassError     any bad input; the command line prints ``error: FILE: problem`` and exits 2
      DataError        a dataset, manifest or data file is missing, corrupt or inconsistent
      ConfigError      a run config or experiment spec is invalid
      CheckpointError  a checkpoint is missing, corrupt or does not fit
      TrainingError    a run diverged, or its validation never gave a finite score
"""

from __future__ import annotations

from pathlib import Path


class EquiglassError(ValueError):
    """Bad input, naming the file it came from.

    The message always starts with the offending path, so that a user with a directory of
    hundreds of files knows which one to look at.
    """

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)

    def __reduce__(self) -> tuple[type, tuple[Path | None, str]]:
        # Rebuild from (path, problem) so the error survives a process pool.
        return type(self), (self.path, self.problem)


class DataError(EquiglassError):
    """A data file (or manifest) is missing, corrupt or inconsistent."""


class ConfigError(EquiglassError):
    """A run config or an experiment spec is invalid (unknown key, wrong type, contradiction)."""


class CheckpointError(EquiglassError):
    """A checkpoint is missing, unreadable, of another format, or does not fit its model."""


class TrainingError(EquiglassError):
    """A training run failed on its own: it diverged, or validation never gave a finite score."""
