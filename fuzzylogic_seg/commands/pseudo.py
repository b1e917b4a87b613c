"""`fuzzyseg pseudo-label`: one label image per training image, and a summary."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import CLASSES_HELP, FIXED_CLASSES, voc_only

DATASETS = ("voc", "refuge")
WEAK = ("boxes", "scribbles", "points", "tags")
METHODS = ("weak-mask", "zero-shot", "logic")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pseudo-label", help="pseudo-labels of a training split: weak-mask, zero-shot or logic",
        description="Write one label image per training image (class indices, 255 = uncertain) "
                    "and DIR/summary.json (coverage; mIoU or Dice where masks exist).")
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--root", required=True, type=Path, help="the data set folder")
    p.add_argument("--weak", required=True, choices=WEAK, help="kind of weak label")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--split", default="train")
    p.add_argument("--weak-dir", type=Path, default=None,
                   help="weak-label folder (fuzzyseg data weak); default: the data set's own "
                        "weak labels (VOC XML boxes) or the seeded simulation, written to OUT/weak")
    p.add_argument("--weak-seed", type=int, default=0, help="seed of simulated weak labels")
    p.add_argument("--rules", nargs="+", type=Path, default=None,
                   help="rule files (default: examples/rules for the data set and weak kind)")
    p.add_argument("--sam-type", default=None,
                   help="embedded, vit_b, vit_l or vit_h (default: the --sam-checkpoint's own "
                        "type, told from its weights; without one, embedded)")
    p.add_argument("--sam-checkpoint", type=Path, default=None)
    p.add_argument("--epochs", type=int, default=None,
                   help="fine-tuning epochs (default: 20 for VOC boxes, 60 class-head epochs "
                        "for tags, else 10)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--train", default="decoder",
                   help="comma-separated parts to fine-tune: decoder, prompt_encoder, lora, encoder")
    p.add_argument("--loss-grid", type=int, default=64,
                   help="side of the grid the rules are evaluated on (default 64; 0: SAM's "
                        "own mask grid, 256 for ViT-B/L/H); the example rule weights assume 64")
    p.add_argument("--compile-loss", default=None, metavar="MODE",
                   help="torch.compile the logic loss (default, reduce-overhead = CUDA graphs, "
                        "max-autotune-no-cudagraphs): a faster loss after a one-time compile "
                        "(~30 s on a CPU; docs/FINETUNE.md); or cuda-graphs: the eager loss "
                        "replayed as CUDA graphs, no compile (GPU only)")
    p.add_argument("--no-cache-facts", action="store_true",
                   help="rebuild each image's rule facts every step instead of keeping them "
                        "(saves ~0.2 MB of host memory per image at grid 64, 16x that at "
                        "grid 256; costs ~7 ms a CPU step; the same result)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="confidence below which a pixel is marked 255 (0.5: label every pixel)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="image-embedding cache folder (default OUT/cache: on disk, not in memory; "
                        "Meta's SAM makes 4 MiB per image)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-eval", action="store_true", help="do not evaluate against masks")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--classes", default=None, metavar="LIST|FILE", help=CLASSES_HELP)
    p.set_defaults(func=run)


def dataset_class(kind: str):
    if kind == "voc":
        from ..data.voc import VOCSegmentation

        return VOCSegmentation
    from ..data.refuge import REFUGE

    return REFUGE


def ensure_weak_dir(kind: str, root: Path, split: str, weak: str, out: Path, seed: int,
                    classes=None) -> Path:
    """Write the split's weak labels (real where the data set has them, else the
    seeded simulation) to ``out`` once; training then reads only that folder.

    A folder written for another setting (data set, root, split, kind or seed) is
    rewritten, not reused: a second run with ``--weak points`` into the same
    ``--out`` must not train on the first run's boxes (nor on another class list's).
    ``classes``: a VOC-layout data set's class list (data/classes.py)."""
    import shutil

    from ..io import load_json
    from ..weak.store import MANIFEST, save_split

    out, root = Path(out), Path(root)
    cls = dataset_class(kind)
    kw = {"classes": classes} if classes is not None else {}
    src = cls(root, split, with_gt=False, kinds=(weak,), seed=seed, **kw)
    setting = {"dataset": cls.name, "root": str(root.resolve()), "split": split, "seed": seed,
               "kinds": [weak], "class_names": list(src.classes)}
    if (out / MANIFEST).is_file():
        try:
            old = load_json(out / MANIFEST)
        except (OSError, ValueError):
            old = {}
        if all(old.get(k) == v for k, v in setting.items()):
            return out
        was = {k: old.get(k) for k in setting if old.get(k) != setting[k]}
        print(f"{out}: weak labels of another setting ({was}); writing them anew")
        shutil.rmtree(out)
    save_split(out, ((src.ids[i], src.weak_labels(i, _size(src, i))) for i in range(len(src))),
               dataset=src.name, split=split, class_names=src.classes,
               info={"seed": seed, "kinds": [weak], "root": setting["root"]})
    return out


def _size(ds, i):
    from ..data.base import image_size

    return image_size(ds.items[i].image)


def run(args: argparse.Namespace) -> int:

    from ..distributed import set_deterministic
    from ..errors import ConfigError
    from ..pseudo import make_pseudo_labels
    from .run import set_threads

    set_threads(args.threads)
    set_deterministic(True)  # as `fuzzyseg run`: the same labels from the same seed, on a GPU too
    if args.epochs is not None and args.epochs < 0:
        raise ConfigError(f"--epochs must be >= 0, got {args.epochs}")
    kw = {}
    if args.classes:
        voc_only(args.dataset, "--classes", args.classes, FIXED_CLASSES)
        from ..data.classes import parse_classes

        kw["classes"] = parse_classes(args.classes)
    weak_dir = args.weak_dir or ensure_weak_dir(args.dataset, args.root, args.split, args.weak,
                                                args.out / "weak", args.weak_seed, **kw)
    ds = dataset_class(args.dataset)(args.root, args.split, with_gt=False, weak_dir=weak_dir,
                                     kinds=(args.weak,), **kw)
    if args.dataset == "voc":
        from ..data.classes import announce

        announce(ds.class_list)
    ds.store.require_kind(args.weak)
    sam = None
    if args.method != "weak-mask":
        from ..sam.build import load_sam, resolve_sam_type

        sam = load_sam(resolve_sam_type(args.sam_type, args.sam_checkpoint), args.sam_checkpoint,
                       device=args.device)
    train = tuple(t.strip() for t in args.train.split(",") if t.strip())
    summary = make_pseudo_labels(
        args.method, ds, sam=sam, out_dir=args.out, threshold=args.threshold,
        dataset_kind=args.dataset, weak=args.weak, rules=args.rules, epochs=args.epochs,
        seed=args.seed, device=args.device, cache_dir=args.cache_dir or args.out / "cache",
        evaluate=not args.no_eval, progress=not args.no_progress,
        tuner_options={"lr": args.lr, "batch_size": args.batch_size, "train": train,
                       "out_dir": args.out / "finetune", "loss_grid": args.loss_grid or None,
                       "compile_loss": args.compile_loss or False,
                       "cache_facts": not args.no_cache_facts})
    short = {k: v for k, v in summary.items() if k not in ("per_class_iou", "history")}
    print(json.dumps(short, indent=2, sort_keys=True, default=str))
    return 0
