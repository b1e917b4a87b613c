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


class ConfigError(FuzzySegError):
    """A bad command-line flag, config file entry or argument."""


class CheckpointError(FuzzySegError):
    """A model checkpoint is missing, unreadable or does not fit the model."""


class PredictionError(FuzzySegError):
    """A prediction to evaluate is missing or has the wrong size."""
