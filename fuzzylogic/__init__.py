"""fuzzylogic: a differentiable first-order fuzzy-logic rule language for PyTorch.

    import fuzzylogic as fl
    theory = fl.compile(text, semantics="log_product")
    loss = theory.loss(cup=cup_logits, disc=disc_logits)

See README.md ("The Python API") and docs/SEMANTICS.md for the operators.
"""
from .errors import (CheckError, FactError, FuzzyLogicError, IncludeError, ParseError,
                     RuleSemanticsError, SemanticsError, SourceError)
from .operators import TruthValue, available_operators, register_operator
from .semantics import Semantics, available_presets, register_preset
from .theory import Evaluation, Report, Theory
from .compiler import compile, load
from .parser import add_include_dir, parse
from .printer import format_formula, format_program
from .checker import check
from .nn import LogicLoss

__version__ = "0.1.0"


__all__ = [
    "compile", "load", "parse", "check", "add_include_dir", "format_program", "format_formula", "Semantics",
    "register_operator", "register_preset",
    "available_operators", "available_presets", "Theory", "Evaluation", "Report", "TruthValue",
    "LogicLoss", "FuzzyLogicError", "SourceError", "ParseError", "CheckError", "IncludeError",
    "SemanticsError", "RuleSemanticsError", "FactError",
]
