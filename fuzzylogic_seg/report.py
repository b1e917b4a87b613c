"""The run report: Markdown with PNG figures (matplotlib, Agg backend).

:func:`render` takes plain data (the metrics of ``metrics.json``, training
histories, a few overlay rows) and writes ``report.md`` with:

- a table of the numbers: pseudo-label quality (train split) per method, and
  every student (val split) beside the full-supervision ceiling;
- training curves: each student's loss (and rule loss), and the logic
  fine-tuning's loss and per-rule satisfaction per epoch;
- overlays: image / weak label / zero-shot SAM / logic SAM / student /
  ground truth for a few images.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .io import atomic_path, voc_palette

# Headline metrics per data set: (column title, key in a metrics dict, higher is better).
HEADLINE: Dict[str, List[Tuple[str, str, bool]]] = {
    "voc": [("mIoU", "miou", True)],
    "refuge": [("disc Dice", "dice_disc", True), ("cup Dice", "dice_cup", True),
               ("vCDR MAE", "vcdr_mae", False)],
}
METHOD_TITLES = {
    "weak-mask": "weak label painted as mask",
    "zero-shot": "zero-shot SAM",
    "logic": "logic fine-tuned SAM",
    "gt": "ground truth (ceiling)",
}
REFUGE_COLOURS = np.array([[0, 0, 0], [255, 214, 0], [230, 40, 40]], dtype=np.uint8)  # bg, rim, cup
UNSURE_GREY = 200  # the overlay colour of label 255 (unsure pseudo-label or VOC void)


def variant_title(variant: str) -> str:
    base, _, extra = variant.partition("+")
    title = METHOD_TITLES.get(base, base)
    return title + (" + student rules" if extra == "rules" else "")


# Row order of the tables: the baseline first, the ceiling last (metrics.json sorts its keys).
ORDER = ("weak-mask", "zero-shot", "logic", "weak-mask+rules", "zero-shot+rules", "logic+rules",
         "gt+rules", "gt")


def _ordered(d: Dict[str, Any]) -> List[Tuple[str, Any]]:
    rank = {k: i for i, k in enumerate(ORDER)}
    return sorted(d.items(), key=lambda kv: (rank.get(kv[0], len(ORDER)), kv[0]))


def _fmt(x: Optional[float]) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


# --------------------------------------------------------------------- tables
def results_table(metrics: Dict[str, Any]) -> str:
    """The Markdown table of a run's metrics.json (also printed by `fuzzyseg run`)."""
    kind = metrics["dataset"]
    cols = HEADLINE[kind]
    ceiling = (metrics.get("students") or {}).get("gt")
    head = "| | " + " | ".join(c[0] for c in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for method, m in _ordered(metrics.get("pseudo_labels") or {}):
        lines.append(f"| pseudo-labels (train): {METHOD_TITLES.get(method, method)} | "
                     + " | ".join(_fmt(m.get(k)) for _, k, _ in cols) + " |")
    for variant, m in _ordered(metrics.get("students") or {}):
        cells = []
        for _, k, higher in cols:
            cell = _fmt(m.get(k))
            if ceiling and variant != "gt" and higher and ceiling.get(k):
                cell += f" ({100 * m.get(k, float('nan')) / ceiling[k]:.0f}%)"
            cells.append(cell)
        lines.append(f"| student (val) on {variant_title(variant)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seeds_table(per_seed: Sequence[Dict[str, Any]]) -> str:
    """Mean ± std over seeds of each row of :func:`results_table` (students and pseudo-labels)."""
    kind = per_seed[0]["dataset"]
    cols = HEADLINE[kind]
    rows: Dict[Tuple[str, str], List[Dict[str, float]]] = {}
    for m in per_seed:
        for method, v in _ordered(m.get("pseudo_labels") or {}):
            rows.setdefault(("pseudo-labels (train)", METHOD_TITLES.get(method, method)), []).append(v)
        for variant, v in _ordered(m.get("students") or {}):
            rows.setdefault(("student (val)", variant_title(variant)), []).append(v)
    lines = ["| | " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for (what, title), vals in rows.items():
        cells = []
        for _, k, _ in cols:
            xs = np.array([v[k] for v in vals if v.get(k) is not None], dtype=float)
            cells.append("–" if xs.size == 0 else f"{xs.mean():.3f} ± {xs.std(ddof=1) if xs.size > 1 else 0:.3f}")
        lines.append(f"| {what}: {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -------------------------------------------------------------------- colours
def _palette(palette: Optional[Sequence[int]]) -> np.ndarray:
    """[256, 3] colours: a labelmap's palette (ClassList.palette()) or VOC's."""
    return np.array(palette if palette is not None else voc_palette(), dtype=np.uint8).reshape(256, 3)


def colourise(labels: np.ndarray, kind: str, palette: Optional[Sequence[int]] = None
              ) -> Tuple[np.ndarray, np.ndarray]:
    """Label map -> (RGB colours [H, W, 3], alpha [H, W]); background clear, 255 grey.
    ``palette``: 256 flattened RGB (a labelmap's colours; default VOC's)."""
    labels = np.asarray(labels).astype(np.int64)
    if kind == "refuge":
        rgb = REFUGE_COLOURS[np.clip(labels, 0, 2)]
    else:
        rgb = _palette(palette)[np.clip(labels, 0, 255)]
    alpha = np.where(labels == 0, 0.0, 0.55)
    rgb = np.where((labels == 255)[..., None], np.uint8(UNSURE_GREY), rgb)
    alpha = np.where(labels == 255, 0.35, alpha)
    return rgb, alpha


def blend(image: np.ndarray, labels: Optional[np.ndarray], kind: str,
          palette: Optional[Sequence[int]] = None) -> np.ndarray:
    """uint8 [H, W, 3] image with the label map laid over it."""
    img = image.astype(np.float32)
    if labels is None:
        return image
    rgb, alpha = colourise(labels, kind, palette)
    out = img * (1 - alpha[..., None]) + rgb.astype(np.float32) * alpha[..., None]
    return out.clip(0, 255).astype(np.uint8)


def _class_colour(c: int, kind: str, palette: Optional[Sequence[int]] = None
                  ) -> Tuple[float, float, float]:
    if kind == "refuge":
        rgb = REFUGE_COLOURS[min(max(int(c), 0), 2)] if c else np.array([255, 255, 255])
    else:
        rgb = _palette(palette)[int(c)] if c else np.array([255, 255, 255])
    return tuple(float(v) / 255 for v in rgb)


def draw_weak(ax, image: np.ndarray, weak: Any, kind: str, palette: Optional[Sequence[int]] = None
              ) -> None:
    """Weak labels over the image: boxes, scribbles, points (plot_overlays names the tags
    under the panel)."""
    from matplotlib.patches import Rectangle

    img = image
    scribble = getattr(weak, "scribble", None)
    if scribble is not None:
        s = np.asarray(scribble)
        rgb, _ = colourise(s, kind, palette)
        bg = s == 0
        rgb[bg] = 255
        mask = s != 255
        img = image.copy()
        img[mask] = rgb[mask]
    ax.imshow(img)
    boxes = getattr(weak, "boxes", None)
    labels = getattr(weak, "box_labels", None)
    if boxes is not None:
        for b, c in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(labels).reshape(-1)):
            x0, y0, x1, y1 = (float(v) for v in b)
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                   edgecolor=_class_colour(int(c), kind, palette), linewidth=1.2))
    pts = getattr(weak, "points", None)
    if pts is not None and len(pts):
        pl = np.asarray(getattr(weak, "point_labels", np.ones(len(pts))))
        for (x, y), c in zip(np.asarray(pts).reshape(-1, 2), pl):
            ax.plot([x], [y], marker="x" if int(c) == 0 else "o", markersize=4,
                    color=_class_colour(int(c), kind, palette), markeredgecolor="black", markeredgewidth=0.5)


# --------------------------------------------------------------------- figures
def _savefig(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_student_curves(histories: Dict[str, List[Dict[str, Any]]], path: Path) -> Optional[Path]:
    """Loss per epoch of every student; rule loss and per-rule satisfaction for +rules variants."""
    if not histories:
        return None
    plt = _plt()
    with_rules = {v: h for v, h in histories.items() if any(r.get("rules") for r in h)}
    ncols = 2 if with_rules else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols + (1.6 if with_rules else 0), 3.6),
                             squeeze=False)
    ax = axes[0, 0]
    for v, h in histories.items():
        ax.plot([r["epoch"] for r in h], [r.get("ce", r["loss"]) for r in h], label=variant_title(v))
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy (train, log scale)")
    ax.set_yscale("log")  # the curves differ by small amounts late in training
    ax.set_title("students")
    ax.legend(fontsize=7)
    if with_rules:
        ax = axes[0, 1]
        i = 0
        for v, h in with_rules.items():
            names = sorted({k for r in h for k in (r.get("rules") or {})})
            for name in names:
                ax.plot([r["epoch"] for r in h], [(r.get("rules") or {}).get(name, float("nan")) for r in h],
                        label=f"{name} ({variant_title(v)})", **_line_style(i))
                i += 1
        ax.set_xlabel("epoch")
        ax.set_ylabel("rule satisfaction")
        ax.set_ylim(0, 1.02)
        ax.set_title("student rules on its own predictions")
        _legend_outside(ax)
    fig.tight_layout()
    return _savefig(fig, path)


