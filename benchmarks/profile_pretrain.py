"""Where a pretraining step of the embedded SAM spends its time, on any device.

    .venv/bin/python benchmarks/profile_pretrain.py [--device cpu|cuda] [--size 256]
        [--recipe fast] [--steps 5] [--warmup 3] [--threads 1] [--out FILE.json]

A step of ``fuzzyseg sam pretrain`` (its recipe's batch at ``--size`` px: 128 is the
`fast` recipe's first stage, 256 its second) is timed in parts, with a device
synchronisation between them on CUDA: drawing the scenes ("data", which
``--workers`` moves to other processes), the loss's forward ("forward": image
encoder, mask decoder (one pass for all prompt kinds where the recipe has
``one_decoder_pass``, as `fast` does; else one per kind), losses), its backward, and the clipped
AdamW step ("optimizer", the recipe's kernel). Medians over ``--steps`` steps
after ``--warmup``. Then ``torch.profiler`` records the same steps once more and
the JSON lists the operators that take the most time: self CUDA time on a GPU
(where launch-bound work shows as many short kernels and a long CPU side), self
CPU time on the CPU. The weights move (the optimizer steps), so the numbers are
those of a run's first steps, not of a trained model's (the cost does not depend
on the weights).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

PARTS = ("data", "forward", "backward", "optimizer")


def main(argv=None):
    from fuzzylogic_seg.sam.forward import PromptableSAM
    from fuzzylogic_seg.sam.pretrain import (RECIPES, _step_batch, initial_model, make_optimizer,
                                             recipe_config, step_loss)

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--recipe", default="fast", choices=sorted(RECIPES))
    ap.add_argument("--size", type=int, default=256, help="scene and model size in px")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--top", type=int, default=25, help="operators listed")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    cfg = recipe_config(args.recipe)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, img_size=args.size))
    cfg.check()
    sam = initial_model(cfg, cfg.model).to(dev).train()
    model = PromptableSAM(sam)
    opt = make_optimizer(sam, cfg, dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def one_step(t):
        times = {}
        t0 = time.perf_counter()
        images, groups, rng = _step_batch((cfg.seed, t, cfg))
        t1 = time.perf_counter()
        loss, _ = step_loss(model, images, groups, cfg, rng)
        sync()
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sync()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(sam.parameters(), cfg.grad_clip)
        opt.step()
        sync()
        t4 = time.perf_counter()
        times.update(data=t1 - t0, forward=t2 - t1, backward=t3 - t2, optimizer=t4 - t3)
        return times

    for t in range(args.warmup):
        one_step(t)
    timed = [one_step(args.warmup + i) for i in range(args.steps)]
    med = {k: statistics.median(s[k] for s in timed) for k in PARTS}

    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for i in range(args.steps):
            one_step(args.warmup + args.steps + i)
    key = "self_device_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    rows = []
    for e in sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0.0), reverse=True)[:args.top]:
        rows.append({"name": e.key, "calls": e.count,
                     "self_cpu_ms_per_step": e.self_cpu_time_total / 1e3 / args.steps,
                     "self_device_ms_per_step": getattr(e, "self_device_time_total", 0.0) / 1e3 / args.steps})
    total = sum(med.values())
    result = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else
        f"CPU, {torch.get_num_threads()} thread(s)",
        "recipe": args.recipe, "size": args.size, "steps": args.steps,
        "images_per_step": cfg.images_per_step, "prompts_per_image": cfg.prompts_per_image,
        "median_seconds": med, "share": {k: v / total for k, v in med.items()},
        "seconds_per_step": total,
        "top_ops_by": key, "top_ops": rows,
    }
    text = json.dumps(result, indent=2)
    if args.out:
        from fuzzylogic_seg.io import save_json

        save_json(result, args.out)
    print(text)
    return result


if __name__ == "__main__":
    main()
