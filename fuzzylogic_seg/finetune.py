"""Logic fine-tuning of SAM: weak labels and priors, as rules, become the loss.

API (stable; the pipeline calls it)::

    tuner = LogicFineTuner(sam_model, rules=["examples/rules/voc_boxes.rules"],
                           dataset_kind="voc", weak="boxes", train=("decoder",),
                           epochs=10, lr=3e-4, seed=0, device="cpu",
                           cache_dir=None, out_dir="runs/ft")
    history = tuner.fit(dataset)      # dataset: with_gt=False, weak labels only
    tuner.sam                         # the fine-tuned segment_anything Sam

``history`` is ``{"epochs": [{"epoch", "loss", "rules": {name: satisfaction},
"seconds"}, ...], "initial": {...}, "config": {...}}``: per epoch the mean
loss and each rule's mean truth over the images (``"initial"``: before any
update), also written to ``out_dir/history.json``. Each epoch ends with an
atomic checkpoint ``out_dir/finetune.pt`` (trainable weights, optimiser,
history); ``fit`` resumes from it when the settings match, so an interrupted
run, rerun, continues where it stopped.

What happens (docs/FINETUNE.md has the rationale):

1. Each image gets a *view* (the whole image; REFUGE: a square crop around
   the disc box with a margin, from the weak label) and *prompts* from its
   weak labels (:mod:`fuzzylogic_seg.prompts`).
2. With the image encoder frozen (``train=("decoder",)``, the default),
   image embeddings are computed once (and cached on disk under
   ``cache_dir``); the frozen model's masks are kept as the zero-shot facts.
3. Each step decodes the prompts of a batch of images, builds the facts the
   rule files declare (:mod:`fuzzylogic_seg.rule_facts`) on SAM's
   low-resolution grid, evaluates every compiled theory and steps AdamW on
   the sum of their losses. Rule weights and semantics come from the files.

Training reads ``sample["image"]`` and ``sample["weak"]`` only, never
``sample["gt"]``. ``train`` may add ``"prompt_encoder"``; ``"encoder"``
(full image encoder) and ``"lora"`` (low-rank adapters from
:mod:`fuzzylogic_seg.sam.lora`, when available) re-embed images every step.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from . import rule_facts as rf
from .errors import CheckpointError, ConfigError, DivergenceError
from .devices import compute_precision, native_bf16, to_device
from .rulefiles import example_rules, resolve_rule_file
from .prompts import PROMPT_KINDS, Prompts, View, full_view, prompts_from_weak, roi_view

DATASET_KINDS = ("voc", "refuge")


def report_semantics():
    """How satisfaction is *reported* (not trained): a rule's truth with every
    forall as the mean and every exists as the max over its domain, the
    connectives as the file says. Under the product forall used for training a
    rule over thousands of pixels has truth ~0 whatever the model does; the mean
    reads as "the share to which the rule holds" and moves visibly. A quantifier
    with an operator of its own in the rule text (``forall[at_least(0.3)] ...``)
    keeps it here too: it is part of what the rule says."""
    from fuzzylogic.semantics import Semantics

    return Semantics.preset("log_product", forall="mean", exists="max", loss="linear")
TRAINABLE = ("decoder", "prompt_encoder", "encoder", "lora")
CHECKPOINT = "finetune.pt"
HISTORY = "history.json"
REFUGE_SLOTS = 2  # region 0 = disc (label 1), region 1 = cup (label 2)


def default_epochs(dataset_kind: str, weak: str) -> int:
    """Epochs used for the results in docs/FINETUNE.md (tags: class-head epochs)."""
    return {("voc", "boxes"): 20, ("voc", "tags"): 60}.get((dataset_kind, weak), 10)


def default_rules(dataset_kind: str, weak: str) -> Path:
    """The example rule file for a data set and weak-label kind (the repository's
    examples/rules in a checkout, the copy packaged in a wheel otherwise:
    :mod:`fuzzylogic_seg.rulefiles`)."""
    name = {("refuge", "boxes"): "refuge.rules", ("voc", "boxes"): "voc_boxes.rules"}.get(
        (dataset_kind, weak), f"{weak}.rules")
    try:
        return example_rules(name)
    except ConfigError as e:
        raise ConfigError(f"no default rule file for {dataset_kind} with {weak}: {e}") from None


# ------------------------------------------------------------------ rules
@dataclass
class CompiledRules:
    """One rule file: its compiled theory and how it binds to the facts."""

    path: str
    theory: object
    binding: rf.Binding
    rule_names: Tuple[str, ...]    # as in the file
    text_hash: str
    display: Tuple[str, ...] = ()  # in logs (file stem added when names clash)
    report: object = None          # the same rules under REPORT_SEMANTICS


def load_rules(paths: Sequence[Union[str, Path]], available=None, semantics=None,
               vocabulary=None, dataset: Optional[str] = None) -> List[CompiledRules]:
    """Parse, check, compile and bind rule files (errors name the file and line)."""
    from fuzzylogic.checker import check
    from fuzzylogic.compiler import compile as compile_rules
    from fuzzylogic.parser import parse_file

    out = []
    for p in paths:
        p = resolve_rule_file(p)
        program = check(parse_file(p))
        binding = rf.bind(program, available, vocabulary, dataset)
        theory = compile_rules(program, semantics=semantics)
        report = compile_rules(program, semantics=report_semantics())
        h = hashlib.sha256(repr(program).encode()).hexdigest()[:16]
        names = tuple(r.name for r in program.rules)
        out.append(CompiledRules(str(p), theory, binding, names, h, names, report))
    names = [n for c in out for n in c.rule_names]
    if len(set(names)) != len(names):  # several files: keep rule names apart
        for c in out:
            c.display = tuple(f"{Path(c.path).stem}.{n}" for n in c.rule_names)
    return out


# ------------------------------------------------------------------ items
@dataclass
class Item:
    """One training image, prepared once: view, prompts, cached facts."""

    index: int
    id: str
    size: Tuple[int, int]          # original image (H, W)
    view: View
    grid: rf.Grid
    prompts: Prompts               # in view pixels, valid prompts only
    slots: torch.Tensor            # [n] region index of each prompt
    n_regions: int
    image_grid: Optional[torch.Tensor] = None   # uint8 [3, G, G]: appearance facts
    scribble: Optional[Dict[str, torch.Tensor]] = None  # scrib / point facts (bool)
    zs: Optional[torch.Tensor] = None           # uint8 [n, G, G]: frozen model's probability
    extra: Dict = field(default_factory=dict)


def _slots(prompts: Prompts, dataset_kind: str) -> Tuple[Prompts, torch.Tensor, int]:
    """Region index of each prompt: REFUGE fixed slots (disc 0, cup 1); else in order."""
    if dataset_kind == "refuge":
        keep, slots, seen = [], [], set()
        for i, lab in enumerate(prompts.labels.tolist()):
            if lab in (1, 2) and lab not in seen:  # first disc box, first cup box
                seen.add(lab)
                keep.append(i)
                slots.append(lab - 1)
        idx = torch.tensor(keep, dtype=torch.long)
        return prompts.select(idx), torch.tensor(slots, dtype=torch.long), REFUGE_SLOTS
    n = len(prompts)
    return prompts, torch.arange(n), n


def make_view(weak, size, dataset_kind: str, roi_margin: float) -> View:
    """The part of the image SAM sees (REFUGE: crop around the disc box)."""
    h, w = size
    if dataset_kind == "refuge" and weak.boxes.shape[0]:
        discs = weak.boxes[weak.box_labels == 1]
        box = discs[0] if len(discs) else torch.cat(
            [weak.boxes[:, :2].min(0).values, weak.boxes[:, 2:].max(0).values])
        return roi_view(box, h, w, margin=roi_margin)
    return full_view(h, w)


# ------------------------------------------------------------ embeddings
class _Embeddings:
    """Image embeddings of the views: with ``cache_dir``, on disk through
    :class:`fuzzylogic_seg.sam.cache.EmbeddingCache` (read back per batch, so a
    large data set need not fit in memory); without, in memory."""

    def __init__(self, psam, cache_dir, progress: bool = False, compute: str = "fp32"):
        self.psam = psam
        self.cache = None
        if cache_dir is not None:
            from .sam.cache import EmbeddingCache

            self.cache = EmbeddingCache.for_model(cache_dir, psam.sam, compute=compute)
        self.mem: Dict[str, torch.Tensor] = {}
        self.digest: Dict[str, str] = {}
        self.progress = progress

    @staticmethod
    def key(item: "Item") -> str:
        return f"{item.id}@{item.view.key()}"

    @torch.no_grad()
    def fill(self, pairs: List[Tuple["Item", torch.Tensor]], autocast) -> None:
        """Compute (or find in the cache) the embeddings of (item, view image) pairs."""
        if not pairs:
            return
        if self.cache is not None:
            from .sam.cache import image_hash

            for it, img in pairs:
                self.digest[self.key(it)] = image_hash(img)
            with autocast():
                self.cache.get_many(self.psam, [self.key(it) for it, _ in pairs],
                                    [img for _, img in pairs], device="cpu",
                                    batch_size=len(pairs))
            return
        xs = torch.cat([self.psam.preprocess(img)[0] for _, img in pairs])
        with autocast():
            emb = self.psam.embed(xs).float().cpu()
        for (it, _), e in zip(pairs, emb):
            self.mem[self.key(it)] = e

    def get(self, item: "Item", device) -> torch.Tensor:
        k = self.key(item)
        if self.cache is None:
            return to_device(self.mem[k], device)
        hit = self.cache.lookup(k, None, device="cpu", digest=self.digest[k])
        if hit is None:
            raise CheckpointError(f"embedding cache {self.cache.dir}: entry of {item.id!r} "
                                  "vanished or changed during training")
        return to_device(hit.embedding, device)


CUDA_GRAPHS = "cuda-graphs"


def compile_modes() -> Tuple[str, ...]:
    """The ``compile_loss`` names: torch.compile's modes on this torch, and "cuda-graphs"."""
    try:  # (a private listing; the documented modes where it is gone)
        from torch._inductor import list_mode_options

        modes = tuple(list_mode_options())
    except Exception:  # pragma: no cover - depends on the torch build
        modes = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
    return modes + (CUDA_GRAPHS,)


