"""Run every benchmarks/bench_*.py in turn (``make bench``).

    .venv/bin/python benchmarks/run_all.py [--out DIR] [--only NAME] [-- extra args]

Each benchmark runs in its own process with this interpreter. With ``--out
DIR`` each writes ``DIR/<name>.json`` (passed on as ``--out``); without it
results go to stdout only. Without extra arguments ``bench_finetune`` times
the compiled loss beside the eager rules and hand-written torch. Exit status:
the number of benchmarks that failed.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Arguments a benchmark gets unless the command line passes its own: the speed
# goal's forms side by side (compiled loss, eager rules, hand-written torch).
DEFAULTS = {"bench_finetune": ["--compile-loss", "auto", "--eager", "--hand"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="folder for one JSON file per benchmark")
    ap.add_argument("--only", help="run only benchmarks whose name contains this")
    ap.add_argument("extra", nargs="*", help="arguments passed to every benchmark (after --)")
    args = ap.parse_args(argv)
    benches = sorted(HERE.glob("bench_*.py"))
    if args.only:
        benches = [b for b in benches if args.only in b.stem]
    failed = 0
    for b in benches:
        cmd = [sys.executable, str(b), *(args.extra or DEFAULTS.get(b.stem, []))]
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            cmd += ["--out", str(Path(args.out) / f"{b.stem}.json")]
        print(f"=== {b.name}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=HERE.parent)
        print(f"=== {b.name}: {'ok' if rc == 0 else f'FAILED ({rc})'} in {time.perf_counter() - t0:.1f} s",
              flush=True)
        failed += rc != 0
    return failed


if __name__ == "__main__":
    sys.exit(main())
