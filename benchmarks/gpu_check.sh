#!/bin/bash
# The checks that need a CUDA GPU, as one short script (about 10 minutes on an
# H100/H200, each step under its own time limit so that a slow one cannot eat
# the rest): the fine-tuning benchmark eager (beside the same rules written by
# hand), replayed as CUDA graphs of the eager kernels and compiled (inductor's
# CUDA graphs), each beside eager, on both data sets, the CUDA tests
# (tests/test_cuda.py: equality with the CPU, AMP, compiled loss), a
# pretraining time-budget probe and a profile of a pretraining step. Run it from the
# repository root:
#
#     OUT=gpu-results LIMIT=540 bash benchmarks/gpu_check.sh
#
# On a machine without network whose Python has torch but not the project's
# other needs, WHEELS=DIR first installs the wheels in DIR (lark,
# segment-anything, segmentation-models-pytorch, ...) into /tmp/site.
# Results: $OUT/*.json (bench_finetune.py's JSON), $OUT/*.log, and a summary on
# standard output. Nothing here is run by CI. A dry run of the whole script on a
# machine without a GPU (every step on the CPU, few steps):
#
#     DEVICE=cpu STEPS=3 OUT=/tmp/dry bash benchmarks/gpu_check.sh
#
# ONLY=REGEX runs only the steps whose names match (tests/test_benchmarks.py
# runs ONLY=bf_voc_eager that way).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
LIMIT=${LIMIT:-540}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-30}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -n "${WHEELS:-}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
if [ "$DEVICE" = cuda ]; then
    python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())" || exit 1
fi

left() { echo $((LIMIT - SECONDS)); }
step() {  # step SECONDS NAME COMMAND...: run under a limit of SECONDS, or of what is
    # left of LIMIT when less (a step cut short says rc=124); skipped under 30 s left
    local t=$1 name=$2; shift 2
    if [[ ! $name =~ ${ONLY:-.} ]]; then return; fi
    local l; l=$(left)
    if [ "$l" -lt 30 ]; then echo "skip $name (${l}s left)"; return; fi
    [ "$l" -lt "$t" ] && t=$l
    timeout "$t" "$@" > "$OUT/$name.log" 2>&1
    echo "$name rc=$? at ${SECONDS}s (limit ${t}s)"
}
# (an array, not a shell function: timeout runs programs only)
BF=(python3 benchmarks/bench_finetune.py --device "$DEVICE" --steps "$STEPS")

step 90 bf_voc_eager "${BF[@]}" --dataset voc --hand --out "$OUT/bf_voc_eager.json"
# the eager loss replayed as CUDA graphs (no compile; fuzzylogic/graphs.py), beside eager
# (CUDA only: the CPU dry run skips it)
for ds in voc refuge; do
    [ "$DEVICE" = cpu ] && echo "skip bf_${ds}_graphs (CPU dry run)" ||
    step 90 "bf_${ds}_graphs" "${BF[@]}" --dataset "$ds" --compile-loss cuda-graphs --eager \
        --out "$OUT/bf_${ds}_graphs.json"
done
step 150 bf_voc_cudagraphs "${BF[@]}" --dataset voc --compile-loss reduce-overhead --eager \
    --out "$OUT/bf_voc_cudagraphs.json"
step 90 bf_refuge_eager "${BF[@]}" --dataset refuge --hand --out "$OUT/bf_refuge_eager.json"
step 150 bf_refuge_cudagraphs "${BF[@]}" --dataset refuge --compile-loss reduce-overhead --eager \
    --out "$OUT/bf_refuge_cudagraphs.json"
step 240 pytest_cuda env FUZZYSEG_TEST_DEVICE="$DEVICE" \
    python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py
# the paper's SAM: ViT-B's decoder (random weights: the same cost) against the same logic
# (on a CPU its embeddings alone take ~10 minutes: the dry run skips it unless ONLY names it)
[ "$DEVICE" = cpu ] && [ -z "${ONLY:-}" ] && echo "skip bf_voc_vitb (CPU dry run)" ||
step 150 bf_voc_vitb "${BF[@]}" --dataset voc --sam-type vit_b --random-weights --hand \
    --out "$OUT/bf_voc_vitb.json"
# pretraining's speed in both stages of the default recipe, and whether a time budget
# holds there: a 45 s --minutes run (its card's `budget` has the plan and each stage's
# measured seconds a step)
step 120 pretrain_probe python3 -m fuzzylogic_seg sam pretrain --device "$DEVICE" --workers 8 \
    --minutes 0.75 --eval-images 8 --no-progress --out /tmp/probe.pt --force
# where a pretraining step's time goes (parts, and the top kernels by device time)
step 90 pretrain_profile python3 benchmarks/profile_pretrain.py --device "$DEVICE" --size 256 \
    --steps 5 --out "$OUT/pretrain_profile.json"

python3 - "$OUT" <<'PY'
import glob, json, os, sys
for f in sorted(glob.glob(os.path.join(sys.argv[1], "bf_*.json"))):
    d = json.load(open(f))
    m = {k: round(v * 1e3, 2) for k, v in d["median_seconds_per_step"].items()}
    print(f"{os.path.basename(f)}: logic share {d['logic_share']:.3f}, "
          f"{d['steps_per_second']:.1f} steps/s, ms {m}"
          + (f", graph captures {d['graph_captures']} (failed: {d.get('graph_failures')})"
             if d.get("graph_captures") is not None else ""))
    for other, label in (("eager", "eager rules"), ("hand", "hand-written rules")):
        if other in d:
            print(f"  {label}: logic share {d[other]['logic_share']:.3f}, "
                  f"rules / {other} {d['logic_vs_' + other]:.2f}")
f = os.path.join(sys.argv[1], "pretrain_profile.json")
if os.path.exists(f):
    d = json.load(open(f))
    print(f"pretrain step ({d['size']} px): {d['seconds_per_step']:.3f} s, shares "
          + ", ".join(f"{k} {v:.2f}" for k, v in d["share"].items()))
    for r in d["top_ops"][:8]:
        print(f"  {r['name']}: {r['calls']} calls, device {r['self_device_ms_per_step']:.1f} ms, "
              f"cpu {r['self_cpu_ms_per_step']:.1f} ms a step")
PY
tail -3 "$OUT/pytest_cuda.log" 2>/dev/null
# the budget run's plan, its corrections and what it trained
if [ -f "$OUT/pretrain_probe.log" ]; then
    grep -E "time budget|\"(steps|train_seconds)\"" "$OUT/pretrain_probe.log"
fi
exit 0  # (each step's status is in its "rc=" line)