def finetune_series(history: Any) -> Tuple[List[float], Dict[str, List[float]], List[float], Dict[str, List[float]]]:
    """(epochs, scalar series, rule epochs, per-rule satisfaction series) of a fine-tuning history.

    Accepts a list of per-epoch records, or the fine-tuner's dict with an
    ``epochs`` list and an optional ``initial`` record (satisfaction before
    any update, plotted at its own epoch, e.g. -1). A record's numbers become
    scalar series ("loss", ...); its ``rules`` dict ({rule: satisfaction})
    the rule series.
    """
    records, initial = history, None
    if isinstance(history, dict):
        records, initial = history.get("epochs") or [], history.get("initial")

    def series(recs, numbers: bool):
        xs: List[float] = []
        out: Dict[str, List[float]] = {}
        for i, rec in enumerate(recs):
            xs.append(float(rec.get("epoch", i + 1)))
            items = rec.items() if numbers else (rec.get("rules") or {}).items()
            for k, v in items:
                if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    out.setdefault(k, []).append(float(v))
        return xs, {k: v for k, v in out.items() if len(v) == len(xs)}

    epochs, scalars = series(records, True)
    rule_epochs, rules = series(([initial] if initial and initial.get("rules") else []) + list(records), False)
    return epochs, scalars, rule_epochs, rules


