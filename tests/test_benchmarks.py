"""Smoke runs of the benchmarks (tiny settings): they must not break unnoticed,
since their numbers are what the speed goals are judged on, and a GPU session
(benchmarks/gpu_check.sh) has no time to spare for a crash."""
import json
import os
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
    p = run("bench_finetune.py", "--images", 4, "--steps", 2, "--warmup", 1, "--hand", "--out", out)
    d = json.loads(out.read_text())
    assert json.loads(p.stdout) == d  # stdout: the JSON alone; the words go to stderr
    assert "rule file, eager: logic share" in p.stderr and "hand-written torch: logic share" in p.stderr
    assert d["steps"] == 2 and d["steps_per_second"] > 0
    parts = d["median_seconds_per_step"]
    assert set(parts) == {"decode", "facts", "logic", "backward_step"}
    assert 0 < d["logic_share"] < 1 and d["logic_share"] == pytest.approx(
        parts["logic"] / sum(parts.values()))
    assert 0 < d["hand"]["logic_share"] < 1
    assert d["logic_vs_hand"] == pytest.approx(parts["logic"] / d["hand"]["median_seconds_per_step"]["logic"])


def test_gpu_check_script_runs_a_step_and_its_summary_on_the_cpu(tmp_path):
    # gpu_check.sh's own dry-run mode, one benchmark step: the step runner, the
    # benchmark command line and the summary (a GPU session has no time for a typo)
    env = dict(os.environ, DEVICE="cpu", STEPS="1", ONLY="bf_voc_eager", OUT=str(tmp_path),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    p = subprocess.run(["bash", str(BENCH / "gpu_check.sh")], cwd=ROOT, env=env, text=True,
                       capture_output=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "bf_voc_eager rc=0" in p.stdout, p.stdout + (tmp_path / "bf_voc_eager.log").read_text()
    assert "bf_voc_eager.json: logic share" in p.stdout and "hand-written rules" in p.stdout
    assert not (tmp_path / "pytest_cuda.log").exists()  # ONLY: the other steps did not run


def test_bench_finetune_compiled_beside_eager(tmp_path):
    out = tmp_path / "bf.json"
    run("bench_finetune.py", "--images", 2, "--steps", 1, "--warmup", 1, "--compile-loss",
        "aot_eager", "--eager", "--out", out)
    d = json.loads(out.read_text())
    assert d["compile_loss"] == "aot_eager" and 0 < d["eager"]["logic_share"] < 1
    assert d["logic_vs_eager"] > 0 and "hand" not in d
    p = run("bench_finetune.py", "--eager", ok=False)
    assert p.returncode == 2 and "--compile-loss" in p.stderr


def test_bench_finetune_random_weights(tmp_path):
    # (gpu_check.sh times ViT-B this way; the embedded type keeps the test short)
    out = tmp_path / "bf.json"
    run("bench_finetune.py", "--images", 2, "--steps", 1, "--warmup", 0, "--random-weights",
        "--out", out)
    d = json.loads(out.read_text())
    assert d["sam"] == "embedded (random weights, --random-weights)" and 0 < d["logic_share"] < 1


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


def test_profile_pretrain_times_the_parts_of_a_step_and_lists_top_operators(tmp_path):
    out = tmp_path / "pp.json"
    run("profile_pretrain.py", "--size", 128, "--steps", 1, "--warmup", 0, "--top", 3,
        "--threads", 1, "--out", out)
    d = json.loads(out.read_text())
    assert set(d["median_seconds"]) == {"data", "forward", "backward", "optimizer"}
    assert d["seconds_per_step"] == pytest.approx(sum(d["median_seconds"].values()))
    assert sum(d["share"].values()) == pytest.approx(1.0)
    assert d["top_ops_by"] == "self_cpu_time_total" and len(d["top_ops"]) == 3
    assert d["top_ops"][0]["self_cpu_ms_per_step"] >= d["top_ops"][-1]["self_cpu_ms_per_step"] > 0
