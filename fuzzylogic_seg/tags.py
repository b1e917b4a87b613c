"""Tags only: SAM's automatic proposals and a small class head trained under rules.

Image-level tags say which classes occur, not where. So (the issue's "one
sound design"):

1. **Proposals.** The frozen SAM is prompted with a regular grid of single
   points (``n_per_side`` squared, as ``SamAutomaticMaskGenerator``), three
   masks per point, the one of highest predicted IoU kept; masks with low
   predicted IoU or stability are dropped and near-duplicates removed by mask
   non-maximum suppression (IoU > ``nms``).
2. **Features.** Each proposal is described by its appearance, computed on
   the full-resolution image under the proposal's mask
   (:func:`appearance_features`): the mean and spread of its colour, its
   texture (mean absolute grey-level gradient in four orientations at three
   scales, in log), and its shape (square root of its area share, log aspect
   of its bounding box, how much of that box it fills, the share of the image
   frame it covers). Features are standardised over the training set; no
   label is used. ``tag_features="appearance+sam"`` appends SAM's image embedding
   averaged under the mask (:func:`features`); on the embedded SAM that
   lowered dev-set mIoU, so it is not the default.
3. **Class head.** A linear layer gives each proposal a softmax over the
   classes (background included). It is trained with the loss compiled from
   the tag rules (``examples/rules/tags.rules``: a tagged class occurs in some
   proposal, an untagged class in none, background occurs, and proposals
   spanning the image frame tend to be background); the facts are
   :data:`fuzzylogic_seg.rule_facts.TAG_VOCABULARY`.
4. **Pseudo-labels.** Each proposal takes the most probable class among
   background and the image's tags; the masks are composed by
   :func:`fuzzylogic_seg.compose.compose` with score = SAM's predicted IoU
   times that class probability: the mask says where, the class confidence
   decides which of two overlapping proposals wins (weighting the mask by
   it instead made the labels depend on how sharp the head had become).

Zero-shot (no learning): a proposal that reaches the image frame is
background, any other takes the image's tag when it has exactly one; with
several tags its pixels are 255.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from . import rule_facts as rf
from .compose import compose
from .errors import ConfigError, DivergenceError


@dataclass
class ImageProposals:
    item: object                 # finetune.Item (full view, grid prompts)
    logits: torch.Tensor         # [M, G, G] low-res mask logits (float16)
    iou: torch.Tensor            # [M] SAM's predicted IoU
    feats: torch.Tensor          # [M, D]
    border: torch.Tensor         # [M] share of the frame the proposal covers
    large: torch.Tensor          # [M] share of the image the proposal covers
    tags: torch.Tensor           # [C] bool


def stability(logits: torch.Tensor, offset: float = 1.0) -> torch.Tensor:
    """SAM's stability score: IoU of the mask thresholded at +offset and -offset."""
    hi = (logits > offset).flatten(1).sum(1).float()
    lo = (logits > -offset).flatten(1).sum(1).float()
    return hi / lo.clamp_min(1)


def mask_nms(masks: torch.Tensor, scores: torch.Tensor, thresh: float) -> torch.Tensor:
    """Indices kept by greedy non-maximum suppression on binary masks [M, ...]."""
    flat = masks.flatten(1).float()
    inter = flat @ flat.T
    area = flat.sum(1)
    iou = inter / (area[:, None] + area[None, :] - inter).clamp_min(1)
    table = iou.tolist()  # one copy to the host, not one per comparison (a sync each on a GPU)
    keep: List[int] = []
    # stable: equal scores (bf16 predicted IoUs under AMP tie often) keep index order
    for i in torch.argsort(scores, descending=True, stable=True).tolist():
        if all(table[i][j] <= thresh for j in keep):
            keep.append(i)
    return torch.tensor(keep, dtype=torch.long)