def _line_style(i: int) -> Dict[str, Any]:
    """The i-th of many curves: ten colours, then the same with other dashes (rule
    files hold more rules than a colour cycle has colours)."""
    return {"color": f"C{i % 10}", "linestyle": ("-", "--", ":", "-.")[(i // 10) % 4]}


def _legend_outside(ax) -> None:
    # (beside the axes: inside, a dozen rules' names cover the curves)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)


def plot_finetune_curves(history: Any, path: Path) -> Optional[Path]:
    epochs, scalars, rule_epochs, rules = finetune_series(history)
    if not epochs:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12.0, 3.6), gridspec_kw={"width_ratios": [1, 1.1]})
    ax = axes[0]
    losses = {k: v for k, v in scalars.items() if "loss" in k} or scalars
    for k, v in losses.items():
        ax.plot(epochs, v, label=k)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("logic fine-tuning of SAM")
    if losses:
        ax.legend(fontsize=7)
    ax = axes[1]
    for i, (name, v) in enumerate(rules.items()):
        ax.plot(rule_epochs, v, label=name, **_line_style(i))
    ax.set_xlabel("epoch")
    ax.set_ylabel("satisfaction")
    ax.set_ylim(0, 1.02)
    ax.set_title("per-rule satisfaction")
    if rules:
        _legend_outside(ax)
    fig.tight_layout()
    return _savefig(fig, path)


PANELS = ("image", "weak label", "zero-shot SAM", "logic SAM", "student", "ground truth")


def plot_overlays(rows: List[Dict[str, Any]], kind: str, path: Path,
                  class_names: Optional[Sequence[str]] = None,
                  palette: Optional[Sequence[int]] = None) -> Optional[Path]:
    """One row per image: image, weak label, zero-shot SAM, logic SAM, student, ground truth.

    A row: ``{"id", "image": uint8 [H, W, 3], "weak": WeakLabels | None,
    "zero-shot SAM" / "logic SAM" / "student" / "ground truth": [H, W] labels | None}``.
    ``class_names``: the legend's names (default: the kind's classes); ``palette``: a
    labelmap's colours (ClassList.palette(); default VOC's), as in the label PNGs.
    """
    if not rows:
        return None
    plt = _plt()
    fig, axes = plt.subplots(len(rows), len(PANELS), figsize=(2.1 * len(PANELS), 2.2 * len(rows)),
                             squeeze=False)
    for r, row in enumerate(rows):
        image = np.asarray(row["image"])
        for c, panel in enumerate(PANELS):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if panel == "image":
                ax.imshow(image)
                ax.set_ylabel(str(row["id"]), fontsize=7)
            elif panel == "weak label":
                if row.get("weak") is not None:
                    draw_weak(ax, image, row["weak"], kind, palette)
                    tags = getattr(row["weak"], "tags", None)
                    if tags is not None:  # image-level tags: the classes named, under the panel
                        names = _class_names(kind, class_names)
                        present = [int(c) for c in np.flatnonzero(np.asarray(tags)) if c]
                        ax.set_xlabel("tags: " + (", ".join(names.get(c, str(c)) for c in present)
                                                  or "none"), fontsize=7)
                else:
                    ax.imshow(image)
            else:
                lab = row.get(panel)
                ax.imshow(blend(image, None if lab is None else np.asarray(lab), kind, palette))
                if lab is None:
                    ax.text(0.5, 0.5, "n/a", transform=ax.transAxes, ha="center", va="center")
            if r == 0:
                ax.set_title(panel, fontsize=8)
    fig.tight_layout()
    handles = _class_legend(rows, kind, class_names, palette)
    if handles:
        fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(len(handles), 8), fontsize=7, frameon=False)
    return _savefig(fig, path)


