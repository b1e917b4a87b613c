"""`fuzzyseg sam pretrain` and `fuzzyseg sam info`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("sam", help="the embedded SAM: pretrain it, show what is loaded")
    sub = p.add_subparsers(dest="sam_command", metavar="SUBCOMMAND")

    pre = sub.add_parser("pretrain", help="pretrain the embedded SAM on generic synthetic shapes")
    pre.add_argument("--out", type=Path, default=None,
                     help="weights file to write (default: the user cache, "
                          "$FUZZYSEG_CACHE or ~/.cache/fuzzyseg/sam_embedded.pt)")
    # (names checked against sam.pretrain.RECIPES when the command runs: importing
    # it here would load torch for every fuzzyseg command)
    pre.add_argument("--recipe", default=None, metavar="NAME",
                     help="named recipe (docs/SAM.md): 'fast' (default; ~5 min on 2 CPU "
                          "cores, 7 on one thread; its first 900 steps at half size; a better "
                          "held-out box mIoU than the shipped weights), 'quick' (~14 min, as good, one stage) or "
                          "'long' (the shipped weights' recipe, ~1 h); an unknown name lists "
                          "the known ones")
    pre.add_argument("--steps", type=int, default=None,
                     help="training steps (default: the recipe's; a two-stage recipe keeps its "
                          "share of low-resolution steps)")
    pre.add_argument("--low-res-steps", type=int, default=None,
                     help="of those, the first steps at half size (0: one stage; default: the "
                          "recipe's)")
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--device", default="cpu")
    pre.add_argument("--minutes", type=float, default=None,
                     help="time budget for the training: a few steps of each stage are "
                          "timed first, every stage is shortened by one factor to fit, and "
                          "the plan follows the run's own speed (the result then depends on "
                          "the machine's; --minutes 5: box mIoU 0.50 on 2 CPU cores, "
                          "docs/SAM.md)")
    pre.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    pre.add_argument("--workers", type=int, default=None,
                     help="processes drawing the synthetic batches ahead (same result; "
                          "default: on the CPU one from 4 cores up, on a GPU, where drawing "
                          "scenes is the bottleneck, up to 8 of the free cores)")
    pre.add_argument("--iterative-rounds", type=int, default=None,
                     help="corrective-point rounds per step (default 0)")
    pre.add_argument("--eval-images", type=int, default=None, help="held-out scenes (default 96)")
    pre.add_argument("--init", type=Path, default=None,
                     help="continue from these embedded weights (a second stage; use another --seed)")
    pre.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the recipe's)")
    pre.add_argument("--images-per-step", type=int, default=None,
                     help="synthetic scenes per step (default: the recipe's)")
    pre.add_argument("--prompts-per-image", type=int, default=None,
                     help="prompts per scene and step (default: the recipe's)")
    pre.add_argument("--arch", choices=("default", "tiny"), default="default",
                     help="architecture: the shipped one (default) or a tiny 64 px one for tests")
    pre.add_argument("--force", action="store_true", help="retrain even if the file exists")
    pre.add_argument("--no-progress", action="store_true")
    pre.set_defaults(func=_pretrain)

    info = sub.add_parser("info", help="which SAM is loaded, its size and pretraining metrics")
    info.add_argument("--sam-type", default=None,
                      help="default: the checkpoint's own type, else embedded")
    info.add_argument("--sam-checkpoint", type=Path, default=None)
    info.set_defaults(func=_info)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def default_workers(device: str) -> int:
    """Scene-drawing processes when ``--workers`` is not given. On a GPU, where
    drawing scenes is the bottleneck, up to 8 of the cores the main process does
    not use. On the CPU one from 4 cores up: the step's torch work spreads over
    the cores while drawing a step's scenes (~25-70 ms of numpy) stays serial;
    with fewer cores a worker would take too large a share from torch. (The
    batches, hence the weights, are the same whatever the number.)"""
    import os

    import torch

    cores = os.cpu_count() or 1
    if torch.device(device).type == "cpu":
        return 1 if cores >= 4 else 0
    return max(0, min(8, cores - 1))


def _pretrain(args: argparse.Namespace) -> int:

    from ..errors import ConfigError
    from ..io import load_json
    from ..sam.build import EMBEDDED_FILENAME, TINY_CONFIG, cache_dir
    from ..sam.pretrain import DEFAULT_RECIPE, card_path, pretrain, recipe_config
    from .run import set_threads

    set_threads(args.threads)
    cfg = recipe_config(args.recipe or DEFAULT_RECIPE, seed=args.seed)
    if args.arch == "tiny":
        cfg.model = TINY_CONFIG
    if args.lr is not None:
        if not args.lr > 0:
            raise ConfigError(f"--lr must be positive, got {args.lr}")
        cfg.lr = args.lr
    if args.steps is not None and args.steps > 0 and args.low_res_steps is None:
        # the recipe's split between the stages, at the new length
        cfg.low_res_steps = min(args.steps - 1, round(cfg.low_res_steps * args.steps / cfg.steps))
    for name in ("steps", "low_res_steps", "iterative_rounds", "eval_images", "images_per_step",
                 "prompts_per_image"):
        v = getattr(args, name)
        if v is not None:
            if v < 0 or (name in ("steps", "images_per_step", "prompts_per_image") and v == 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {v}")
            setattr(cfg, name, v)
    cfg.check(args.minutes)  # (before the reuse check: a bad request is an error either way)
    out = args.out or cache_dir() / EMBEDDED_FILENAME
    card_file = card_path(out)
    if out.is_file() and card_file.is_file() and not args.force and args.init is None:
        old = load_json(card_file)
        # The recipe in full, or (asking for the same budget) a budget run of it; a
        # budget run trained fewer steps than its recipe names: not the full recipe.
        same = old.get("recipe") == cfg.to_dict()
        full = same and old.get("steps") == cfg.steps
        budget = (old.get("budget") or {}).get("minutes")
        if full or (same and args.minutes is not None and budget == args.minutes):
            what = "this recipe's" if full else f"a --minutes {budget} run's"
            print(f"{out} already holds {what} weights; reusing them (--force to retrain)")
            print(json.dumps(old.get("heldout", {}).get("miou", {}), indent=2))
            return 0
    # deterministic kernels (cuDNN's convolution gradients are not by default): a
    # resumed run must end where an uninterrupted one does, on a GPU too
    from ..distributed import set_deterministic

    set_deterministic(True)
    card = pretrain(out, cfg, device=args.device, minutes=args.minutes,
                    progress=not args.no_progress, init=args.init,
                    workers=default_workers(args.device) if args.workers is None else args.workers)
    summary = {"weights": str(out), "card": str(card_file), "steps": card["steps"],
               "train_seconds": card["train_seconds"]}
    if "budget" in card:  # (the plan a --minutes run followed)
        summary["budget"] = card["budget"]
    summary["heldout_miou"] = card.get("heldout", {}).get("miou")
    from ..sam.build import embedded_weights_path

    default = embedded_weights_path()
    summary["loaded_by_default"] = default is not None and Path(default).resolve() == Path(out).resolve()
    print(json.dumps(summary, indent=2))
    if not summary["loaded_by_default"]:
        # (the shipped weights come first: say how to use these instead)
        print(f"note: the embedded SAM loads {default} by default; use these weights with "
              f"--sam-checkpoint {out}", file=sys.stderr)
    return 0


def _info(args: argparse.Namespace) -> int:
    from ..sam.build import cache_dir, load_sam, package_weights_path, resolve_sam_type

    args.sam_type = resolve_sam_type(args.sam_type, args.sam_checkpoint)
    sam = load_sam(args.sam_type, args.sam_checkpoint)
    enc = sam.image_encoder
    info = {
        "sam_type": args.sam_type,
        "weights": getattr(sam, "weights_path", None),
        "img_size": enc.img_size,
        "embedding": [sam.prompt_encoder.embed_dim, *sam.prompt_encoder.image_embedding_size],
        "params": {"image_encoder": sum(p.numel() for p in enc.parameters()),
                   "prompt_encoder": sum(p.numel() for p in sam.prompt_encoder.parameters()),
                   "mask_decoder": sum(p.numel() for p in sam.mask_decoder.parameters())},
    }
    if args.sam_type == "embedded":
        info["search"] = [str(package_weights_path()), str(cache_dir() / "sam_embedded.pt")]
        card = Path(info["weights"]).with_suffix(".json")
        if card.is_file():
            info["card"] = json.loads(card.read_text())
            info["card"].pop("loss_curve", None)
        info["config"] = getattr(sam, "embedded_config").to_dict()
    print(json.dumps(info, indent=2, default=str))
    return 0
