"""Time budgets of the embedded SAM's pretraining (``fuzzyseg sam pretrain --minutes``).

A budget run is planned before it starts, from a few timed steps of each
stage (``pretrain.step_seconds``): every stage is shortened by one factor
(:func:`budget_plan`). The run then measures its own speed and corrects the
plan (:func:`keep_budget`, :func:`replan`): once per stage over its steps 3
to 13, and in the last stage every 50 steps. Pure functions of the recipe,
the plan and the measured times: the timing itself lives in ``pretrain``.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Tuple

from ..errors import ConfigError

if TYPE_CHECKING:  # (pretrain imports this module)
    from .pretrain import PretrainConfig


def budget_plan(cfg: PretrainConfig, seconds: float, per_step: Sequence[float]
                ) -> Tuple[PretrainConfig, Dict[str, Any]]:
    """The recipe shortened to fit ``seconds`` of training, given the seconds a step
    of each stage takes: every stage keeps its share of the steps (at least one
    each), all scaled by one factor; a recipe that fits is kept whole. Returns the
    planned recipe and the plan (its step counts and the timings it rests on)."""
    n = (cfg.low_res_steps, cfg.steps - cfg.low_res_steps) if cfg.low_res_steps else (cfg.steps,)
    if len(per_step) != len(n):
        raise ConfigError(f"budget_plan: {len(n)} stage(s), {len(per_step)} step time(s)")
    full = sum(k * t for k, t in zip(n, per_step))
    scale = min(1.0, max(0.0, seconds) / full) if full > 0 else 1.0
    m = [max(1, int(scale * k)) for k in n]
    plan = {"steps": sum(m), "low_res_steps": m[0] if len(m) == 2 else 0,
            "step_seconds": [round(float(t), 4) for t in per_step]}
    return dataclasses.replace(cfg, steps=plan["steps"], low_res_steps=plan["low_res_steps"]), plan


def replan(recipe: PretrainConfig, planned: PretrainConfig, stage: int, step: int,
           seconds_per_step: float, seconds_left: float, per_step: Sequence[float]
           ) -> PretrainConfig:
    """The plan corrected by the measured speed of its ``stage`` (0 or 1), ``step``
    steps into the run (``seconds_per_step``: timed steps before training can be
    off by tens of per cent on a busy machine), for ``seconds_left`` of the budget.

    In the first of two stages, both are rescaled by one factor from the measured
    speed (the second's step time by the timed ratio of the two); in the last
    stage, it takes the steps that fit. Never fewer steps than are done, nor more
    than the recipe's."""
    if planned.low_res_steps and stage == 0:
        n1, n2 = recipe.low_res_steps, recipe.steps - recipe.low_res_steps
        t1, t2 = seconds_per_step, seconds_per_step * per_step[1] / per_step[0]
        scale = min(1.0, max(0.0, seconds_left + step * t1) / (n1 * t1 + n2 * t2))
        m1 = min(n1, max(1, step, int(scale * n1)))
        m2 = min(n2, max(1, int(scale * n2)))
        return dataclasses.replace(planned, steps=m1 + m2, low_res_steps=m1)
    start = planned.low_res_steps
    most = recipe.steps - recipe.low_res_steps  # the last stage's length in the recipe
    n = int((step - start) + max(0.0, seconds_left) / seconds_per_step)
    return dataclasses.replace(planned, steps=start + min(most, max(1, step - start, n)))


def keep_budget(plan: Dict[str, Any], asked: PretrainConfig, cfg: PretrainConfig, step: int,
                 stage_start: int, elapsed: float, minutes: float
                 ) -> Tuple[PretrainConfig, Optional[str]]:
    """A budget run's check after ``step`` steps: the plan corrected by the run's
    own speed over each stage's steps 3 to 13, and in the last stage again every
    50 steps from the speed of the last 50 (the load of a shared machine drifts).
    The timing window lives in ``plan``, which the state file keeps: a resumed run
    corrects at the same steps. Returns the plan's recipe and, where it changed, a
    line for the log."""
    k = 1 if stage_start else 0
    last = k == len(plan["measured"]) - 1
    into = step - stage_start
    if into == 3 and plan["measured"][k] is None:
        plan["window"] = [step, elapsed]
        return cfg, None
    first = into == 13 and plan["measured"][k] is None
    again = last and into > 13 and (into - 13) % 50 == 0
    if not (first or again) or plan.get("window") is None:
        return cfg, None
    w0, e0 = plan.pop("window")
    per = (elapsed - e0) / (step - w0)
    new = replan(asked, cfg, k, step, per, minutes * 60 - plan["timing_seconds"] - elapsed,
                 plan["step_seconds"])
    plan.update(steps=new.steps, low_res_steps=new.low_res_steps)
    if first:
        plan["measured"][k] = round(per, 4)
    if last:
        plan["window"] = [step, elapsed]
    if not first and new.steps == cfg.steps:
        return cfg, None
    return new, f"time budget {minutes} min at {per:.3f} s/step: {describe(new)}"


def describe(cfg: PretrainConfig) -> str:
    size = cfg.model.img_size
    if not cfg.low_res_steps:
        return f"{cfg.steps} steps at {size} px"
    return (f"{cfg.low_res_steps} steps at {size // cfg.low_res_div} px, then "
            f"{cfg.steps - cfg.low_res_steps} at {size} px")