@torch.no_grad()
def make_proposals(tuner, items, iou_thresh: float = 0.0, stability_thresh: float = 0.0,
                   nms: float = 0.7, max_proposals: int = 32,
                   features_kind: str = "appearance") -> List[ImageProposals]:
    """Proposals and features of every item (the tuner has prepared embeddings;
    ``features_kind=None``: no features, as zero-shot needs none)."""
    if features_kind is not None and features_kind not in FEATURE_KINDS:
        raise ConfigError(f"unknown tag features {features_kind!r}; choose one of "
                          f"{', '.join(FEATURE_KINDS)}")
    out = []
    for it in items:
        logits, iou = tuner.decode([it], multimask=True)
        lg, sc = logits[0, :len(it.prompts)], iou[0, :len(it.prompts)]
        g = it.grid
        lg[:, g.rows:, :] = -20.0  # padding is never part of a proposal
        lg[:, :, g.cols:] = -20.0
        ok = (sc >= iou_thresh) & (stability(lg) >= stability_thresh) & ((lg > 0).flatten(1).any(1))
        if not bool(ok.any()):  # keep the single best rather than nothing
            ok = sc == sc.max()
        lg, sc = lg[ok], sc[ok]
        keep = mask_nms(lg > 0, sc, nms)[:max_proposals]
        lg, sc = lg[keep], sc[keep]
        on = (lg > 0).float()
        frame = torch.zeros(g.size, g.size, dtype=torch.bool, device=on.device)
        frame[[0, g.rows - 1], :g.cols] = True
        frame[:g.rows, [0, g.cols - 1]] = True
        border = (on * frame).flatten(1).sum(1) / frame.sum()
        large = on.flatten(1).sum(1) / float(g.rows * g.cols)
        sample = tuner._dataset[it.index]
        weak = sample["weak"]
        if weak.tags is None:
            raise ConfigError(f"image {it.id!r} has no tags")
        if features_kind is None:
            feats = torch.zeros(len(sc), 0)
        else:
            image = it.view.crop(sample["image"])
            feats = appearance_features(image, upsample_logits(tuner, it, lg) > 0, border.cpu())
        if features_kind == "appearance+sam":
            emb = tuner.embeddings.get(it, tuner.device).float()
            feats = torch.cat([feats, features(emb, torch.sigmoid(lg), None).cpu()], 1)
        out.append(ImageProposals(it, lg.half().cpu(), sc.cpu(), feats.cpu(), border.cpu(),
                                  large.cpu(), weak.tags.bool().cpu()))
    return out


FEATURE_KINDS = ("appearance", "appearance+sam")
APPEARANCE_DIM = 22


def upsample_logits(tuner, item, lg: torch.Tensor) -> torch.Tensor:
    """[M, G, G] grid logits -> [M, vh, vw] logits over the item's view (on the CPU)."""
    lg = lg.float()[:, None].to(tuner.device)
    return tuner.psam.postprocess(lg, tuner.psam.input_size(item.view.size),
                                  item.view.size)[:, 0].cpu()


def texture_maps(image: torch.Tensor, scales: Sequence[int] = (1, 2, 4)) -> torch.Tensor:
    """[4 * len(scales), H, W]: absolute grey-level differences along x, y and the two
    diagonals, on the image averaged over ``s`` x ``s`` blocks for each scale ``s``
    (brought back to full size)."""
    grey = (image.float() / 255.0).mean(0)[None, None]
    h, w = grey.shape[-2:]
    maps = []
    for s in scales:
        g = F.avg_pool2d(grey, s, s, ceil_mode=True) if s > 1 else grey
        dx = F.pad(g[..., :, 1:] - g[..., :, :-1], (0, 1, 0, 0), mode="replicate")
        dy = F.pad(g[..., 1:, :] - g[..., :-1, :], (0, 0, 0, 1), mode="replicate")
        m = torch.cat([dx.abs(), dy.abs(), (dx + dy).abs() / 2 ** 0.5,
                       (dx - dy).abs() / 2 ** 0.5], 1)
        if s > 1:
            m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
        maps.append(m[0])
    return torch.cat(maps, 0)


