"""One exception hierarchy for :mod:`fuzzylogic_seg`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union


class FuzzySegError(Exception):
    """Base class of every error raised by :mod:`fuzzylogic_seg`."""


class DatasetError(FuzzySegError):
    """A data set on disk is broken; names the offending file."""

    def __init__(self, message: str, path: Optional[Union[str, Path]] = None):
        self.path = None if path is None else Path(path)
        super().__init__(f"{path}: {message}" if path is not None else message)


class ConfigError(FuzzySegError, ValueError):
    """A bad command-line flag, config file entry or argument (also a ValueError:
    code that catches bad arguments as such keeps working)."""


class CheckpointError(FuzzySegError):
    """A model checkpoint is missing, unreadable or does not fit the model."""


class PredictionError(FuzzySegError, ValueError):
    """A prediction to evaluate is missing, has the wrong size or holds labels
    outside the classes (also a ValueError, as ConfigError)."""


class DivergenceError(FuzzySegError, FloatingPointError):
    """Training diverged: its loss became NaN or infinite."""
