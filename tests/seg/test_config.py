"""Run configuration: precedence, validation, round trip through OUT/config.yaml."""
from __future__ import annotations

import argparse

import pytest

from fuzzylogic_seg import config as C
from fuzzylogic_seg.commands.run import add_run_flags, flags_to_config
from fuzzylogic_seg.errors import ConfigError

BASE = {"dataset": "refuge", "root": "/data/refuge", "out": "/runs/a"}


def parse(argv):
    p = argparse.ArgumentParser()
    add_run_flags(p)
    return p.parse_args(argv)


def test_precedence_defaults_file_flags_set(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("dataset: voc\nroot: /voc\nout: /o\nseed: 3\nstudent:\n  epochs: 7\n  lr: 0.5\n")
    args = parse(["--config", str(f), "--student-epochs", "9", "--set", "student.lr=0.25",
                  "--set", "students=[logic, gt]", "--dataset", "refuge"])
    cfg = C.build(args.config, flags_to_config(args), args.set)
    assert cfg["dataset"] == "refuge"          # flag beats file
    assert cfg["seed"] == 3                    # file beats default
    assert cfg["student"]["epochs"] == 9       # flag beats file
    assert cfg["student"]["lr"] == 0.25        # --set beats all
    assert cfg["students"] == ["logic", "gt"]
    assert cfg["student"]["arch"] == C.DEFAULTS["student"]["arch"]  # untouched default


def test_written_config_repeats_the_run(tmp_path):
    import torch

    ckpt = str(tmp_path / "sam_vit_b.pth")  # a checkpoint without --sam-type: its own type
    torch.save({"image_encoder.pos_embed": torch.zeros(1, 64, 64, 768)}, ckpt)
    args = parse(["--dataset", "voc", "--root", "/voc", "--out", str(tmp_path), "--encoder", "mobilenet_v2",
                  "--rules", "a.rules", "b.rules", "--sam-checkpoint", ckpt, "--no-amp"])
    cfg = C.build(None, flags_to_config(args))
    assert cfg["sam"] == {"type": "vit_b", "checkpoint": ckpt}
    assert cfg["finetune"]["rules"] == ["a.rules", "b.rules"] and cfg["amp"] is False
    path = C.write(cfg, tmp_path / "config.yaml")
    assert "fuzzyseg run --config" in path.read_text().splitlines()[1]
    again = C.build(str(path))
    assert again == cfg


@pytest.mark.parametrize("over, msg", [
    ({"dataset": "coco"}, "dataset must be one of"),
    ({"root": None}, "--root"),
    ({"weak": "clicks"}, "weak must be one of"),
    ({"weak": "tags"}, "weak tags need a multi-class data set"),  # (BASE is REFUGE)
    ({"students": ["logic", "teacher"]}, "unknown student variant"),
    ({"pseudo": {"methods": ["weak-mask"]}}, "learns from logic pseudo-labels"),
    ({"students": ["logic+rules"], "main_student": "logic+rules"}, "needs a student rule file"),
    ({"main_student": "weak-mask"}, "main_student"),
    ({"sam": {"type": "vit_h"}}, "needs a checkpoint"),
    ({"sam": {"type": "vit_b", "checkpoint": "/nowhere/sam_vit_b.pth"}},
     "/nowhere/sam_vit_b.pth: no such SAM checkpoint"),
    ({"student": {"size": 100}}, "multiple of 32"),
])
def test_validation_messages(over, msg):
    with pytest.raises(ConfigError, match=msg):
        C.build(None, {**BASE, **over})


def test_unknown_keys_are_named_but_free_sections_pass(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key student.epochz"):
        C.build(None, BASE, ["student.epochz=3"])
    cfg = C.build(None, BASE, ["finetune.keep_threshold=0.8", "student.model_kwargs.decoder_channels=64"])
    assert cfg["finetune"]["keep_threshold"] == 0.8
    assert cfg["student"]["model_kwargs"] == {"decoder_channels": 64}


def test_file_errors_name_the_place(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: voc\nstudent: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+:\d+"):
        C.build(str(bad))
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        C.build(str(lst))
    with pytest.raises(ConfigError, match="no such config file"):
        C.build(str(tmp_path / "none.yaml"))
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        C.build(None, BASE, ["student.lr"])


def test_variant_student_config_and_fingerprint():
    cfg = C.build(None, {**BASE, "students": ["logic", "logic+rules"],
                         "student": {"logic_rules": "s.rules"}})
    assert C.student_config(cfg, "logic").logic_rules is None
    assert C.student_config(cfg, "logic+rules").logic_rules == "s.rules"
    assert C.fingerprint({"a": 1, "b": 2}) == C.fingerprint({"b": 2, "a": 1})
    assert C.fingerprint({"a": 1}) != C.fingerprint({"a": 2})


def test_exponent_floats_are_numbers_and_strings_where_numbers_belong_are_refused(tmp_path):
    """`--set student.lr=3e-4` (as the README writes it) is a float, not the string
    YAML 1.1 makes of it; a value that is no number fails here, before any stage."""
    cfg = C.build(None, BASE, ["student.lr=3e-4", "finetune.lr=1E-4", "finetune.epochs=2"])
    assert cfg["student"]["lr"] == 3e-4 and cfg["finetune"]["lr"] == 1e-4
    f = tmp_path / "c.yaml"
    f.write_text("dataset: voc\nroot: /voc\nout: /o\nstudent:\n  lr: 5e-4\n")
    assert C.build(str(f))["student"]["lr"] == 5e-4
    with pytest.raises(ConfigError, match="finetune.lr must be a number, got 'fast'"):
        C.build(None, BASE, ["finetune.lr=fast"])
    with pytest.raises(ConfigError, match="student.epochs must be an integer"):
        C.build(None, BASE, ["student.epochs=2.5"])


def test_paths_are_stored_absolute_so_the_written_config_runs_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.rules").write_text("")
    cfg = C.build(None, {"dataset": "voc", "root": "data/voc", "out": "runs/a",
                         "finetune": {"rules": ["my.rules", "voc_boxes"]}})
    assert cfg["root"] == str(tmp_path / "data" / "voc") and cfg["out"] == str(tmp_path / "runs" / "a")
    # an existing file becomes absolute; a name the package resolves stays a name
    assert cfg["finetune"]["rules"] == [str(tmp_path / "my.rules"), "voc_boxes"]


def test_compile_loss_flag_reaches_the_finetune_section_and_is_checked_before_any_stage():
    args = parse(["--dataset", "voc", "--root", "/voc", "--out", "/o", "--compile-loss", "reduce-overhead"])
    assert C.build(None, flags_to_config(args))["finetune"]["compile_loss"] == "reduce-overhead"
    assert "compile_loss" not in C.build(None, flags_to_config(parse(BASE_ARGV)))["finetune"]
    # a typo names the modes instead of failing in torch.compile after the first stages
    with pytest.raises(ConfigError, match="unknown mode 'reduce_overhead'; choose one of .*"
                                          "reduce-overhead.*cuda-graphs"):
        C.build(None, {**BASE, "finetune": {"compile_loss": "reduce_overhead"}})
    with pytest.raises(ConfigError, match="cuda-graphs.*needs a CUDA device, got cpu"):
        C.build(None, {**BASE, "device": "cpu", "finetune": {"compile_loss": "cuda-graphs"}})
    # device auto is told at run time (the pipeline checks it then); dicts pass to torch.compile
    assert C.build(None, {**BASE, "finetune": {"compile_loss": "cuda-graphs"}})
    assert C.build(None, BASE, ["finetune.compile_loss={backend: aot_eager}"])[
        "finetune"]["compile_loss"] == {"backend": "aot_eager"}


BASE_ARGV = ["--dataset", "voc", "--root", "/voc", "--out", "/o"]


@pytest.mark.parametrize("key, want", [
    ("finetune.lrr=1", r"unknown config key finetune\.lrr; did you mean finetune\.lr\? Known here: .*"),
    ("pseudo.methodz=[logic]", r"unknown config key pseudo\.methodz; did you mean pseudo\.methods\?"),
    ("finetune.head_lr=0.1", r"finetune\.head_lr \(n_per_side, head_lr, .* only with weak tags\)"),
])
def test_a_misspelt_option_of_a_pass_through_section_is_refused_before_any_stage(key, want):
    # finetune and pseudo pass their keys on to the fine-tuner: checked here, not as a
    # TypeError after the SAM stages
    with pytest.raises(ConfigError, match=want):
        C.build(None, {"dataset": "voc", "root": "r", "out": "o", "weak": "boxes"}, [key])
    cfg = C.build(None, {"dataset": "voc", "root": "r", "out": "o", "weak": "tags"},
                  ["finetune.head_lr=0.1", "finetune.compile_loss=default", "pseudo.threshold=0.6"])
    assert cfg["finetune"]["head_lr"] == 0.1 and cfg["pseudo"]["threshold"] == 0.6


def test_a_misspelt_student_model_kwarg_is_refused_before_the_first_stage():
    with pytest.raises(ConfigError, match="did you mean decoder_channels"):
        C.build(None, BASE, ["student.arch=unet", "student.model_kwargs.decoder_chanels=[8,8,8,8,8]"])


def test_threads_flag_is_checked_and_sets_torch_threads(tmp_path, capsys):
    import torch

    from fuzzylogic_seg.cli import main
    from fuzzylogic_seg.commands.run import set_threads

    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
        set_threads(None)  # (torch's own setting stays)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    # refused before anything runs, as one line naming the flag
    assert main(["run", "--dataset", "voc", "--root", str(tmp_path), "--weak", "boxes",
                 "--out", str(tmp_path / "o"), "--threads", "0"]) != 0
    assert "--threads must be >= 1" in capsys.readouterr().err


def test_a_run_without_students_needs_no_main_student():
    cfg = C.build(None, {**BASE, "students": []})
    assert cfg["students"] == [] and cfg["main_student"] == "logic"  # (unused)
    with pytest.raises(ConfigError, match="main_student 'logic' is not among the students"):
        C.build(None, {**BASE, "students": ["zero-shot"]})
