"""``LogicLoss``: a compiled theory as a ``torch.nn.Module`` loss.

    criterion = LogicLoss(rules_text, mode="log")
    loss = criterion(cup=cup_logits, disc=disc_logits, domains={"box": valid})
    loss.backward()
    criterion.last_truth  # {rule: Tensor[B]}, detached, from the last call

The module holds no parameters and no device: it follows its inputs (CPU,
CUDA, any dtype; half precision inputs are computed in float32). It works
under ``torch.compile`` (value validation is skipped while compiling).
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Union

import torch

from .errors import FuzzyLogicError
from .theory import Theory

__all__ = ["LogicLoss"]


class LogicLoss(torch.nn.Module):
    """``forward(domains=None, **facts) -> scalar`` (or ``Tensor[B]`` with reduction="none").

    ``theory_or_text``: a :class:`Theory` or rule text (compiled with
    ``semantics``). ``mode``: None (each rule's semantics), "linear" or "log".
    ``validate``: check facts on every call (one host sync); turn it off in a
    tuned training loop once the shapes are known to be right.
    """

    def __init__(self, theory_or_text: Union[Theory, str], mode: Optional[str] = None,
                 validate: bool = True, semantics=None, reduction: str = "mean"):
        super().__init__()
        if isinstance(theory_or_text, Theory):
            if semantics is not None:
                raise FuzzyLogicError("semantics= applies to rule text; this theory is already compiled")
            theory = theory_or_text
        elif isinstance(theory_or_text, str):
            from .compiler import compile
            theory = compile(theory_or_text, semantics)
        else:
            raise FuzzyLogicError(f"LogicLoss needs a Theory or rule text, got {type(theory_or_text).__name__}")
        if mode not in (None, "linear", "log"):
            raise FuzzyLogicError(f"mode must be None, 'linear' or 'log', got {mode!r}")
        self.theory = theory
        self.mode = mode
        self.validate = validate
        self.reduction = reduction
        self.last_truth: Dict[str, torch.Tensor] = {}
        self.last_rule_loss: Dict[str, torch.Tensor] = {}

    def forward(self, domains: Optional[Mapping[str, torch.Tensor]] = None, **facts) -> torch.Tensor:
        ev = self.theory.evaluate(domains=domains, validate=self.validate, mode=self.mode,
                                  reduction=self.reduction, **facts)
        # detached copies for logging: no host sync here (read them when you log)
        self.last_truth = {k: v.detach() for k, v in ev.truth.items()}
        self.last_rule_loss = {k: v.detach() for k, v in ev.per_rule_loss.items()}
        return ev.loss

    def extra_repr(self) -> str:
        return f"rules={list(self.theory.rules)}, mode={self.mode}, validate={self.validate}"