def appearance_features(image: torch.Tensor, masks: torch.Tensor, border: torch.Tensor
                        ) -> torch.Tensor:
    """[M, 22] appearance of each binary mask [M, H, W] on the image uint8 [3, H, W]:
    colour mean (3) and standard deviation (3) in [0, 1]; log(1e-3 + mean texture
    energy) of :func:`texture_maps` (12); sqrt of the area share, log of the bounding
    box's height / width, the share of that box the mask fills, and ``border`` (4)."""
    m = masks.float()
    h, w = m.shape[-2:]
    wts = m.flatten(1)
    den = wts.sum(1, keepdim=True).clamp_min(1)
    px = (image.float() / 255.0).flatten(1)
    mean = wts @ px.T / den
    std = ((wts @ (px.T ** 2)) / den - mean ** 2).clamp_min(0).sqrt()
    tex = torch.log(wts @ texture_maps(image).flatten(1).T / den + 1e-3)
    rows = m.amax(2).sum(1)
    cols = m.amax(1).sum(1)
    area = wts.sum(1)
    shape = torch.stack([(area / (h * w)).sqrt(), torch.log((rows + 1) / (cols + 1)),
                         area / (rows * cols).clamp_min(1), border.float()], 1)
    return torch.cat([mean, std, tex, shape], 1)


def features(emb: torch.Tensor, probs: torch.Tensor, image_grid: Optional[torch.Tensor]
             ) -> torch.Tensor:
    """[M, C + 6]: embedding averaged under each mask, colour mean and std under it."""
    c, h, w = emb.shape
    wts = F.adaptive_avg_pool2d(probs[None], (h, w))[0].flatten(1)  # [M, h*w]
    f = wts @ emb.flatten(1).T / wts.sum(1, keepdim=True).clamp_min(1e-6)
    if image_grid is None:
        return f
    img = image_grid.float().to(probs.device).flatten(1) / 255.0  # [3, G*G]
    p = probs.flatten(1)
    den = p.sum(1, keepdim=True).clamp_min(1e-6)
    mean = p @ img.T / den
    var = (p @ (img.T ** 2)) / den - mean ** 2
    return torch.cat([f, mean, var.clamp_min(0).sqrt()], 1)


class ClassHead(torch.nn.Module):
    """Standardised features -> class logits (a linear layer)."""

    def __init__(self, dim: int, num_classes: int, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.linear = torch.nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x - self.mean) / self.std)


def _tag_facts(props: Sequence[ImageProposals], head: ClassHead, num_classes: int, device):
    m = max(len(p.iou) for p in props)
    d = props[0].feats.shape[1]
    feats = torch.zeros(len(props), m, d, device=device)
    valid = torch.zeros(len(props), m, dtype=torch.bool, device=device)
    border = torch.zeros(len(props), m, device=device)
    large = torch.zeros(len(props), m, device=device)
    tagged = torch.zeros(len(props), num_classes, device=device)
    for i, p in enumerate(props):
        k = len(p.iou)
        feats[i, :k] = p.feats.to(device)
        valid[i, :k] = True
        border[i, :k] = p.border.to(device)
        large[i, :k] = p.large.to(device)
        tagged[i, :len(p.tags)] = p.tags.float().to(device)
    tagged[:, 0] = 0
    absent = 1 - tagged
    absent[:, 0] = 0  # background is never "untagged"
    facts = {"cls": head(feats), "tagged": tagged, "absent": absent, "border": border,
             "large": large}
    return facts, valid