def compile_options(value, device=None) -> Optional[Dict]:
    """``compile_loss``: False (eager), True (torch.compile defaults), a mode name
    ("default", "reduce-overhead" = CUDA graphs, "max-autotune", ...) or torch.compile's keyword
    arguments as a dict; "cuda-graphs": the eager loss replayed as CUDA graphs, no compile
    (:mod:`fuzzylogic.graphs`); None stands for eager. Checked here, so that a typo
    stops a run before its first stage instead of at the fine-tuning step (with
    ``device``: "cuda-graphs" needs a CUDA one)."""
    if value is False or value is None:
        return None
    if value is True:
        return {}
    if value == CUDA_GRAPHS:
        if device is not None and torch.device(device).type != "cuda":
            raise ConfigError(f"compile_loss={CUDA_GRAPHS!r} replays the loss as CUDA graphs: it "
                              f"needs a CUDA device, got {device}")
        return {CUDA_GRAPHS: True}
    if isinstance(value, str):
        if value not in compile_modes():
            raise ConfigError(f"compile_loss: unknown mode {value!r}; choose one of "
                              f"{', '.join(compile_modes())} (or leave it out: eager)")
        return {"mode": value}
    if isinstance(value, dict):
        bad = set(value) - {"mode", "backend", "options"}
        if bad:
            raise ConfigError(f"compile_loss: unknown torch.compile option(s) {sorted(bad)}; "
                              "use mode, backend or options")
        return dict(value)
    raise ConfigError(f"compile_loss must be a bool, a torch.compile mode or a dict, got {value!r}")


