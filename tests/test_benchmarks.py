"""Smoke runs of the benchmarks (tiny settings): they must not break unnoticed,
since their numbers are what the speed goals are judged on, and a GPU session
(benchmarks/gpu_check.sh) has no time to spare for a crash."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def run(script, *args, ok=True):
    p = subprocess.run([sys.executable, str(BENCH / script), *map(str, args)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    if ok:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def test_bench_finetune_reports_the_logic_share_beside_hand_written_rules(tmp_path):
    out = tmp_path / "bf.json"
    run("bench_finetune.py", "--images", 4, "--steps", 2, "--warmup", 1, "--hand", "--out", out)
    d = json.loads(out.read_text())
    assert d["steps"] == 2 and d["steps_per_second"] > 0
    parts = d["median_seconds_per_step"]
    assert set(parts) == {"decode", "facts", "logic", "backward_step"}
    assert 0 < d["logic_share"] < 1 and d["logic_share"] == pytest.approx(
        parts["logic"] / sum(parts.values()))
    assert 0 < d["hand"]["logic_share"] < 1
    assert d["logic_vs_hand"] == pytest.approx(parts["logic"] / d["hand"]["median_seconds_per_step"]["logic"])


def test_gpu_check_summary_reads_the_benchmark_json(tmp_path):
    # gpu_check.sh's summary (its Python part) on a CPU run's JSON
    run("bench_finetune.py", "--images", 2, "--steps", 1, "--warmup", 0, "--hand",
        "--out", tmp_path / "bf_voc_eager.json")
    script = (BENCH / "gpu_check.sh").read_text()
    summary = script.split("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    p = subprocess.run([sys.executable, "-", str(tmp_path)], input=summary, text=True,
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "bf_voc_eager.json: logic share" in p.stdout and "hand-written rules" in p.stdout


def test_bench_finetune_hand_needs_a_hand_written_version(tmp_path):
    mine = tmp_path / "my_boxes.rules"  # valid box rules, but no hand-written twin
    mine.write_text((ROOT / "examples" / "rules" / "voc_boxes.rules").read_text())
    p = run("bench_finetune.py", "--images", 2, "--steps", 1, "--warmup", 0, "--hand",
            "--rules", mine, ok=False)
    assert p.returncode != 0 and "no hand-written version" in p.stderr


def test_bench_logic_small_run(tmp_path):
    out = tmp_path / "bl.json"
    run("bench_logic.py", "--small", "--no-compile", "--reps", 1, "--out", out)
    assert json.loads(out.read_text())


def test_bench_data_small_run(tmp_path):
    out = tmp_path / "bd.json"
    run("bench_data.py", "--dataset", "both", "--n", 2, "--size", 64, "--workers", 0,
        "--epochs", 1, "--out", out)
    assert json.loads(out.read_text())
