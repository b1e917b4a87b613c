"""Time-budget plans of the embedded SAM's pretraining (fuzzylogic_seg/sam/budget.py):
pure functions of the recipe and the step times. The runs that follow them are in
test_sam_pretrain.py."""
import dataclasses

import pytest

from fuzzylogic_seg.errors import ConfigError
from fuzzylogic_seg.sam.build import TINY_CONFIG
from fuzzylogic_seg.sam.budget import budget_plan, describe, replan
from fuzzylogic_seg.sam.pretrain import PretrainConfig


def _tiny(**kw):
    return PretrainConfig(**{**dict(steps=8, warmup=2, model=TINY_CONFIG), **kw})


def test_budget_plan_shortens_every_stage_by_one_factor():
    cfg = _tiny(steps=12, low_res_steps=8)
    planned, plan = budget_plan(cfg, 10.5, (1.0, 3.0))  # the whole recipe: 8 + 12 = 20 s
    assert (planned.low_res_steps, planned.steps) == (4, 6) == (plan["low_res_steps"], plan["steps"])
    assert plan["step_seconds"] == [1.0, 3.0]
    assert budget_plan(cfg, 100.0, (1.0, 3.0))[0] == cfg  # it fits: kept whole
    assert budget_plan(cfg, 0.0, (1.0, 3.0))[0].steps == 2  # one step a stage at least
    assert budget_plan(_tiny(steps=12), 6.0, (1.0,))[0].steps == 6  # one stage
    with pytest.raises(ConfigError, match="2 stage"):
        budget_plan(cfg, 10.0, (1.0,))
    assert describe(planned) == "4 steps at 32 px, then 2 at 64 px"


def test_replan_follows_the_measured_speed():
    recipe = _tiny(steps=100, low_res_steps=60)
    planned = dataclasses.replace(recipe, steps=50, low_res_steps=30)
    timed = (2.0, 4.0)  # s/step timed before training: the second stage 2x the first
    # first stage, 13 steps in at 1 s a step, 87 s left: (87 + 13) / (60 * 1 + 40 * 2)
    out = replan(recipe, planned, 0, 13, 1.0, 87.0, timed)
    assert (out.low_res_steps, out.steps) == (42, 42 + 28)
    # nearly over budget: no fewer steps than are done (scale 8 / 140 leaves 3 of 60)
    late = replan(recipe, planned, 0, 13, 1.0, -5.0, timed)
    assert (late.low_res_steps, late.steps) == (13, 13 + 2)
    # the last stage takes what fits, 5 steps in: 5 + 20 / 2; never more than the recipe's
    assert replan(recipe, planned, 1, 35, 2.0, 20.0, timed).steps == 30 + 15
    assert replan(recipe, planned, 1, 35, 2.0, 1e4, timed).steps == 30 + 40
    assert replan(recipe, planned, 1, 35, 2.0, -1.0, timed).steps == 35
    one = _tiny(steps=40)
    assert replan(one, dataclasses.replace(one, steps=20), 0, 13, 0.5, 5.0, (1.0,)).steps == 23
