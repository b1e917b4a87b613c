"""Pretraining recipe of the embedded SAM on generic synthetic shapes.

The recipe follows SAM's (Kirillov et al. 2023, sec. 3 and appendix A) at a
small scale: AdamW with linear warm-up and cosine decay; prompts are jittered
or tight boxes, one positive point (ambiguous: three outputs, the loss of the
best one is back-propagated), box + point, or several positive/negative
points; loss = 20 * focal + dice on the mask logits at input resolution,
plus the MSE between the IoU head and the actual IoU of each output mask;
optional iterative rounds add a corrective point sampled from the error
region and feed the previous low-res logits back as a mask prompt.

Deterministic: the model is initialised from ``seed`` and the batch of step
``t`` is drawn from ``numpy.random.default_rng([seed, 0, t])``, so a run
resumed from its state file ends with the same weights as an uninterrupted
one. Held-out scenes come from ``default_rng([seed, 1, i])`` (never trained on).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..devices import native_bf16, to_device
from ..errors import CheckpointError, ConfigError, DivergenceError
from ..io import load_optimizer_state, load_torch, save_json, save_torch
from .budget import budget_plan, describe, keep_budget
from .build import (EmbeddedConfig, build_embedded, embedded_checkpoint, load_state_strict,
                    model_fingerprint, resize_positional_state)
from .forward import PromptableSAM
from .shapes import generate_scene, jitter_box, mask_box, sample_points

# Prompt kinds of one training step and their probabilities.
PROMPT_KINDS = ("box", "box_point", "point", "points")
PROMPT_P = (0.45, 0.15, 0.25, 0.15)


@dataclass
class PretrainConfig:
    # Defaults = the recipe of the shipped weights (fuzzylogic_seg/weights/sam_embedded.json).
    steps: int = 1800
    seed: int = 0
    images_per_step: int = 4
    prompts_per_image: int = 8      # prompts are cheap next to the encoder: many per image
    lr: float = 8e-4
    weight_decay: float = 0.05
    warmup: int = 30
    grad_clip: float = 1.0
    focal_weight: float = 20.0      # SAM's 20:1 focal:dice
    dice_weight: float = 1.0
    bce_weight: float = 0.0
    iou_weight: float = 1.0
    box_jitter_p: float = 0.5       # share of boxes with SAM's noise (10% of the side)
    iterative_rounds: int = 0       # corrective-point rounds per step (decoder only)
    low_res_loss: bool = True       # loss on the decoder's 4h x 4w logits vs area-pooled
                                    # targets (16x cheaper than at input resolution)
    min_aspect: float = 0.6         # short side / long side of training scenes
    tied_qk_init: bool = False      # decoder attention starts local to the prompt (tie_decoder_qk)
    beta2: float = 0.999            # AdamW's second-moment decay
    low_res_steps: int = 0          # the first steps at img_size / low_res_div px (coarse to
    low_res_div: int = 2            # fine: ~2.4x cheaper steps; positional tables resized)
    one_decoder_pass: bool = False  # the step's prompt kinds in one decoder pass, padded
                                    # (sam/padded.py): the same loss to float rounding, faster
    eval_images: int = 96
    model: EmbeddedConfig = field(default_factory=EmbeddedConfig)

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        # Options added after the shipped weights are left out at their neutral value,
        # so older cards still name the same recipe (the cache reuse compares dicts).
        for k, v in _NEUTRAL.items():
            if d.get(k) == v:
                d.pop(k)
        if "low_res_steps" not in d:
            d.pop("low_res_div", None)  # (meaningless in one stage: not part of the recipe)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "PretrainConfig":
        d = dict(d)
        model = EmbeddedConfig.from_dict(d.pop("model", {}))
        known = {f.name for f in dataclasses.fields(cls)}
        if set(d) - known:
            raise ConfigError(f"unknown pretraining keys: {sorted(set(d) - known)}")
        return cls(model=model, **d)


    def check(self, minutes: Optional[float] = None) -> None:
        """ConfigError for a recipe that cannot run (with a time budget of ``minutes``)."""
        if minutes is not None and not minutes > 0:
            raise ConfigError(f"--minutes must be positive, got {minutes}")
        if not 0 <= self.low_res_steps < self.steps:
            raise ConfigError(f"low_res_steps must be in [0, steps={self.steps}), "
                              f"got {self.low_res_steps}")
        size, div = self.model.img_size, self.low_res_div
        if self.low_res_steps and not (
                div >= 2 and size % div == 0 and (size // div) % self.model.patch_size == 0):
            raise ConfigError(f"low_res_div must be 2 or more and leave img_size {size} / "
                              f"low_res_div a multiple of the patch size {self.model.patch_size}, "
                              f"got {div}")

    def stage(self, step: int) -> Tuple["PretrainConfig", int, int]:
        """The config of the stage that holds `step` (its model at that stage's image
        size) and the stage's first and end step."""
        if step < self.low_res_steps:
            low = dataclasses.replace(self.model, img_size=self.model.img_size // self.low_res_div)
            return dataclasses.replace(self, model=low), 0, self.low_res_steps
        return self, self.low_res_steps, self.steps


_NEUTRAL = {"tied_qk_init": False, "beta2": 0.999, "low_res_steps": 0, "low_res_div": 2,
            "one_decoder_pass": False}

# Named recipes: changes to the dataclass defaults. `fuzzyseg sam pretrain --recipe NAME`.
RECIPES: Dict[str, Dict[str, Any]] = {
    # The shipped weights' recipe (fuzzylogic_seg/weights/sam_embedded.json): ~1 h on one thread.
    "long": {},
    # ~14 min on one thread, better than "long" on the held-out scenes (docs/SAM.md):
    # prompt-local attention at init (a shorter plateau), 3 scenes x 12 prompts (the encoder
    # pass is shared by the prompts), a shorter second-moment memory (beta2 0.95).
    "quick": dict(steps=1200, images_per_step=3, prompts_per_image=12, tied_qk_init=True,
                  beta2=0.95),
    # ~5 min on 2 CPU cores (7 on one), as good as "quick": its first 900 steps see 128 px
    # scenes (8 x 8 tokens, a step ~0.2 s instead of ~0.5 s), then 300 steps at 256 px, a
    # step's prompt kinds in one decoder pass (docs/SAM.md).
    "fast": dict(steps=1200, images_per_step=3, prompts_per_image=12, tied_qk_init=True,
                 beta2=0.95, low_res_steps=900, one_decoder_pass=True),
}
# The CLI's default: beats the shipped card in a seventh of the time (docs/SAM.md).
DEFAULT_RECIPE = "fast"


def recipe_config(name: str = DEFAULT_RECIPE, **overrides) -> PretrainConfig:
    """The named recipe with `overrides` (fields of PretrainConfig) applied."""
    if name not in RECIPES:
        raise ConfigError(f"unknown pretraining recipe {name!r}; choose one of {sorted(RECIPES)}")
    return PretrainConfig(**{**RECIPES[name], **overrides})


def tie_decoder_qk(sam) -> None:
    """Start every mask-decoder attention with k_proj = q_proj (biases 0).

    Queries and keys both carry SAM's random Fourier positional encoding (the
    prompt's tokens and the dense image PE), so with W_k = W_q the attention
    logit q.k contains PE(prompt).W^T W.PE(pixel), a kernel that peaks where
    pixel and prompt coincide: attention is local to the prompt from step 0.
    Measured: the plateau of random-init training (train IoU ~0 for ~400 steps of
    4 x 8 prompts) ends after ~200-250 steps (docs/SAM.md)."""
    from segment_anything.modeling.transformer import Attention

    with torch.no_grad():
        for m in sam.mask_decoder.transformer.modules():
            if isinstance(m, Attention):
                m.q_proj.bias.zero_()
                m.k_proj.weight.copy_(m.q_proj.weight)
                m.k_proj.bias.zero_()


# ---------------------------------------------------------------- the batch
@dataclass
class PromptGroup:
    """Prompts of one structure (same number of points, box or not), batched."""

    kind: str
    multimask: bool
    image_index: List[int] = field(default_factory=list)
    boxes: List[np.ndarray] = field(default_factory=list)
    points: List[np.ndarray] = field(default_factory=list)
    labels: List[np.ndarray] = field(default_factory=list)
    targets: List[np.ndarray] = field(default_factory=list)  # [h, w] bool, input frame


def _scene_size(rng: np.random.Generator, size: int, min_aspect: float) -> Tuple[int, int]:
    short = int(rng.integers(int(min_aspect * size), size + 1))
    return (size, short) if rng.random() < 0.5 else (short, size)


def make_batch(rng: np.random.Generator, cfg: PretrainConfig
               ) -> Tuple[List[np.ndarray], Dict[str, PromptGroup]]:
    """Images (HWC uint8, long side = img_size) and prompt groups for one step."""
    size = cfg.model.img_size
    n_points = int(rng.integers(2, 4))  # for the "points" group of this step
    groups = {k: PromptGroup(k, multimask=(k == "point")) for k in PROMPT_KINDS}
    images = []
    for b in range(cfg.images_per_step):
        while True:
            h, w = _scene_size(rng, size, cfg.min_aspect)
            scene = generate_scene(rng, h, w)
            if len(scene.masks):
                break
        images.append(scene.image)
        nonzero: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}  # (a region's pixels, found once)
        for _ in range(cfg.prompts_per_image):
            i = int(rng.integers(len(scene.masks)))
            m = scene.masks[i]
            nz = nonzero.get(i)
            if nz is None:
                nz = nonzero[i] = np.nonzero(m)
            kind = PROMPT_KINDS[int(rng.choice(len(PROMPT_KINDS), p=PROMPT_P))]
            g = groups[kind]
            box = mask_box(m, nz)
            if rng.random() < cfg.box_jitter_p:
                box = jitter_box(rng, box, h, w)
            if kind in ("box", "box_point"):
                g.boxes.append(box)
            if kind in ("box_point", "point"):
                pts, lab = sample_points(rng, m, 1, 0, nonzero=nz)
                g.points.append(pts)
                g.labels.append(lab)
            if kind == "points":
                n_pos = int(rng.integers(1, n_points + 1))
                pts, lab = sample_points(rng, m, n_pos, n_points - n_pos, near=box, nonzero=nz)
                if len(lab) < n_points:  # no room for negatives: pad with positives
                    p2, l2 = sample_points(rng, m, n_points - len(lab), 0, nonzero=nz)
                    pts, lab = np.concatenate([pts, p2]), np.concatenate([lab, l2])
                g.points.append(pts)
                g.labels.append(lab)
            g.image_index.append(b)
            g.targets.append(m)
    return images, {k: g for k, g in groups.items() if g.image_index}


