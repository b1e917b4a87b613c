"""Logic fine-tuning speed: steps per second with cached embeddings, and the
share of a step spent in the logic loss (goal: under 10%).

    .venv/bin/python benchmarks/bench_finetune.py [--device cpu|cuda] [--steps 30]
        [--rules examples/rules/voc_boxes.rules] [--dataset voc|refuge]
        [--batch-size 4] [--sam-type embedded --sam-checkpoint FILE] [--random-weights]
        [--out FILE.json]
        [--compile-loss default|reduce-overhead|...] [--eager] [--dense-guards] [--hand]

Per-part times are medians over the steps (robust to other processes on a
shared machine); steps/s is also given from the wall clock. A step is: decode the
prompts of a batch of images from their cached image embeddings, build the facts,
evaluate the compiled theory and take its gradient with respect to the mask logits
("logic"), back-propagate that gradient through the decoder and step AdamW. Each
part is timed on its own (with a device synchronisation between parts on CUDA);
"logic share" is the logic part over the whole step. With ``--compile-loss``
the logic part runs through torch.compile (compiled during the warm-up steps).
With ``--hand``
every batch is also stepped with the same rules written by hand in plain
eager torch (``hand_rules.py``; a test checks they compute the same loss),
alternating with the compiled rules step by step: "hand" gives that loss's
parts and logic share, "logic_vs_hand" the ratio of the two logic parts;
``--eager`` with ``--compile-loss`` likewise adds the rules evaluated eagerly
("eager", "logic_vs_eager"). The data: the embedded synthetic set of the
chosen kind (a few images, generated in a temporary folder), weak labels
only. Without shipped embedded SAM weights the architecture is used with
random weights (same cost); ``--random-weights --sam-type vit_b`` times the
real SAM's decoder without its checkpoint.
"""
from __future__ import annotations

import argparse
import json
import statistics
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402


PARTS = ("decode", "facts", "logic", "backward_step")


def load_model(args):
    from fuzzylogic_seg.errors import CheckpointError
    from fuzzylogic_seg.sam.build import SAM_BUILDERS, build_embedded, load_sam

    if args.random_weights:
        if args.sam_type not in SAM_BUILDERS:
            raise SystemExit(f"--sam-type {args.sam_type}: choose one of {sorted(SAM_BUILDERS)}")
        torch.manual_seed(0)
        if args.sam_type == "embedded":
            sam = build_embedded()
        else:
            from segment_anything import sam_model_registry

            sam = sam_model_registry[args.sam_type](checkpoint=None)
            sam.sam_type = args.sam_type
        return sam.to(args.device).eval(), "random weights, --random-weights"
    try:
        return load_sam(args.sam_type, args.sam_checkpoint, device=args.device), "pretrained"
    except CheckpointError:
        if args.sam_type != "embedded":
            raise
        torch.manual_seed(0)
        return build_embedded().to(args.device), "random init (no shipped weights)"


def dataset(kind: str, root: str, n: int):
    if kind == "voc":
        from fuzzylogic_seg.data.synth_voc import generate_voc
        from fuzzylogic_seg.data.voc import VOCSegmentation

        generate_voc(root, seed=123, n_train=n, n_val=0, progress=False)
        return VOCSegmentation(root, "train", with_gt=False, kinds=("boxes",))
    from fuzzylogic_seg.data.refuge import REFUGE
    from fuzzylogic_seg.data.synth_refuge import generate_refuge

    generate_refuge(root, seed=123, n_train=n, n_val=0, progress=False)
    return REFUGE(root, "train", with_gt=False, kinds=("boxes",))


def compile_option(name, device="cpu"):
    # a torch.compile mode, or the aot_eager backend (no inductor: checks the graph only);
    # "auto": the form that meets the goal on the device (timed: docs/STATUS.md), inductor on
    # the CPU, inductor with CUDA graphs on a GPU (where eager steps are launch-bound)
    if name == "auto":
        return "reduce-overhead" if str(device).startswith("cuda") else "default"
    return {"backend": "aot_eager"} if name == "aot_eager" else name or False


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dataset", default="voc", choices=("voc", "refuge"))
    ap.add_argument("--rules", default=None)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sam-type", default="embedded")
    ap.add_argument("--sam-checkpoint", default=None)
    ap.add_argument("--random-weights", action="store_true",
                    help="the SAM type's architecture with random weights, no checkpoint: a "
                         "step costs the same (the frozen model's sure-object/background facts "
                         "are then empty); for vit_b/l/h where no weights are at hand")
    ap.add_argument("--compile-loss", default=None, metavar="MODE",
                    help="torch.compile the logic loss: default, reduce-overhead (CUDA graphs), "
                         "max-autotune-no-cudagraphs, or aot_eager (a backend, for checking); "
                         "or cuda-graphs: the eager loss replayed as CUDA graphs, no compile; "
                         "or auto: default on the CPU, reduce-overhead on a GPU")
    ap.add_argument("--dense-guards", action="store_true",
                    help="evaluate guarded quantifier bodies densely (fuzzylogic.compiler."
                         "sparse_guards(False)), to compare with the default sparse CPU path")
    ap.add_argument("--eager", action="store_true",
                    help="with --compile-loss: also step every batch with the rules evaluated "
                         "eagerly, alternating, and report both")
    ap.add_argument("--hand", action="store_true",
                    help="also step every batch with the rules written by hand in eager torch "
                         "(benchmarks/hand_rules.py), alternating, and report both")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.eager and not args.compile_loss:
        ap.error("--eager compares the eager rules with --compile-loss MODE")
    if args.random_weights and args.sam_checkpoint:
        ap.error("--random-weights takes no --sam-checkpoint")
    torch.set_num_threads(args.threads)
    from fuzzylogic.compiler import sparse_guards

    with sparse_guards(not args.dense_guards):
        return _run(args)


