"""Rule files by path or by the name of a shipped example file."""
import pytest

from fuzzylogic_seg import config as C
from fuzzylogic_seg.errors import ConfigError
from fuzzylogic_seg.finetune import load_rules
from fuzzylogic_seg.rulefiles import example_names, resolve_rule_file, rules_dir


def test_a_shipped_file_is_found_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    want = rules_dir() / "voc_boxes.rules"
    assert resolve_rule_file("voc_boxes") == want and resolve_rule_file("voc_boxes.rules") == want
    assert {"voc_boxes", "refuge", "scribbles", "tags", "student_voc"} <= set(example_names())
    # a file of that name in the working folder wins: the user's own copy
    (tmp_path / "voc_boxes.rules").write_text("sort a\n")
    assert resolve_rule_file("voc_boxes.rules").resolve() == (tmp_path / "voc_boxes.rules").resolve()
    # a path with a folder is never taken for a name
    with pytest.raises(ConfigError, match=r"rules/voc_boxes: no such rule file .*usable by name: "
                                          r".*refuge.*voc_boxes"):
        resolve_rule_file("rules/voc_boxes")


def test_a_prior_file_beside_a_shipped_one_by_name(tmp_path):
    # `--rules voc_boxes my_prior.rules`: the shipped rules plus one prior, nothing copied
    prior = tmp_path / "my_prior.rules"
    prior.write_text("semantics log_product\nsort region\nsort row\nsort col\n"
                     "predicate mask(region, row, col) logits\npredicate ellipse(region, row, col)\n"
                     "rule round [weight = 0.1]: forall a, r, c in ellipse(a, r, c): mask(a, r, c)\n")
    compiled = load_rules(["voc_boxes", str(prior)])
    assert compiled[0].path == str(rules_dir() / "voc_boxes.rules")
    assert compiled[1].rule_names == ("round",) and len(compiled[0].rule_names) == 11


def test_a_run_config_may_name_shipped_rule_files(tmp_path):
    from fuzzylogic_seg.data.synth_refuge import generate_refuge
    from fuzzylogic_seg.pipeline import Pipeline

    generate_refuge(tmp_path / "d", n_train=2, n_val=1, size=64, progress=False)
    cfg = C.build(None, {"dataset": "refuge", "root": str(tmp_path / "d"), "out": str(tmp_path / "o"),
                         "device": "cpu", "finetune": {"rules": ["refuge"]}})
    assert cfg["finetune"]["rules"] == ["refuge"]  # kept as a name in OUT/config.yaml
    p = Pipeline(cfg, progress=False)
    p.check_rules()  # binds the shipped file to the REFUGE box facts
    assert p._rules_fp(["refuge"]) == p._rules_fp([str(rules_dir() / "refuge.rules")])


def test_a_file_of_ones_own_includes_a_shipped_one_by_name_and_adds_a_prior(tmp_path):
    # `fuzzyseg run --rules my_refuge.rules` with the shipped REFUGE rules plus one prior
    mine = tmp_path / "my_refuge.rules"
    mine.write_text('include "refuge.rules"\n'
                    "rule cup_small [weight = 0.5]: forall r, c: mask(cup, r, c) -> ellipse(disc, r, c)\n")
    (compiled,) = load_rules([str(mine)])
    assert len(compiled.rule_names) == 10 and compiled.rule_names[-1] == "cup_small"
    from fuzzylogic_seg import rule_facts as rf

    rf.check_file_for(mine, "boxes")  # binds to the box facts, as a run will check it