def _evaluate(rules, props, head, num_classes, device, report: bool, validate: bool):
    facts, valid = _tag_facts(props, head, num_classes, device)
    loss, per_rule = 0, {}
    for c in rules:
        dom = {c.binding.sorts["proposal"]: valid} if "proposal" in c.binding.sorts else {}
        theory = c.report if report else c.theory
        ev = theory.evaluate(domains=dom, validate=validate,
                             **{k: facts[k] for k in c.binding.predicates})
        loss = loss + ev.loss
        for name, shown in zip(c.rule_names, c.display):
            per_rule[shown] = ev.truth[name].detach()
    return loss, per_rule


@torch.no_grad()
def head_satisfaction(rules, props, head, num_classes, device, batch_size: int = 32) -> Dict:
    """Each tag rule's mean satisfaction (finetune.report_semantics) over the images."""
    sums: Dict[str, float] = {}
    for s in range(0, len(props), batch_size):
        _, truths = _evaluate(rules, props[s:s + batch_size], head, num_classes, device, True, False)
        for k, v in truths.items():
            sums[k] = sums.get(k, 0.0) + float(v.sum())
    return {k: v / max(len(props), 1) for k, v in sums.items()}


def train_head(props: List[ImageProposals], rules, num_classes: int, epochs: int, seed: int,
               device, lr: float = 1e-2, batch_size: int = 8, progress: bool = True,
               log: Optional[Callable[[str], None]] = None) -> Tuple[ClassHead, Dict]:
    """Fit the class head under the compiled tag rules; returns it and the history
    (per epoch: loss and each rule's satisfaction; "initial": before training)."""
    torch.manual_seed(seed)
    allf = torch.cat([p.feats for p in props])
    head = ClassHead(allf.shape[1], num_classes, allf.mean(0), allf.std(0).clamp_min(1e-4)).to(device)
    opt = torch.optim.Adam(head.parameters(), lr=lr, foreach=True)  # same arithmetic, batched
    history = {"initial": {"epoch": -1, "rules": head_satisfaction(rules, props, head, num_classes,
                                                                    device)}, "epochs": []}
    for epoch in range(epochs):
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        order = torch.randperm(len(props), generator=g).tolist()
        tot, n = 0.0, 0
        for s in range(0, len(order), batch_size):
            batch = [props[i] for i in order[s:s + batch_size]]
            loss, _ = _evaluate(rules, batch, head, num_classes, device, False,
                                epoch == 0 and s == 0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(batch)
            n += len(batch)
        if not math.isfinite(tot):
            raise DivergenceError(f"the tags class head diverged: loss {tot / n} in epoch "
                                  f"{epoch + 1}; lower finetune.head_lr (now {lr:g}) and rerun")
        rec = {"epoch": epoch, "loss": tot / n,
               "rules": head_satisfaction(rules, props, head, num_classes, device)}
        history["epochs"].append(rec)
        if log is not None:
            log(f"[epoch {epoch + 1}] loss={rec['loss']:.4f}  satisfaction: " +
                "  ".join(f"{k}={v:.3f}" for k, v in rec["rules"].items()))
    return head, history


@torch.no_grad()
def proposal_classes(p: ImageProposals, head: Optional[ClassHead], device) -> Tuple[torch.Tensor, torch.Tensor]:
    """(class [M], confidence [M]) of each proposal among background and the image's tags.

    Without a head (zero-shot): frame-reaching proposals are background, the
    others take the single tag (several tags: class -1 = unknown)."""
    tags = torch.nonzero(p.tags).flatten()
    tags = tags[tags > 0]
    if head is None:
        cls = torch.full((len(p.iou),), -1, dtype=torch.long)
        if len(tags) == 1:
            cls[:] = int(tags[0])
        cls[p.border > 0] = 0
        return cls, torch.ones(len(p.iou))
    logits = head(p.feats.to(device)).cpu()
    allowed = torch.zeros(logits.shape[1], dtype=torch.bool)
    allowed[0] = True
    allowed[tags] = True
    probs = torch.softmax(logits.masked_fill(~allowed, float("-inf")), 1)
    conf, cls = probs.max(1)
    return cls, conf


def tag_label_map(p: ImageProposals, cls: torch.Tensor, conf: torch.Tensor, tuner,
                  threshold: float) -> torch.Tensor:
    """Compose one image's label map from its classed proposals."""
    it = p.item
    known = cls >= 0
    if not bool(known.any()):
        return torch.full(it.size, 255, dtype=torch.long)
    probs = torch.sigmoid(upsample_logits(tuner, it, p.logits[known]))
    unknown = ~known
    out = compose(probs, cls[known], p.iou[known] * conf[known], threshold)
    if bool(unknown.any()):  # proposals of unknown class: their confident pixels are 255
        up_u = upsample_logits(tuner, it, p.logits[unknown])
        covered = (torch.sigmoid(up_u) > threshold).any(0)
        mine = (probs > threshold).any(0) if len(probs) else torch.zeros_like(covered)
        out[covered & ~mine] = 255
    return out


# The finetune options that tag_pseudo_labels takes (besides rules, epochs, amp).
TAG_OPTIONS = ("n_per_side", "head_lr", "head_epochs", "max_proposals", "tag_features")


def tag_pseudo_labels(method: str, dataset, sam, *, threshold: float, dataset_kind: str,
                      rules, epochs: int, seed: int, device, progress: bool,
                      write: Callable[[torch.Tensor, str], None], cache_dir=None,
                      n_per_side: int = 8, head_lr: float = 1e-2,
                      head_epochs: Optional[int] = None, max_proposals: int = 32,
                      tag_features: str = "appearance", amp: Optional[bool] = None
                      ) -> Tuple[List[str], Dict]:
    """Pseudo-labels from tags (zero-shot or logic); see the module doc. ``amp``: as
    :class:`~fuzzylogic_seg.finetune.LogicFineTuner` (None: on CUDA only)."""
    from .finetune import LogicFineTuner, load_rules

    if dataset_kind != "voc":
        raise ConfigError("tags need a multi-class data set (voc)")
    if sam is None:
        raise ConfigError(f"method {method!r} needs a SAM model")
    compiled = paths = None
    if method == "logic":  # (a rule file that cannot bind stops here, before the proposals)
        from .finetune import default_rules

        paths = rules or [default_rules("voc", "tags")]
        compiled = load_rules(paths, vocabulary=rf.TAG_VOCABULARY)
    tuner = LogicFineTuner(sam, rules=[], dataset_kind=dataset_kind, weak="tags", epochs=0,
                           seed=seed, device=device, progress=progress, cache_dir=cache_dir,
                           prompt_options={"n_per_side": n_per_side}, amp=amp)
    items = tuner.prepare(dataset, zero_shot=False)
    props = make_proposals(tuner, items, max_proposals=max_proposals,
                           features_kind=tag_features if method == "logic" else None)
    num_classes = int(props[0].tags.numel()) if props else getattr(dataset, "num_classes", 21)
    extra: Dict = {"proposals_per_image": float(sum(len(p.iou) for p in props)) / max(len(props), 1)}
    if method == "logic":
        extra["tag_features"] = tag_features
    head = None
    if method == "logic":
        log = None
        if progress:
            from tqdm.auto import tqdm

            log = tqdm.write
        head, hist = train_head(props, compiled, num_classes, head_epochs or epochs, seed,
                                tuner.device, lr=head_lr, progress=progress, log=log)
        extra["history"] = {"initial": hist["initial"],
                            "final": hist["epochs"][-1] if hist["epochs"] else None,
                            "epochs": len(hist["epochs"])}
        extra["rules"] = [str(p) for p in paths]
    ids = []
    for p in props:
        cls, conf = proposal_classes(p, head, tuner.device)
        write(tag_label_map(p, cls, conf, tuner, threshold), p.item.id)
        ids.append(p.item.id)
    return ids, extra
