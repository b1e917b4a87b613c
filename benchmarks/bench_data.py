"""Data loading and fact building speed at 512 x 512: images per second.

    .venv/bin/python benchmarks/bench_data.py [--dataset voc|refuge|both] [--n 16]
        [--size 512] [--workers 0,2] [--batch-size 4] [--epochs 2] [--out FILE.json]

For each data set: the embedded synthetic set is written to a temporary
folder at realistic sizes (VOC-like: longest side 450-500 like VOC's 500x375;
REFUGE-like: 1024 x 1024), its weak labels (boxes, scribbles, points, tags)
are simulated and stored as a training run would (`fuzzyseg data weak`,
timed), then a DataLoader reads the training split from the weak-label folder
(`with_gt=False`), resizes and pads to 512 x 512 and collates (timed for each
worker count), and `facts.build_facts` turns each batch into the fact tensors
(timed on its own, in the main process, as a training loop would): all of
them (C-class tensors [B, C, 512, 512] included), and only those that the box
rules of examples/rules/voc_boxes.rules bind.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

KINDS = ("boxes", "scribbles", "points", "tags")
# The facts examples/rules/voc_boxes.rules binds (besides the model's own mask / zero-shot facts).
BOX_RULE_FACTS = ("inbox", "rowin", "colin", "outside", "overlap")


def make_set(kind: str, root: str, n: int):
    if kind == "voc":
        from fuzzylogic_seg.data.synth_voc import generate_voc
        from fuzzylogic_seg.data.voc import VOCSegmentation

        generate_voc(root, seed=7, n_train=n, n_val=0, size=(450, 500), progress=False)
        return lambda **kw: VOCSegmentation(root, "train", **kw), 21
    from fuzzylogic_seg.data.refuge import REFUGE
    from fuzzylogic_seg.data.synth_refuge import generate_refuge

    generate_refuge(root, seed=7, n_train=n, n_val=0, size=1024, progress=False)
    return lambda **kw: REFUGE(root, "train", **kw), 3


def bench(kind: str, args) -> dict:
    from torch.utils.data import DataLoader

    from fuzzylogic_seg.data import Collate, ResizePad
    from fuzzylogic_seg.data.base import image_size
    from fuzzylogic_seg.facts import build_facts
    from fuzzylogic_seg.weak.store import save_split

    with tempfile.TemporaryDirectory() as tmp:
        make, C = make_set(kind, os.path.join(tmp, "data"), args.n)
        sim = make(kinds=KINDS)
        t = time.perf_counter()
        items = [(sim.ids[i], sim.weak_labels(i, image_size(sim.items[i].image)))
                 for i in range(len(sim))]
        t_sim = time.perf_counter() - t
        weak_dir = os.path.join(tmp, "weak")
        save_split(weak_dir, items, dataset=kind, split="train", class_names=sim.classes)
        ds = make(weak_dir=weak_dir, with_gt=False, transform=ResizePad(args.size))
        out = {"images": len(ds), "size": args.size, "kinds": list(KINDS),
               "simulate_weak_images_per_s": len(ds) / t_sim, "load": {}}
        for workers in args.workers:
            loader = DataLoader(ds, batch_size=args.batch_size, shuffle=False, num_workers=workers,
                                collate_fn=Collate(C), persistent_workers=workers > 0)
            for _ in loader:   # warm-up epoch: worker start, file cache
                break
            t = time.perf_counter()
            n = 0
            t_all = t_box = 0.0
            for _ in range(args.epochs):
                for batch in loader:
                    n += batch["image"].shape[0]
                    t0 = time.perf_counter()
                    build_facts(batch, C)
                    t1 = time.perf_counter()
                    build_facts(batch, C, names=BOX_RULE_FACTS)
                    t2 = time.perf_counter()
                    t_all += t1 - t0
                    t_box += t2 - t1
            total = time.perf_counter() - t
            t_load = total - t_all - t_box
            out["load"][f"workers={workers}"] = {
                "load_images_per_s": n / t_load,
                "all_facts_images_per_s": n / t_all,
                "box_rule_facts_images_per_s": n / t_box,
                "load_and_box_rule_facts_images_per_s": n / (t_load + t_box),
            }
        return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=("voc", "refuge", "both"), default="both")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--workers", default="0,2")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    torch.set_num_threads(args.threads)
    kinds = ("voc", "refuge") if args.dataset == "both" else (args.dataset,)
    result = {"cpu_count": os.cpu_count(), "torch": torch.__version__,
              **{k: bench(k, args) for k in kinds}}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from fuzzylogic_seg.io import save_json

        save_json(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