# ------------------------------------------------------------- the tuner
class LogicFineTuner:
    """Fine-tunes SAM with the losses compiled from rule files (module doc)."""

    def __init__(self, sam_model, rules: Optional[Sequence[Union[str, Path]]] = None,
                 dataset_kind: str = "voc", weak: str = "boxes",
                 train: Sequence[str] = ("decoder",), epochs: int = 10, lr: float = 3e-4,
                 seed: int = 0, device: Union[str, torch.device] = "cpu",
                 cache_dir: Optional[Union[str, Path]] = None,
                 out_dir: Optional[Union[str, Path]] = None, batch_size: int = 4,
                 weight_decay: float = 0.0, keep_threshold: float = 0.9,
                 roi_margin: float = 0.3, semantics=None, amp: Optional[bool] = None,
                 progress: bool = True, prompt_options: Optional[Dict] = None,
                 lora_rank: int = 4, loss_grid: Optional[int] = 64,
                 compile_loss: Union[bool, str, Dict] = False, cache_facts: bool = True,
                 encode_batch: Optional[int] = None):
        from .sam.forward import PromptableSAM

        if dataset_kind not in DATASET_KINDS:
            raise ConfigError(f"unknown dataset kind {dataset_kind!r}; expected one of {DATASET_KINDS}")
        if weak not in PROMPT_KINDS:
            raise ConfigError(f"unknown weak-label kind {weak!r}; expected one of {PROMPT_KINDS}")
        bad = set(train) - set(TRAINABLE)
        if bad or not train:
            raise ConfigError(f"train: choose from {TRAINABLE}, got {tuple(train)}")
        if epochs < 0 or lr <= 0 or batch_size < 1:
            raise ConfigError("epochs must be >= 0, lr > 0, batch_size >= 1")
        if not 0.5 <= keep_threshold < 1:
            raise ConfigError(f"keep_threshold must lie in [0.5, 1), got {keep_threshold}")
        self.device = torch.device(device)
        self.psam = sam_model if isinstance(sam_model, PromptableSAM) else PromptableSAM(sam_model)
        self.psam.to(self.device)
        self.dataset_kind, self.weak = dataset_kind, weak
        self.train_parts = tuple(train)
        self.epochs, self.lr, self.seed = int(epochs), float(lr), int(seed)
        self.batch_size, self.weight_decay = int(batch_size), float(weight_decay)
        self.keep_threshold, self.roi_margin = float(keep_threshold), float(roi_margin)
        self.cache_dir, self.out_dir = cache_dir, None if out_dir is None else Path(out_dir)
        self.progress = progress
        self.cache_facts = bool(cache_facts)  # not in config(): the same numbers either way
        self.time_parts = False  # benchmarks: synchronise CUDA between the parts of a step
        # Images per image-encoder call when embeddings are made: 8 at the embedded
        # SAM's 256 px, 1 at Meta's 1024 px (ViT-B's forward on one image already
        # takes ~3.5 GB; eight at once would not fit many GPUs, nor this CPU's RAM).
        # Not in config(): the embeddings are the same either way.
        if encode_batch is None:
            encode_batch = max(1, (8 * 256 ** 2) // self.psam.img_size ** 2)
        if int(encode_batch) < 1:
            raise ConfigError(f"encode_batch must be >= 1, got {encode_batch}")
        self.encode_batch = int(encode_batch)
        self.prompt_options = dict(prompt_options or {})
        self.amp = (self.device.type == "cuda") if amp is None else bool(amp)
        # bf16 where the GPU has it natively (emulated bf16 is slower than fp32)
        self.bf16 = self.amp and native_bf16(self.device)
        if rules is None:
            rules = [default_rules(dataset_kind, weak)]
        # [] = no rules: prediction only (zero-shot); names of shipped files resolved
        self.rule_paths = [str(resolve_rule_file(p)) for p in rules]
        self.rules = load_rules(self.rule_paths, self.available_facts(), semantics,
                                dataset=dataset_kind) \
            if self.rule_paths else []
        self.need = set(p for c in self.rules for p in c.binding.predicates)
        # The loss lives on a fixed grid (default 64 x 64, the embedded SAM's mask
        # grid): a product-forall rule over pixels sums one term per cell, so the
        # balance between pixel rules and row/column rules -- the weights in a rule
        # file -- would otherwise change with the SAM type (256 x 256 for ViT-B/L/H).
        self.native_grid = 4 * int(self.psam.embedding_size[0])
        self.grid_size = int(loss_grid) if loss_grid else self.native_grid
        if self.grid_size < 8:
            raise ConfigError(f"loss_grid must be >= 8, got {loss_grid}")
        self.cached = not ({"encoder", "lora"} & set(self.train_parts))
        self.lora_rank = int(lora_rank)
        if "lora" in self.train_parts:
            torch.manual_seed(self.seed)  # adapters' initialisation
            self.trainable_parameters()
            self.sam.to(self.device)
        self.timing = defaultdict(float)
        self._validated = False
        self.compile_loss = compile_options(compile_loss, self.device)
        self._compiled = None
        self._resamplers: Dict[Tuple[int, torch.dtype], torch.Tensor] = {}
        self.region_pad: Optional[int] = None  # set by prepare() when the loss is compiled

    # ------------------------------------------------------------ set-up
    @property
    def sam(self):
        return self.psam.sam

    def available_facts(self) -> Tuple[str, ...]:
        """The vocabulary this data's weak labels can feed."""
        return rf.available_facts(self.weak)

    def trainable_parameters(self) -> List[torch.nn.Parameter]:
        """Freeze SAM but the parts in ``train`` (LoRA adapters added on first call)."""
        from .sam.lora import trainable_parameters

        return trainable_parameters(self.sam, self.train_parts, lora_rank=self.lora_rank)

    def _trainable_state(self) -> Dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone() for n, p in self.sam.named_parameters()
                if p.requires_grad}

    def config(self) -> Dict:
        """Everything that makes two runs the same run (resume checks it)."""
        return {"rules": [{"path": c.path, "hash": c.text_hash} for c in self.rules],
                "dataset_kind": self.dataset_kind, "weak": self.weak,
                "train": list(self.train_parts), "lr": self.lr, "seed": self.seed,
                "batch_size": self.batch_size, "weight_decay": self.weight_decay,
                "keep_threshold": self.keep_threshold, "roi_margin": self.roi_margin,
                "grid": self.grid_size, "prompt_options": self.prompt_options,
                **({"amp": "bf16"} if self.bf16 else {}),  # (only when on: fp32 configs as before)
                # compiled arithmetic rounds differently: a run of its own (eager: as before)
                **({"compile_loss": self.compile_loss} if self.compile_loss is not None else {})}

    # ----------------------------------------------------------- prepare
    def prepare(self, dataset, zero_shot: bool = True) -> List[Item]:
        """Views, prompts, embeddings and zero-shot masks of every image."""
        self._dataset = dataset
        self.embeddings = _Embeddings(self.psam, self.cache_dir,
                                      compute=compute_precision(self.device, self.bf16))
        items: List[Item] = []
        bar = _bar(range(len(dataset)), "prepare", self.progress)
        pending: List[Tuple[Item, torch.Tensor]] = []
        for i in bar:
            item, image = self._item(i, dataset[i])
            if item is None:
                continue
            items.append(item)
            if self.cached:
                pending.append((item, image))
                if len(pending) >= self.encode_batch:
                    self.embeddings.fill(pending, self._autocast)
                    pending = []
        self.embeddings.fill(pending, self._autocast)
        if self.compile_loss is not None and self.rules and items:
            # One region count for every batch: a compiled loss then sees one
            # shape (two with a short last batch) instead of recompiling per count.
            self.region_pad = max(it.n_regions for it in items)
        if zero_shot and self.need & set(rf.ZS_FACTS):
            self._zero_shot(items)
        return items

    def _item(self, index: int, sample) -> Tuple[Optional[Item], Optional[torch.Tensor]]:
        weak, image = sample["weak"], sample["image"]
        size = tuple(int(s) for s in image.shape[-2:])
        view = make_view(weak, size, self.dataset_kind, self.roi_margin)
        prompts = prompts_from_weak(weak, self.weak, image_size=size, **self.prompt_options)
        prompts, slots, n_regions = _slots(prompts, self.dataset_kind)
        if len(prompts) == 0:
            return None, None
        prompts = prompts.shifted(view.x0, view.y0)
        grid = rf.grid_for(view.size, self.grid_size)
        item = Item(index, str(sample["id"]), size, view, grid, prompts, slots, n_regions)
        vimg = view.crop(image)
        if self.need & set(rf.IMAGE_FACTS):
            item.image_grid = (rf.to_grid(vimg.float(), grid).round().clamp(0, 255)).to(torch.uint8)
        if self.need & set(rf.BOX_IMAGE_FACTS):
            boxes = torch.zeros(n_regions, 4)
            boxes[slots] = prompts.boxes.float()
            item.extra["bglike"] = rf.bglike_facts(vimg, boxes, grid)
        if self.need & set(rf.SCRIBBLE_FACTS):
            scr = view.crop(weak.scribble)
            f = rf.scribble_facts(scr, prompts.labels, grid)
            item.scribble = {k: v > 0 for k, v in f.items()}
        if self.need & set(rf.POINT_FACTS):
            pts = weak.points - torch.tensor([view.x0, view.y0], dtype=torch.float32)
            f = rf.point_facts(pts, weak.point_labels, prompts.labels, view.size, grid)
            item.scribble = {k: v > 0 for k, v in f.items()}
        return item, vimg

    def _embedding_batch(self, items: Sequence[Item]) -> torch.Tensor:
        if self.cached:
            return torch.stack([self.embeddings.get(it, self.device) for it in items]).float()
        imgs = [item.view.crop(self._dataset[item.index]["image"]) for item in items]
        xs = torch.cat([self.psam.preprocess(img)[0] for img in imgs])
        with self._autocast():
            return self.psam.embed(xs).float()

    @torch.no_grad()
    def _zero_shot(self, items: List[Item]) -> None:
        for batch in _chunks(items, 16):
            logits, _ = self.decode(batch)
            for it, lg in zip(batch, logits):
                p = torch.sigmoid(lg[it.slots]).cpu()
                it.zs = (p * 255).round().to(torch.uint8)

    def _autocast(self):
        if self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        import contextlib

        return contextlib.nullcontext()

    # ------------------------------------------------------------ forward
    def _resampler(self, n: int, dtype: torch.dtype) -> torch.Tensor:
        """[grid, n]: bilinear resampling of SAM's mask grid to the loss grid
        (antialiased when shrinking, as ``F.interpolate(antialias=True)``), as a
        matrix applied to rows and columns: interpolate's CUDA backward adds with
        atomics (nondeterministic), a matrix product's does not. Made once per
        (size, dtype, device)."""
        key = (n, dtype)
        r = self._resamplers.get(key)
        if r is None:
            g = self.grid_size
            # (a 2-row image: interpolate takes another path for a single row)
            eye = torch.eye(n, dtype=torch.float64).view(n, 1, 1, n).expand(n, 1, 2, n)
            r = torch.nn.functional.interpolate(eye, size=(2, g), mode="bilinear",
                                                align_corners=False, antialias=n > g)
            r = r[:, 0, 0, :].T.contiguous().to(device=self.device, dtype=dtype)
            self._resamplers[key] = r
        return r

    def decode(self, items: Sequence[Item], emb: Optional[torch.Tensor] = None,
               multimask: bool = False, native: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits [B, N, G, G] on the loss grid (``native``: SAM's own mask
        grid) and predicted IoU [B, N] of a batch (regions padded to the batch's
        largest count; padding logits are 0). ``multimask``: SAM's three masks per
        prompt, keeping the one of highest predicted IoU (single ambiguous points,
        as SamAutomaticMaskGenerator)."""
        if emb is None:
            emb = self._embedding_batch(items)
        idx = self._to_device(torch.cat([torch.full((len(it.prompts),), i, dtype=torch.long)
                                         for i, it in enumerate(items)]))
        sizes = [it.view.size for it in items]
        with self._autocast():
            if items[0].prompts.kind == "box":
                boxes = self._to_device(torch.cat([it.prompts.boxes for it in items]))
                low, iou = self.psam.decode(emb, boxes=boxes, orig_size=sizes, image_index=idx,
                                            multimask=multimask)
            else:
                k = max(it.prompts.points.shape[1] for it in items)
                pts, labs = [], []
                for it in items:
                    p, pl = it.prompts.points, it.prompts.point_labels
                    pad = k - p.shape[1]
                    pts.append(torch.cat([p, p.new_zeros(len(p), pad, 2)], 1))
                    labs.append(torch.cat([pl, pl.new_full((len(pl), pad), -1)], 1))
                low, iou = self.psam.decode(emb, points=self._to_device(torch.cat(pts)),
                                            point_labels=self._to_device(torch.cat(labs)),
                                            orig_size=sizes, image_index=idx, multimask=multimask)
        best = iou.argmax(1)
        pick = torch.arange(len(best), device=best.device)
        low, iou = low[pick, best].float(), iou[pick, best].float()
        if not native and low.shape[-1] != self.grid_size:
            r = self._resampler(low.shape[-1], low.dtype)
            low = torch.matmul(torch.matmul(r, low), r.T)
        n = max([it.n_regions for it in items] + [self.region_pad or 0])
        g = low.shape[-1]
        slots = self._to_device(torch.cat([it.slots for it in items]))
        logits = low.new_zeros(len(items), n, g, g).index_put((idx, slots), low)
        ious = iou.new_zeros(len(items), n).index_put((idx, slots), iou)
        return logits, ious

    def _static_facts(self, it: Item) -> Dict[str, torch.Tensor]:
        """The facts of one image that do not depend on SAM's output (boxes, colour
        affinities, the frozen model's labels...), built on first use and kept with
        the item: rebuilding them took ~7 ms of a ~100 ms CPU step (host memory:
        about 0.2 MB per VOC image at grid 64, growing with the grid's area). They
        are rebuilt when an input is replaced (a new ``zs`` tensor...); change an
        item's inputs by assignment, never in place."""
        # what the facts are made of: a later prepare step (the frozen model's
        # labels) or another rule set rebuilds them
        key = (tuple(sorted(self.need)), self.keep_threshold)
        parts = (it.zs, it.image_grid, it.scribble, it.extra.get("bglike"), it.prompts)
        hit = it.extra.get("_static_facts") if self.cache_facts else None
        if hit is not None and hit[0] == key and all(a is b for a, b in zip(hit[1], parts)):
            return hit[2]
        f: Dict[str, torch.Tensor] = {}
        shape = (it.n_regions,) + (it.grid.size,) * 2
        if self.need & set(rf.BOX_FACTS):
            boxes = torch.zeros(it.n_regions, 4)
            boxes[it.slots] = it.prompts.boxes.float()
            f.update(rf.box_facts(boxes, it.grid))
            if len(it.slots) < it.n_regions:  # an absent REFUGE box covers nothing
                absent = torch.ones(it.n_regions, dtype=torch.bool)
                absent[it.slots] = False
                for k in ("inbox", "rowin", "colin", "ellipse"):
                    f[k][absent] = 0
        if it.zs is not None and self.need & set(rf.ZS_FACTS):
            zs = torch.zeros(shape)
            zs[it.slots] = it.zs.float() / 255
            f.update(rf.zero_shot_facts(zs, self.keep_threshold))
        if it.scribble is not None:
            for k, v in it.scribble.items():
                t = torch.zeros(shape)
                t[it.slots] = v.float()
                f[k] = t
        if it.image_grid is not None:  # already on the grid: pass the view's cells only
            view = it.image_grid[:, :it.grid.rows, :it.grid.cols]
            if self.need & {"similar_right", "similar_down"}:
                f.update(rf.similarity_facts(view, it.grid))
            if "bright" in self.need:
                f.update(rf.brightness_facts(view, it.grid))
        if "bglike" in it.extra:
            f["bglike"] = it.extra["bglike"]
        if "mask_inward" in self.need:
            centres = torch.zeros(it.n_regions, 2)
            centres[it.slots] = rf.prompt_centres(it.prompts) * it.grid.scale
            f["_inward"] = rf.inward_index(centres, it.grid.size)
        f = {k: v for k, v in f.items() if k in self.need or k == "_inward"}
        if self.cache_facts:
            it.extra["_static_facts"] = (key, parts, f)
        return f

    def facts(self, items: Sequence[Item], logits: torch.Tensor) -> Tuple[Dict, Dict]:
        """Facts and domains of a batch, for the predicates the rule files declare."""
        dev = self.device
        n = logits.shape[1]
        per = [self._static_facts(it) for it in items]
        static = [k for k in self.need if k not in rf.MODEL_FACTS]
        missing = [k for k in static if any(k not in f for f in per)]
        if missing:
            raise ConfigError(f"cannot build facts {missing} for weak labels {self.weak!r}")
        facts = {k: self._to_device(v) for k, v in rf.stack_facts(per, static, n).items()}
        inward = None
        if "mask_inward" in self.need:
            inward = self._to_device(torch.stack([rf.pad_regions(f["_inward"], ("region",), n)
                                                  for f in per]))
        facts.update(rf.model_facts(logits, self.need, inward))
        valid = torch.zeros(len(items), n, dtype=torch.bool)
        for i, it in enumerate(items):
            valid[i, it.slots] = True
        valid = self._to_device(valid)
        doms = {}
        for c in self.rules:
            d = rf.domains([it.grid for it in items], [n] * len(items), n, c.binding, dev)
            reg = c.binding.sorts.get("region")
            if reg is not None:
                d[reg] = valid
            doms[c.path] = d
        return facts, doms

    def evaluate_rules(self, facts: Dict, doms: Dict, report: bool = False
                       ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Sum of the theories' losses, and per rule its weighted loss (training) or,
        with ``report``, its satisfaction [B] under :func:`report_semantics`.

        With ``compile_loss``, the training loss runs through ``torch.compile``
        (or is replayed as CUDA graphs) after a first eager call has validated
        the facts (compiled code and replays skip the value checks)."""
        if not report and self.compile_loss is not None and self._validated:
            if self._compiled is None:
                if self.compile_loss.get(CUDA_GRAPHS):
                    from fuzzylogic.graphs import GraphedFunction

                    self._compiled = GraphedFunction(self._evaluate)
                else:
                    self._compiled = torch.compile(self._evaluate, fullgraph=True, dynamic=False,
                                                   **self.compile_loss)
            return self._compiled(facts, doms)
        return self._evaluate(facts, doms, report)

    def _evaluate(self, facts: Dict, doms: Dict, report: bool = False
                  ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        total = None
        per_rule = {}
        for c in self.rules:
            bound = {k: facts[k] for k in c.binding.predicates}
            theory = c.report if report else c.theory
            ev = theory.evaluate(domains=doms[c.path], validate=not self._validated, **bound)
            total = ev.loss if total is None else total + ev.loss
            for name, shown in zip(c.rule_names, c.display):
                per_rule[shown] = (ev.truth[name] if report else ev.per_rule_loss[name]).detach()
        self._validated = True
        return total, per_rule

    @torch.no_grad()
    def satisfaction(self, items: Sequence[Item], batch_size: int = 16) -> Dict[str, float]:
        """Each rule's mean satisfaction over ``items`` (the training log's numbers)."""
        sums: Dict[str, float] = defaultdict(float)
        for batch in _chunks(list(items), batch_size):
            logits, _ = self.decode(batch)
            facts, doms = self.facts(batch, logits)
            _, truths = self.evaluate_rules(facts, doms, report=True)
            for k, v in truths.items():
                sums[k] += float(v.float().sum())
        return {k: v / max(len(items), 1) for k, v in sums.items()}

    # ------------------------------------------------------------- train
    def _sync(self) -> None:
        # Only to time each part on its own (benchmarks/bench_finetune.py): a sync
        # per part drains the GPU's queue, so training leaves it out.
        if self.time_parts and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # (the current device may be another)

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        return to_device(t, self.device)

    def loss_and_grad(self, items: Sequence[Item], logits: torch.Tensor, grad: bool = True
                      ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], Optional[torch.Tensor]]:
        """The rules' loss on a batch's mask logits (from :meth:`decode`; facts built
        here), each rule's weighted loss, and (``grad``) the loss's gradient with
        respect to the logits: what a training step back-propagates through the
        decoder. Adds the times of the "facts" and "logic" parts to ``timing``."""
        t0 = time.perf_counter()
        leaf = logits.detach().requires_grad_(grad)
        facts, doms = self.facts(items, leaf)
        self._sync()
        t1 = time.perf_counter()
        loss, rule_loss = self.evaluate_rules(facts, doms)
        g = torch.autograd.grad(loss, leaf)[0] if grad else None
        self._sync()
        self.timing["facts"] += t1 - t0
        self.timing["logic"] += time.perf_counter() - t1
        return loss, rule_loss, g

    def _step(self, items: Sequence[Item], opt: Optional[torch.optim.Optimizer]):
        """One optimisation step: the loss and each rule's weighted loss, as tensors
        on the device (reading them is left to the caller: no host sync here). The
        parts of the step add their times to ``timing``; on CUDA they are each
        part's own only with ``time_parts`` (else the host's launch times)."""
        t0 = time.perf_counter()
        logits, _ = self.decode(items)
        self._sync()
        self.timing["decode"] += time.perf_counter() - t0
        loss, rule_loss, grad = self.loss_and_grad(items, logits, grad=opt is not None)
        t1 = time.perf_counter()
        if opt is not None:
            opt.zero_grad(set_to_none=True)
            logits.backward(grad)
            opt.step()
        self._sync()
        self.timing["backward_step"] += time.perf_counter() - t1
        self.timing["steps"] += 1
        return loss.detach(), rule_loss

    def _epoch(self, items: List[Item], opt, epoch: int, desc: str) -> Dict:
        g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        order = torch.randperm(len(items), generator=g).tolist()
        # Sums stay on the device, in float64: the same numbers as Python floats,
        # read once at the end (on CUDA the bar's loss only every 10th step).
        loss_sum, rule_sum, count = torch.zeros((), dtype=torch.float64, device=self.device), {}, 0
        t0 = time.perf_counter()
        bar = _bar(list(_chunks([items[i] for i in order], self.batch_size)), desc, self.progress)
        for i, batch in enumerate(bar):
            loss, rule_loss = self._step(batch, opt)
            loss_sum = loss_sum + loss.double() * len(batch)  # (exact from float32)
            count += len(batch)
            for k, v in rule_loss.items():
                rule_sum[k] = rule_sum.get(k, 0.0) + v.double() * len(batch)
            if hasattr(bar, "set_postfix") and (self.device.type != "cuda" or i % 10 == 0):
                bar.set_postfix(loss=f"{float(loss):.4g}")
        loss = float(loss_sum) / max(count, 1)  # (waits for the epoch's queued steps)
        rule_loss = {k: float(v) / max(count, 1) for k, v in rule_sum.items()}
        seconds = time.perf_counter() - t0
        return {"epoch": epoch, "loss": loss, "rule_loss": rule_loss,
                "rules": self.satisfaction(items), "seconds": seconds}

    def optimizer(self) -> torch.optim.Optimizer:
        """AdamW over the trainable parameters, as :meth:`fit` steps it."""
        # foreach: the per-tensor loop's arithmetic, batched (bit-identical weights;
        # 8 -> 5 ms a step for the embedded decoder on this CPU; CUDA's default)
        return torch.optim.AdamW(self.trainable_parameters(), lr=self.lr,
                                 weight_decay=self.weight_decay, foreach=True)

    def fit(self, dataset, items: Optional[List[Item]] = None) -> Dict:
        """Fine-tune on ``dataset`` (weak labels only); returns the history."""
        from .io import load_optimizer_state, load_torch, save_json, save_torch

        if not self.rules:
            raise ConfigError("fit needs at least one rule file")
        torch.manual_seed(self.seed)
        items = self.prepare(dataset) if items is None else items
        if not items:
            raise ConfigError("no training image has a prompt (no weak label of kind "
                              f"{self.weak!r})")
        self.items = items
        opt = self.optimizer()
        history = {"config": self.config(), "epochs": [], "initial": None}
        start = 0
        ckpt_path = None if self.out_dir is None else self.out_dir / CHECKPOINT
        key = self.run_key(items) if ckpt_path is not None else None
        if ckpt_path is not None and ckpt_path.is_file():
            ck = load_torch(ckpt_path)
            why = None
            if ck.get("config") != json.loads(json.dumps(self.config())):
                why = "other settings"
            elif ck.get("run_key") != key:
                why = "other images, weak labels or starting weights"
            elif int(ck["epoch"]) + 1 > self.epochs:
                why = f"{int(ck['epoch']) + 1} epochs, more than the {self.epochs} asked for"
            if why is None:
                missing = self.sam.load_state_dict(ck["trainable"], strict=False)
                if missing.unexpected_keys:
                    raise CheckpointError(f"{ckpt_path}: unexpected weights "
                                          f"{missing.unexpected_keys[:3]}")
                load_optimizer_state(opt, ck["optimizer"])
                history = json.loads(ck["history"])
                start = int(ck["epoch"]) + 1
            else:
                # A rerun with changed settings or data starts over (and replaces the
                # checkpoint at its first epoch): resuming would train on from weights
                # that belong to another run.
                warnings.warn(f"{ckpt_path}: a checkpoint of {why}; training from the start")
        self.sam.train(False)  # SAM has no dropout/batch-norm; eval keeps it deterministic
        if history["initial"] is None:
            history["initial"] = {"epoch": -1, "rules": self.satisfaction(items)}
            _log_epoch(history["initial"], self.progress)
        for epoch in range(start, self.epochs):
            rec = self._epoch(items, opt, epoch, f"epoch {epoch + 1}/{self.epochs}")
            if not math.isfinite(rec["loss"]):
                # (before this epoch's checkpoint: the last one saved holds finite weights)
                raise DivergenceError(f"logic fine-tuning diverged: loss {rec['loss']} in epoch "
                                      f"{epoch + 1}; lower finetune.lr (now {self.lr:g}) and rerun")
            history["epochs"].append(rec)
            _log_epoch(rec, self.progress)
            if self.out_dir is not None:
                save_torch({"config": self.config(), "run_key": key, "epoch": epoch,
                            "trainable": self._trainable_state(),
                            "optimizer": opt.state_dict(), "history": json.dumps(history)},
                           ckpt_path)
                save_json(history, self.out_dir / HISTORY)
        for p in self.sam.parameters():
            p.requires_grad_(False)
        # on CUDA without time_parts the parts' times are the host's (launches)
        history["timing"] = {**self.timing,
                             "parts_synchronised": self.time_parts or self.device.type != "cuda"}
        if self.out_dir is not None:
            save_json(history, self.out_dir / HISTORY)
        return history

    def run_key(self, items: Sequence[Item]) -> str:
        """A hash of what a run trains on beyond :meth:`config`: the starting
        weights (every parameter and buffer of SAM) and each image's id, view,
        prompts, scribble/point facts and appearance grid. A checkpoint resumes
        only a run with the same key."""
        from .sam.build import model_fingerprint, tensor_bytes

        h = hashlib.blake2b(digest_size=16)
        h.update(model_fingerprint(self.sam).encode())

        def add(t: Optional[torch.Tensor]) -> None:
            if t is None:
                h.update(b"-")
                return
            h.update(f"{tuple(t.shape)}{t.dtype}".encode())
            h.update(tensor_bytes(t))

        for it in items:
            h.update(f"|{it.id}|{it.view.key()}|{it.prompts.kind}|".encode())
            for t in (it.prompts.labels, it.prompts.boxes, it.prompts.points,
                      it.prompts.point_labels, it.slots, it.image_grid):
                add(t)
            for k in sorted(it.scribble or {}):
                h.update(k.encode())
                add(it.scribble[k])
        return h.hexdigest()

    # ----------------------------------------------------------- predict
    @torch.no_grad()
    def predict(self, items: Sequence[Item], batch_size: int = 8):
        """Yield ``(item, probs [n, vh, vw], iou [n])`` at the view's resolution."""
        for batch in _chunks(list(items), batch_size):
            logits, ious = self.decode(batch, native=True)
            for it, lg, iou in zip(batch, logits, ious):
                low = lg[it.slots][:, None]
                up = self.psam.postprocess(low, self.psam.input_size(it.view.size), it.view.size)
                yield it, torch.sigmoid(up[:, 0]).cpu(), iou[it.slots].cpu()


# ---------------------------------------------------------------- helpers
def _chunks(seq, n):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _bar(it, desc: str, enabled: bool):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, leave=False, dynamic_ncols=True)


def _log_epoch(rec: Dict, enabled: bool) -> None:
    """One line per epoch: loss and each rule's satisfaction (the training log)."""
    if not enabled:
        return
    from tqdm.auto import tqdm

    sats = "  ".join(f"{k}={v:.3f}" for k, v in rec["rules"].items())
    if rec["epoch"] < 0:
        tqdm.write(f"[initial] satisfaction: {sats}")
    else:
        tqdm.write(f"[epoch {rec['epoch'] + 1}] loss={rec['loss']:.4f} ({rec['seconds']:.1f}s) "
                   f"satisfaction: {sats}")