# ------------------------------------------------------------------- losses
def focal_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
               alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017) averaged over valid pixels: [P, M]."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target.expand_as(logits), reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    loss = a_t * ce * (1 - p_t) ** gamma * valid
    return loss.flatten(2).sum(-1) / valid.flatten(2).sum(-1).clamp_min(1)


def bce_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    ce = F.binary_cross_entropy_with_logits(logits, target.expand_as(logits), reduction="none")
    return (ce * valid).flatten(2).sum(-1) / valid.flatten(2).sum(-1).clamp_min(1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits) * valid
    t = target * valid
    inter = (p * t).flatten(2).sum(-1)
    return 1 - (2 * inter + 1) / (p.flatten(2).sum(-1) + t.flatten(2).sum(-1) + 1)


def mask_iou(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """IoU of (logits > 0) with the target over valid pixels: [P, M], no gradient."""
    pred = (logits.detach() > 0).float() * valid
    t = target * valid
    inter = (pred * t).flatten(2).sum(-1)
    union = (pred + t - pred * t).flatten(2).sum(-1)
    return torch.where(union > 0, inter / union.clamp_min(1e-6), torch.ones_like(union))


def _pad_masks(masks: List[np.ndarray], size: int, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Targets and valid-region maps on the padded S x S input frame: [P, 1, S, S]."""
    t = torch.zeros(len(masks), 1, size, size)
    v = torch.zeros(len(masks), 1, size, size)
    for i, m in enumerate(masks):
        h, w = m.shape
        t[i, 0, :h, :w] = torch.from_numpy(m.astype(np.float32))
        v[i, 0, :h, :w] = 1
    return to_device(t, device), to_device(v, device)  # (pinned, non-blocking on CUDA)


def _low_res(target: torch.Tensor, valid: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Area-pool targets by k: a cell's target is the mask's share of its valid pixels;
    a cell is valid when most of it lies inside the (unpadded) image."""
    v = F.avg_pool2d(valid, k)
    t = F.avg_pool2d(target, k) / v.clamp_min(1e-6)
    return t.clamp(0, 1), (v > 0.5).float()


def _correction_points(rng: np.random.Generator, logits: torch.Tensor, target: torch.Tensor,
                       valid: torch.Tensor, k: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """One point per prompt from its error region: positive on a miss, negative on a
    false alarm (SAM's interactive training); [P, 1, 2] float and [P, 1] long, on
    the logits' device. A cell is drawn uniformly from the region (the argmax of
    uniform noise there), by tensor ops: no read of the device (a GPU sync)."""
    pred = logits.detach()[:, 0] > 0  # [P, h, w]
    share = target[:, 0]
    tgt = share > 0.5
    val = valid[:, 0] > 0.5
    # Where to point: the error cells; with none, a target cell; a region thinner
    # than a low-res cell has none above half, so then any cell it touches
    # (positive); with none of these, a padding point.
    options = torch.stack([(pred != tgt) & val, tgt & val, (share > 0) & val])  # [3, P, h, w]
    has = options.flatten(2).any(2)  # [3, P]
    which = has.int().argmax(0)  # the first option with a cell (0 where none has)
    where = options.gather(0, which[None, :, None, None].expand(1, *options.shape[1:]))[0]
    gen = torch.Generator(device=logits.device)
    gen.manual_seed(int(rng.integers(2 ** 62)))
    noise = torch.rand(where.shape, generator=gen, device=logits.device)
    j = torch.where(where, noise, -1.0).flatten(1).argmax(1)  # [P]
    w = where.shape[-1]
    ys, xs = torch.div(j, w, rounding_mode="floor"), j % w
    # cell centre in input pixels (k = 1: the pixel itself)
    pts = torch.stack([xs * k + (k - 1) / 2, ys * k + (k - 1) / 2], -1).float()[:, None]
    positive = (which > 0) | tgt.flatten(1).gather(1, j[:, None])[:, 0]
    found = has.any(0)
    labs = torch.where(found, positive.long(), -1)[:, None]  # -1: ignored by the prompt encoder
    return torch.where(found[:, None, None], pts, 0.0), labs


def step_loss(model: PromptableSAM, images: List[np.ndarray], groups: Dict[str, PromptGroup],
              cfg: PretrainConfig, rng: np.random.Generator
              ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    dev = model.device
    # bf16 autocast on CUDA (where native) for the encoder and decoder; losses in fp32.
    amp = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=native_bf16(dev))
    x = torch.cat([model.preprocess(im)[0] for im in images], 0)
    with amp:
        emb = model.embed(x)
    total, n = 0.0, 0
    stats = {k: torch.zeros((), device=dev) for k in ("mask", "iou", "miou")}
    prompts = []
    for g in groups.values():
        prompts.append(dict(
            image_index=to_device(torch.tensor(g.image_index), dev), multimask=g.multimask,
            boxes=to_device(torch.from_numpy(np.stack(g.boxes)), dev) if g.boxes else None,
            points=to_device(torch.from_numpy(np.stack(g.points)), dev) if g.points else None,
            point_labels=to_device(torch.from_numpy(np.stack(g.labels)), dev) if g.labels else None))

    def targets(masks):
        target, valid = _pad_masks(masks, model.img_size, dev)
        k = 1
        if cfg.low_res_loss:
            k = model.img_size // (4 * model.embedding_size[0])
            target, valid = _low_res(target, valid, k)
        return target, valid, k

    def prompt_losses(low, iou_pred, target, valid, k, record=True):
        """The prompts' mean loss (their best output's mask loss and the IoU head's
        error), the logits and the best output of each; ``record``: add to the stats."""
        low, iou_pred = low.float(), iou_pred.float()
        logits = low if k > 1 else model.upscale(low)
        per = (cfg.focal_weight * focal_loss(logits, target, valid)
               + cfg.dice_weight * dice_loss(logits, target, valid))  # [P, M]
        if cfg.bce_weight:
            per = per + cfg.bce_weight * bce_loss(logits, target, valid)
        best = per.argmin(1)
        iou_true = mask_iou(logits, target, valid)
        iou_mse = F.mse_loss(iou_pred, iou_true)
        loss = per.gather(1, best[:, None]).mean() + cfg.iou_weight * iou_mse
        if record:  # (tensors: read once per step, not a GPU sync per group)
            stats["mask"] += per.detach().gather(1, best[:, None]).sum()
            stats["miou"] += iou_true.detach().gather(1, best[:, None]).sum()
            stats["iou"] += iou_mse.detach() * len(low)
        return loss, logits, best

    if not cfg.iterative_rounds and cfg.one_decoder_pass:
        # Every group in one decoder pass (padded prompts), and the losses of the
        # groups with one output (and of those with three) together: the same sum
        # as group by group (a group's mean times its size), to float rounding.
        with amp:
            outs = model.decode_groups(emb, prompts)
        gs = list(groups.values())
        for multimask in (False, True):
            sel = [i for i, g in enumerate(gs) if g.multimask == multimask]
            if not sel:
                continue
            loss, _, _ = prompt_losses(torch.cat([outs[i][0] for i in sel]),
                                       torch.cat([outs[i][1] for i in sel]),
                                       *targets([m for i in sel for m in gs[i].targets]))
            m = sum(len(gs[i].image_index) for i in sel)
            total, n = total + loss * m, n + m
        return total / n, {name: v / n for name, v in stats.items()}
    for g, kw in zip(groups.values(), prompts):
        idx, boxes = kw["image_index"], kw["boxes"]
        pts, labs = kw["points"], kw["point_labels"]
        target, valid, k = targets(g.targets)
        multimask, mask_in = g.multimask, None
        for rnd in range(1 + cfg.iterative_rounds):
            with amp:
                low, iou_pred = model.decode(emb, boxes=boxes, points=pts, point_labels=labs,
                                             multimask=multimask, image_index=idx,
                                             mask_input=mask_in)
            # (the statistics are those of the first round)
            loss, logits, best = prompt_losses(low, iou_pred, target, valid, k, record=not rnd)
            total = total + loss * len(g.image_index)
            n += len(g.image_index)
            if rnd < cfg.iterative_rounds:
                chosen = logits.gather(1, best[:, None, None, None].expand(-1, 1, *logits.shape[2:]))
                p_new, l_new = _correction_points(rng, chosen, target, valid, k)
                pts = p_new if pts is None else torch.cat([pts, p_new], 1)
                labs = l_new if labs is None else torch.cat([labs, l_new], 1)
                mask_in = low.gather(1, best[:, None, None, None].expand(-1, 1, *low.shape[2:])).detach()
                multimask = False
    n0 = sum(len(g.image_index) for g in groups.values())
    stats = {name: v / n0 for name, v in stats.items()}
    return total / n, stats


# ------------------------------------------------------------------ schedule
def lr_at(step: int, cfg: PretrainConfig, total: int, warm_of: Optional[int] = None) -> float:
    """Linear warm-up over min(warmup, warm_of / 10) steps (``warm_of``: the stage's
    length in the recipe, default ``total``), then cosine decay to 0 at ``total``."""
    warm = min(cfg.warmup, max(1, (total if warm_of is None else warm_of) // 10))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


# ------------------------------------------------------------------ training
def state_path(out: Path) -> Path:
    return out.with_name(out.name + ".state")


def card_path(out: Path) -> Path:
    return out.with_suffix(".json")


def _step_batch(args: Tuple[int, int, PretrainConfig]):
    """Batch of step ``t`` and the generator after drawing it (the step's loss
    continues from it); a pure function of (seed, t), so worker processes give
    the same batches as the main one."""
    seed, t, cfg = args
    rng = np.random.default_rng([seed, 0, t])
    images, groups = make_batch(rng, cfg)
    return images, groups, rng


def _batches(plan: Callable[[], PretrainConfig], start: int, workers: int):
    """Yield ``_step_batch`` results for steps start, start+1, ... (forever), each
    drawn at the size of the stage that holds it in the recipe ``plan()`` returns
    when the step comes (a time budget's plan may move the switch between stages).

    With workers > 0 a process pool draws batches ahead, across both stages (one
    pool a run: spawning it costs seconds): scene generation is numpy on the CPU
    and, on a GPU, costs more than the step itself. A batch drawn ahead at a size
    that the plan has since changed is drawn again (the same as a serial run's)."""
    def stage_at(t: int) -> PretrainConfig:
        return plan().stage(t)[0]

    if workers <= 0:
        t = start
        while True:
            c = stage_at(t)
            yield _step_batch((c.seed, t, c))
            t += 1
    import collections
    import multiprocessing as mp

    # spawn: the parent may already hold a CUDA context, which fork must not copy.
    # A bounded window of pending steps: Pool.imap would drain an endless step
    # counter into its task queue (unbounded memory, a busy feeder thread).
    with mp.get_context("spawn").Pool(workers) as pool:
        pending: collections.deque = collections.deque()
        t = start
        while True:
            while len(pending) < 2 * workers:
                c = stage_at(t)
                pending.append((t, c.model.img_size,
                                pool.apply_async(_step_batch, ((c.seed, t, c),))))
                t += 1
            t0, size, res = pending.popleft()
            out = res.get()
            c = stage_at(t0)
            if c.model.img_size != size:  # (the only field a plan's change moves)
                out = _step_batch((c.seed, t0, c))
            yield out


def initial_model(cfg: PretrainConfig, model: EmbeddedConfig):
    """The recipe's freshly initialised SAM (seeded by ``cfg.seed``), of architecture
    ``model`` (the first stage's: ``cfg.stage(0)[0].model``)."""
    torch.manual_seed(cfg.seed)
    sam = build_embedded(model)
    if cfg.tied_qk_init:
        tie_decoder_qk(sam)
    return sam


def make_optimizer(sam, cfg: PretrainConfig, device) -> torch.optim.Optimizer:
    """The recipe's AdamW over ``sam`` (on ``device``), with the fastest kernel there:
    fused on CPU and CUDA (a CPU step of the 229 tensors 18 -> 5 ms against foreach;
    the same update up to rounding), else foreach."""
    kernel = {"fused": True} if torch.device(device).type in ("cpu", "cuda") else {"foreach": True}
    return torch.optim.AdamW(sam.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                             betas=(0.9, cfg.beta2), **kernel)


def update(sam, opt: torch.optim.Optimizer, loss: torch.Tensor, cfg: PretrainConfig) -> None:
    """A training step's update from its loss: gradients, clipped to the recipe's norm,
    and the optimizer's step (the same in a run and in its timed steps)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(sam.parameters(), cfg.grad_clip)
    opt.step()


def step_seconds(cfg: PretrainConfig, device, at: int = 0, workers: int = 0,
                 warm: int = 2, timed: int = 3) -> float:
    """Seconds a training step takes in the stage that holds step ``at``: the median of
    ``timed`` steps after ``warm`` ones, on a throwaway model of that stage's size
    and batches of their own stream ([seed, 2, i]: the run's batches and weights do
    not depend on it). Drawing the scenes counts unless ``workers`` draw them."""
    import statistics

    stage = cfg.stage(at)[0]
    dev = torch.device(device)
    sam = build_embedded(stage.model).to(dev).train()
    model, opt = PromptableSAM(sam), make_optimizer(sam, cfg, dev)
    times = []
    for i in range(warm + timed):
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, 2, i])
        images, groups = make_batch(rng, stage)
        t1 = time.perf_counter()
        loss, _ = step_loss(model, images, groups, cfg, rng)
        update(sam, opt, loss, cfg)
        float(loss.detach())  # (waits for the device)
        times.append(time.perf_counter() - (t1 if workers else t0))
    return statistics.median(times[warm:])


def stage_seconds(cfg: PretrainConfig, device, workers: int = 0) -> Tuple[float, ...]:
    """Seconds a step takes in each stage of the recipe (:func:`step_seconds`)."""
    starts = (0, cfg.low_res_steps) if cfg.low_res_steps else (0,)
    return tuple(step_seconds(cfg, device, at, workers) for at in starts)


def pretrain(out, cfg: PretrainConfig = PretrainConfig(), device: str = "cpu",
             minutes: Optional[float] = None, save_every: int = 25, progress: bool = True,
             stop_after: Optional[int] = None, evaluate_result: bool = True,
             init: Optional[Path] = None, workers: int = 0,
             log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Pretrain the embedded SAM; write `out` (weights, fp16) and its JSON card.

    Resumes from ``out.state`` when it holds the same recipe. ``minutes`` caps
    the run by time: a few steps of each stage are timed first on a throwaway
    model (:func:`step_seconds`), then the recipe is shortened to what fits,
    every stage by the same factor (:func:`~.budget.budget_plan`), and corrected as the
    run measures its own speed (:func:`~.budget.keep_budget`); the result then depends
    on the machine's speed, and a resumed run keeps its plan. ``stop_after``
    stops early leaving only the state file (used to test resumption).
    ``init`` continues from an embedded checkpoint's weights (a second stage:
    give it another ``seed`` so it sees new scenes); its card is kept in ours.
    ``workers`` processes draw the batches ahead (same batches, same result).
    A recipe with ``low_res_steps`` trains in two stages (coarse to fine): its
    first steps on scenes at ``img_size / low_res_div`` px, then the rest at the model's
    size, the positional tables resized (``resize_positional_state``), with a
    fresh optimizer and learning-rate schedule; the batch of step t is still
    drawn from (seed, t). Returns the card (recipe, timings, metrics).
    """
    from tqdm import tqdm

    cfg.check(minutes)
    asked = cfg  # (a time budget runs a shortened plan of it)
    out = Path(out)
    spath = state_path(out)
    recipe = cfg.to_dict()  # (the recipe asked for; a time budget runs `plan` of it)
    st = load_torch(spath, map_location=device) if spath.is_file() else None
    plan = None
    if minutes is not None:
        if st is not None and st.get("plan") is not None:
            # a resumed budget run keeps its plan (a state of another recipe is
            # refused below)
            plan = st["plan"]
        elif st is not None and st.get("minutes") is not None:
            raise CheckpointError(f"{spath}: the state of a --minutes run of an older version; "
                                  "delete it")
        else:
            t0 = time.perf_counter()
            per_step = stage_seconds(cfg, device, workers)
            took = time.perf_counter() - t0  # (the timing counts against the budget)
            plan = budget_plan(cfg, minutes * 60 - took, per_step)[1]
            plan["timing_seconds"] = round(took, 1)
            plan["measured"] = [None] * len(per_step)  # (the run's own speed, per stage)
        cfg = dataclasses.replace(cfg, steps=plan["steps"], low_res_steps=plan["low_res_steps"])
        log(f"time budget {minutes} min: {describe(cfg)} (timed s/step: {plan['step_seconds']})")
    stage_cfg, stage_start, stage_end = cfg.stage(0)
    sam = initial_model(cfg, stage_cfg.model)
    init_card = None
    if init is not None:
        ckpt0 = load_torch(init)
        if not isinstance(ckpt0, dict) or "state_dict" not in ckpt0:
            raise CheckpointError(f"{init}: not an embedded SAM checkpoint (no state_dict)")
        if not isinstance(ckpt0["state_dict"], dict):
            raise CheckpointError(f"{init}: not an embedded SAM state dict")
        # (weights of another image size continue at this one: positional tables resized)
        load_state_strict(sam, resize_positional_state(ckpt0["state_dict"], sam.state_dict()),
                          init, what="embedded SAM")
        recipe["init"] = {"file": Path(init).name, "fingerprint": model_fingerprint(sam)}
        init_card = (ckpt0.get("meta") or {}).get("card")

    def next_stage(sam, at: int):
        """The model, wrapper and optimizer of the stage that holds step `at`, and
        that stage (``cfg.stage(at)``), the weights carried over from ``sam``."""
        stage = cfg.stage(at)
        big = build_embedded(stage[0].model)
        big.load_state_dict(resize_positional_state(sam.state_dict(), big.state_dict()))
        big = big.to(device).train()
        return big, PromptableSAM(big), make_optimizer(big, cfg, device), stage

    sam = sam.to(device)
    model = PromptableSAM(sam)
    opt = make_optimizer(sam, cfg, device)
    step, total, history, elapsed = 0, cfg.steps, [], 0.0
    if st is not None:
        if st.get("recipe") != recipe:
            raise CheckpointError(f"{spath}: a pretraining state of another recipe; delete it or "
                                  "use another --out")
        if (st.get("minutes") is None) != (minutes is None):
            # a time-capped run has its own step count and learning-rate schedule
            was = (f"a --minutes {st['minutes']} run ({int(st['total'])} of {recipe['steps']} "
                   "steps)" if st.get("minutes") is not None else
                   f"a run of all {recipe['steps']} steps")
            raise CheckpointError(f"{spath}: the state of {was}; rerun it as it was started, or "
                                  "delete the state file")
        if st.get("img_size", cfg.model.img_size) != stage_cfg.model.img_size:
            # saved in the second stage: continue from there
            sam, model, opt, (stage_cfg, stage_start, stage_end) = next_stage(sam, int(st["step"]))
        load_state_strict(sam, st["model"], spath, what="embedded SAM")
        load_optimizer_state(opt, st["optim"])
        step, total, history = int(st["step"]), int(st["total"]), list(st["history"])
        elapsed = float(st.get("elapsed", 0.0))
        log(f"resuming {spath} at step {step}/{total}")

    def save_state():
        save_torch({"recipe": recipe, "model": sam.state_dict(), "optim": opt.state_dict(),
                    "step": step, "total": total, "history": history, "elapsed": elapsed,
                    "minutes": minutes, "plan": plan, "img_size": stage_cfg.model.img_size},
                   spath)

    sam.train()
    bar = tqdm(total=total, initial=step, desc="sam pretrain", disable=not progress,
               dynamic_ncols=True)
    run_loss = None
    batches = _batches(lambda: cfg, step, workers)  # (cfg: the plan, as it is then)
    while step < total:
        t0 = time.perf_counter()
        if step == stage_end:  # coarse to fine: the next stage's size
            sam, model, opt, (stage_cfg, stage_start, stage_end) = next_stage(sam, step)
        images, groups, rng = next(batches)
        # (the warm-up follows the recipe's stage length: a budget plan corrected
        # during the warm-up leaves the steps before unchanged)
        asked_len = asked.low_res_steps if stage_start == 0 and cfg.low_res_steps else \
            asked.steps - asked.low_res_steps
        for g in opt.param_groups:
            g["lr"] = lr_at(step - stage_start, cfg,
                            (total if stage_end == cfg.steps else stage_end) - stage_start,
                            warm_of=asked_len)
        loss, stats = step_loss(model, images, groups, cfg, rng)
        update(sam, opt, loss, cfg)
        # the step's one read of the device (a GPU sync), after its work is queued; a
        # diverged step is caught here, before anything of it is saved
        loss_v, miou = torch.stack([loss.detach().float(), stats["miou"].float()]).tolist()
        if not math.isfinite(loss_v):
            raise DivergenceError(f"pretraining diverged at step {step} (loss {loss_v}); lower --lr")
        step += 1
        elapsed += time.perf_counter() - t0
        run_loss = loss_v if run_loss is None else 0.95 * run_loss + 0.05 * loss_v
        history.append({"step": step, "loss": round(loss_v, 5),
                        "train_iou": round(miou, 4)})
        bar.update(1)
        bar.set_postfix(loss=f"{run_loss:.3f}", iou=f"{miou:.2f}")
        if plan is not None:
            cfg, note = keep_budget(plan, asked, cfg, step, stage_start, elapsed, minutes)
            if note:
                total, stage_end = cfg.steps, cfg.stage(step - 1)[2]
                bar.total = total
                (bar.write if progress else log)(note)  # (above the bar, not through it)
        if step % save_every == 0 or step == total or step == stop_after:
            save_state()
        if stop_after is not None and step >= stop_after and step < total:
            bar.close()
            batches.close()
            return {"stopped_at": step}
    bar.close()
    batches.close()
    sam.eval()

    ckpt = embedded_checkpoint(sam, cfg.model, half=True)
    card = {"recipe": recipe, "steps": total, "device": str(device),
            "train_seconds": round(elapsed, 1), "threads": torch.get_num_threads(),
            "params": sum(p.numel() for p in sam.parameters()),
            "loss_curve": _summarise(history), "weights": out.name}
    if plan is not None:
        card["budget"] = {"minutes": minutes, **{k: v for k, v in plan.items() if k != "window"}}
    if init_card is not None:
        card["init_card"] = init_card
    if evaluate_result:
        # Metrics of the model exactly as shipped (fp16-rounded weights).
        shipped = build_embedded(cfg.model)
        load_state_strict(shipped, ckpt["state_dict"], out, what="embedded SAM")
        card["heldout"] = evaluate(PromptableSAM(shipped.to(device)), cfg.seed, cfg.eval_images,
                                   progress=progress)
    ckpt["meta"] = {"card": card}
    save_torch(ckpt, out)
    save_json(card, card_path(out))
    if spath.exists():
        spath.unlink()
    return card


def _summarise(history: List[Dict[str, float]], bins: int = 20) -> List[Dict[str, float]]:
    """Mean loss / train IoU over `bins` equal stretches of the run."""
    if not history:
        return []
    chunks = np.array_split(np.arange(len(history)), min(bins, len(history)))
    return [{"step": history[c[-1]]["step"],
             "loss": round(float(np.mean([history[i]["loss"] for i in c])), 4),
             "train_iou": round(float(np.mean([history[i]["train_iou"] for i in c])), 4)}
            for c in chunks if len(c)]


# ---------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: PromptableSAM, seed: int = 0, n_images: int = 48, scale: float = 1.25,
             progress: bool = False) -> Dict[str, Any]:
    """Held-out mIoU on fresh scenes (stream [seed, 1, i]), through the full
    SamPredictor-equivalent path (scenes are made at `scale` x the model size so
    the resize is exercised). Box prompts: single output; one point: the output
    with the highest predicted IoU. Also the IoU of the box painted as a mask."""
    from tqdm import tqdm

    model.eval()
    s = int(round(model.img_size * scale))
    rows = []
    for i in tqdm(range(n_images), desc="sam eval", disable=not progress, dynamic_ncols=True):
        rng = np.random.default_rng([seed, 1, i])
        h, w = _scene_size(rng, s, 0.6)
        scene = generate_scene(rng, h, w)
        if not len(scene.masks):
            continue
        x, input_size = model.preprocess(scene.image)
        emb = model.embed(x)
        tight = np.stack([mask_box(m) for m in scene.masks])
        jit = np.stack([jitter_box(rng, b, h, w) for b in tight])
        pts = np.stack([sample_points(rng, m, 1, 0)[0] for m in scene.masks])
        gt = torch.from_numpy(scene.masks).to(model.device)

        def ious(logits):
            pred = logits > 0
            inter = (pred & gt).flatten(1).sum(1).float()
            union = (pred | gt).flatten(1).sum(1).float()
            return (inter / union.clamp_min(1)).cpu().numpy()

        res = {}
        for name, b in (("box", tight), ("box_jitter", jit)):
            low, _ = model.decode(emb, boxes=torch.from_numpy(b), orig_size=(h, w))
            res[name] = ious(model.postprocess(low, input_size, (h, w))[:, 0])
        low, iou_pred = model.decode(emb, points=torch.from_numpy(pts),
                                     point_labels=torch.ones(len(pts), 1, dtype=torch.long),
                                     multimask=True, orig_size=(h, w))
        logits = model.postprocess(low, input_size, (h, w))
        k = iou_pred.argmax(1)
        res["point"] = ious(logits[torch.arange(len(k)), k])
        painted = torch.zeros_like(gt)
        for j, (x0, y0, x1, y1) in enumerate(tight.astype(int)):
            painted[j, y0:y1, x0:x1] = True
        res["box_painted"] = ious(painted.float() - 0.5)
        for j in range(len(scene.masks)):
            rows.append({"kind": scene.kinds[j], "nested": bool(scene.nested[j]),
                         "low_contrast": bool(scene.low_contrast[j]),
                         **{k_: float(v[j]) for k_, v in res.items()}})

    def mean(sel, key):
        vals = [r[key] for r in rows if sel(r)]
        return round(float(np.mean(vals)), 4) if vals else None

    keys = ("box", "box_jitter", "point", "box_painted")
    out = {"n_images": n_images, "n_masks": len(rows), "size": s,
           "miou": {k: mean(lambda r: True, k) for k in keys}}
    groups = {"nested": lambda r: r["nested"], "low_contrast": lambda r: r["low_contrast"],
              **{f"kind_{k}": (lambda r, k=k: r["kind"] == k) for k in sorted({r["kind"] for r in rows})}}
    out["by_group"] = {g: {"n": sum(1 for r in rows if sel(r)),
                           **{k: mean(sel, k) for k in ("box", "point", "box_painted")}}
                       for g, sel in groups.items()}
    return out