def _class_names(kind: str, class_names: Optional[Sequence[str]] = None) -> Dict[int, str]:
    from .io import VOC_CLASSES

    return ({1: "disc (rim)", 2: "cup"} if kind == "refuge"
            else dict(enumerate(class_names or VOC_CLASSES)))


def _class_legend(rows: List[Dict[str, Any]], kind: str,
                  class_names: Optional[Sequence[str]] = None,
                  palette: Optional[Sequence[int]] = None) -> List[Any]:
    """Colour patches of the classes that the panels show (255: unsure or void)."""
    from matplotlib.patches import Patch

    present = set()
    for row in rows:
        for panel in PANELS[2:]:
            if row.get(panel) is not None:
                present.update(int(v) for v in np.unique(np.asarray(row[panel])))
    names = _class_names(kind, class_names)
    handles = [Patch(facecolor=_class_colour(c, kind, palette), edgecolor="black", linewidth=0.4,
                     label=names.get(c, str(c))) for c in sorted(present - {0, 255})]
    if 255 in present:
        handles.append(Patch(facecolor=(UNSURE_GREY / 255,) * 3, edgecolor="black", linewidth=0.4,
                             label="unsure / void (255)"))
    return handles


# --------------------------------------------------------------------- report
def render(out_dir, metrics: Dict[str, Any], *, student_histories: Optional[Dict[str, List]] = None,
           finetune_history: Any = None, overlays: Optional[List[Dict[str, Any]]] = None,
           config_path: Optional[str] = None, title: Optional[str] = None,
           class_names: Optional[Sequence[str]] = None,
           palette: Optional[Sequence[int]] = None) -> Path:
    """Write ``out_dir/report.md`` and its PNGs; returns the Markdown path. ``class_names``:
    a VOC-layout data set's own classes (default ``metrics["classes"]``, else VOC's);
    ``palette``: their labelmap's colours (default VOC's)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kind = metrics["dataset"]
    parts = [f"# {title or 'fuzzyseg run'}: {kind}, weak labels: {metrics.get('weak', '?')}", ""]
    facts = [f"seed {metrics.get('seed')}"]
    if metrics.get("sam"):
        facts.append(f"SAM {metrics['sam']}")
    if metrics.get("student_model"):
        facts.append(f"student {metrics['student_model']}")
    if metrics.get("classes"):
        facts.append(f"classes {', '.join(metrics['classes'][1:])}")
    if config_path:
        facts.append(f"repeat with `fuzzyseg run --config {config_path}`")
    parts += ["; ".join(facts) + ".", "", "## Results", "", results_table(metrics), ""]
    some = [q.get("scored_images") for q in (metrics.get("pseudo_labels") or {}).values()]
    n_train = (metrics.get("images") or {}).get("train")
    scored = ((f"Pseudo-labels are scored on the {some[0]} of {n_train} training images that have a "
               "mask (evaluation only); " if some and some[0] else
               "Pseudo-labels are scored on the training split against its masks (evaluation only); ")
              if metrics.get("pseudo_labels") else
              "Pseudo-labels are not scored (the training split has no masks); ")
    ceiling = (" Percentages: share of the full-supervision ceiling (the same student and schedule "
               "trained on ground-truth masks)." if (metrics.get("students") or {}).get("gt") else "")
    parts += [scored + "students on the validation split." + ceiling, ""]
    fig = plot_student_curves(student_histories or {}, out_dir / "student_curves.png")
    ft = plot_finetune_curves(finetune_history, out_dir / "finetune_curves.png") \
        if finetune_history is not None else None
    if fig or ft:
        parts += ["## Training curves", ""]
        if ft:
            parts += ["![logic fine-tuning](finetune_curves.png)", ""]
        if fig:
            parts += ["![students](student_curves.png)", ""]
    ov = plot_overlays(overlays or [], kind, out_dir / "overlays.png",
                       class_names or metrics.get("classes"), palette)
    if ov:
        parts += ["## Overlays", "", "Image, weak label, zero-shot SAM, logic SAM, student (no prompts), "
                  "ground truth. Grey: uncertain (255, ignored in training).", "",
                  "![overlays](overlays.png)", ""]
    path = out_dir / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts))
    return path