def _run(args):
    from fuzzylogic_seg.finetune import LogicFineTuner, default_rules

    rules = args.rules or str(default_rules(args.dataset, "boxes"))
    sam, weights = load_model(args)
    with tempfile.TemporaryDirectory() as tmp:
        ds = dataset(args.dataset, os.path.join(tmp, "data"), args.images)
        tuner = LogicFineTuner(sam, rules=[rules], dataset_kind=args.dataset, weak="boxes",
                               batch_size=args.batch_size, device=args.device, progress=False,
                               cache_dir=os.path.join(tmp, "cache"),
                               compile_loss=compile_option(args.compile_loss, args.device))
        tuner.time_parts = True  # synchronise CUDA between the parts: each timed on its own
        t0 = time.perf_counter()
        items = tuner.prepare(ds)
        prep = time.perf_counter() - t0
        opt = tuner.optimizer()  # fit's optimizer (its lr: the step's cost does not depend on it)
        batches = [items[i % len(items): i % len(items) + args.batch_size]
                   for i in range(0, (args.steps + args.warmup) * args.batch_size, args.batch_size)]
        batches = [b for b in batches if b]
        modes = {"rules": tuner.evaluate_rules}
        if args.eager:
            modes["eager"] = lambda facts, doms, report=False: tuner._evaluate(facts, doms, report)
        if args.hand:
            modes["hand"] = hand_loss(rules, tuner)
        for b in batches[:args.warmup]:
            for fn in modes.values():
                tuner.evaluate_rules = fn
                tuner._step(b, opt)
        tuner.timing.clear()
        per_step = {m: [] for m in modes}
        wall = 0.0
        for i, b in enumerate(batches[args.warmup:args.warmup + args.steps]):
            # alternate which goes first, so that neither always finds the caches warm
            for m in (list(modes) if i % 2 == 0 else list(modes)[::-1]):
                tuner.evaluate_rules = modes[m]
                before = dict(tuner.timing)
                t0 = time.perf_counter()
                tuner._step(b, opt)
                if m == "rules":
                    wall += time.perf_counter() - t0
                per_step[m].append({k: tuner.timing[k] - before.get(k, 0.0) for k in PARTS})
        tuner.evaluate_rules = modes["rules"]
    # Medians over steps: robust to other processes on a shared machine.
    medians = {m: {k: statistics.median(st[k] for st in steps_) for k in PARTS}
               for m, steps_ in per_step.items()}
    tm = medians["rules"]
    steps = len(per_step["rules"])
    total = sum(tm.values())
    result = {
        "device": str(args.device),
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else
        f"CPU, {args.threads} thread(s)",
        "sam": f"{args.sam_type} ({weights})", "dataset": args.dataset, "rules": rules,
        "compile_loss": (f"{args.compile_loss} ({compile_option(args.compile_loss, args.device)})"
                         if args.compile_loss == "auto" else args.compile_loss or "eager"),
        "grid": tuner.grid_size, "batch_size": args.batch_size, "steps": steps,
        "sparse_guards": not args.dense_guards,
        "steps_per_second": steps / wall,
        "images_per_second": steps * args.batch_size / wall,
        "steps_per_second_median": 1.0 / total,
        "median_seconds_per_step": tm,
        "share": {k: v / total for k, v in tm.items()},
        "logic_share": tm["logic"] / total,
        "prepare_seconds": prep,
        # cuda-graphs: signatures captured (1 = every timed step replayed one graph)
        "graph_captures": getattr(tuner._compiled, "captures", None),
        # (a failed capture runs eagerly: its timings are eager ones)
        "graph_failures": getattr(tuner._compiled, "failures", None),
        "goal_logic_share_below": 0.10,
    }
    for other in ("eager", "hand"):
        if other in medians:
            th = medians[other]
            result[other] = {"median_seconds_per_step": th,
                             "logic_share": th["logic"] / sum(th.values())}
            result[f"logic_vs_{other}"] = tm["logic"] / th["logic"]
    print(json.dumps(result, indent=2))
    print(summary(result), file=sys.stderr)  # (stdout stays one JSON document)
    if args.out:
        from fuzzylogic_seg.io import save_json

        save_json(result, args.out)
    return result


def summary(result) -> str:
    """The headline in words: each form's logic share against the goal."""
    goal = result["goal_logic_share_below"]

    def line(name, share):
        return f"  {name}: logic share {share:.2%} ({'under' if share < goal else 'not under'} " \
               f"the {goal:.0%} goal)"

    lines = [f"{result['dataset']} rules on {result['device_name']}, batch {result['batch_size']}: "
             f"{result['steps_per_second']:.2f} steps/s",
             line(f"rule file, {result['compile_loss']}", result["logic_share"])]
    for other, name in (("eager", "rule file, eager"), ("hand", "hand-written torch")):
        if other in result:
            lines.append(line(name, result[other]["logic_share"]) +
                         f"; its loss {1 / result[f'logic_vs_{other}']:.2f}x the line above's")
    return "\n".join(lines)


def hand_loss(rules: str, tuner):
    """The rule file written by hand (hand_rules.py), as ``tuner.evaluate_rules``."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from hand_rules import HAND

    name = os.path.basename(rules)
    if name not in HAND or len(tuner.rules) != 1:
        raise SystemExit(f"--hand: no hand-written version of {rules} "
                         f"(benchmarks/hand_rules.py has {sorted(HAND)})")
    fn = HAND[name][0]
    path = tuner.rules[0].path

    def evaluate(facts, doms, report=False):
        if report:
            raise NotImplementedError("the hand-written rules give no report")
        return fn(facts, doms[path])

    return evaluate


if __name__ == "__main__":
    main()
