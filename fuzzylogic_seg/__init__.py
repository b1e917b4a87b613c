"""fuzzylogic_seg: weakly supervised segmentation with fuzzy-logic rules.

Weak labels (boxes, scribbles, points, tags) and domain priors are written as
rules, compiled by :mod:`fuzzylogic` into a loss that fine-tunes SAM; the
fine-tuned SAM writes pseudo-labels that train a prompt-free student.
"""
from .errors import (CheckpointError, ConfigError, DatasetError, DivergenceError, FuzzySegError,
                     PredictionError)

__all__ = ["FuzzySegError", "DatasetError", "ConfigError", "CheckpointError", "PredictionError",
           "DivergenceError"]
__version__ = "0.1.0"
