"""The fact vocabulary rule files bind to: geometry against hand computations."""
import textwrap

import pytest
import torch

from fuzzylogic.checker import check
from fuzzylogic.parser import parse
from fuzzylogic_seg import rule_facts as rf
from fuzzylogic_seg.errors import ConfigError


def test_grid_maps_the_view_longest_side_onto_the_grid():
    g = rf.grid_for((30, 60), 16)
    assert (g.size, g.rows, g.cols, g.scale) == (16, 8, 16, 16 / 60)


def test_box_coverage_is_the_covered_share_of_each_cell():
    g = rf.Grid(8, 8, 8, 1.0)
    f = rf.box_facts(torch.tensor([[1.5, 2.0, 4.0, 3.25]]), g)
    assert f["colin"][0].tolist() == [0, 0.5, 1, 1, 0, 0, 0, 0]
    assert f["rowin"][0].tolist() == [0, 0, 1, 0.25, 0, 0, 0, 0]
    assert torch.equal(f["inbox"][0], f["rowin"][0][:, None] * f["colin"][0][None, :])
    assert torch.equal(f["outside"], 1 - f["inbox"][0])


def test_outside_and_overlap_of_several_boxes():
    g = rf.Grid(6, 6, 6, 1.0)
    b = torch.tensor([[0.0, 0.0, 3.0, 3.0], [2.0, 2.0, 5.0, 5.0], [5.0, 0.0, 6.0, 1.0]])
    f = rf.box_facts(b, g)
    assert f["overlap"].tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 0]]
    assert f["outside"][0, 0] == 0 and f["outside"][5, 0] == 1 and f["outside"][0, 5] == 0


def test_ellipse_is_inside_its_box_and_full_at_the_centre():
    g = rf.Grid(20, 20, 20, 1.0)
    e = rf.box_facts(torch.tensor([[2.0, 4.0, 18.0, 12.0]]), g)["ellipse"][0]
    assert e[8, 10] == 1.0
    assert e[:4].sum() == 0 and e[12:].sum() == 0  # no rows outside the box
    assert e[4, 2] == 0 and e[11, 17] == 0         # box corners are outside the ellipse
    # area close to pi * a * b
    assert abs(float(e.sum()) - 3.14159 * 8 * 4) < 4


def test_inward_index_points_one_step_towards_the_centre():
    n = 9
    idx = rf.inward_index(torch.tensor([[4.5, 4.5]]), n)[0].view(n, n)
    assert idx[4, 4] == 4 * n + 4          # the centre points at itself
    assert idx[4, 0] == 4 * n + 1          # left of the centre: one step right
    assert idx[0, 0] == 1 * n + 1          # corner: diagonal step
    assert idx[8, 4] == 7 * n + 4          # below: one step up


def test_model_facts_shift_the_logits():
    z = torch.arange(2 * 3 * 3, dtype=torch.float32).view(1, 2, 3, 3)
    f = rf.model_facts(z, {"mask", "mask_right", "mask_down"})
    assert torch.equal(f["mask_right"][..., :-1], z[..., 1:])
    assert torch.equal(f["mask_down"][..., :-1, :], z[..., 1:, :])


def test_similarity_follows_edges_not_noise():
    torch.manual_seed(0)
    img = torch.full((3, 16, 16), 100.0)
    img[:, :, 8:] = 200.0
    img = (img + torch.randn(3, 16, 16) * 3).clamp(0, 255).to(torch.uint8)
    f = rf.similarity_facts(img, rf.Grid(16, 16, 16, 1.0))
    right = f["similar_right"]
    assert right[:, 7].max() < 0.01          # across the edge
    assert right[:, :7].mean() > 0.8         # within a flat region, noise only
    assert right[:, 15].sum() == 0           # no right neighbour


def test_brightness_is_luminance_between_the_views_percentiles():
    img = torch.zeros(3, 8, 16, dtype=torch.uint8)
    img[:, :, 8:] = 200
    img[1, :, 12:] = 255  # greener: brighter by ITU-R 601's weights
    grid = rf.Grid(16, 8, 16, 1.0)  # a wide view, padded below
    b = rf.brightness_facts(img, grid)["bright"]
    assert torch.all(b[:8, :8] == 0) and torch.all(b[:8, 12:] == 1)
    mid = (0.299 * 200 + 0.587 * 200 + 0.114 * 200) / (0.299 * 200 + 0.587 * 255 + 0.114 * 200)
    assert torch.allclose(b[:8, 8:12], torch.full((8, 4), mid), atol=1e-5)
    assert b[8:].abs().sum() == 0  # nothing in the padding
    flat = torch.full((3, 8, 16), 90, dtype=torch.uint8)  # no contrast: no NaN
    assert torch.isfinite(rf.brightness_facts(flat, grid)["bright"]).all()


def test_scribble_facts_split_own_and_other_classes():
    scr = torch.full((8, 8), 255)
    scr[1, 1:4] = 3
    scr[6, 2:6] = 0
    f = rf.scribble_facts(scr, torch.tensor([3]), rf.Grid(4, 4, 4, 0.5))
    assert f["scrib"][0, 0].tolist() == [1, 1, 0, 0]
    assert f["scrib_other"][0, 3].tolist() == [0, 1, 1, 0]
    assert f["scrib"][0].sum() == 2


def _program(text):
    return check(parse(text, source="t.rules"))


def test_bind_maps_sorts_to_roles_and_rejects_mistakes():
    ok = _program("sort obj\nsort y\nsort x\npredicate mask(obj, y, x) logits\n"
                  "predicate inbox(obj, y, x)\nrule r: forall a, i, j in inbox(a, i, j): mask(a, i, j)\n")
    b = rf.bind(ok)
    assert b.sorts == {"region": "obj", "row": "y", "col": "x"}
    with pytest.raises(ConfigError, match="t.rules:2.*'blob'"):
        rf.bind(_program("sort r\npredicate blob(r)\nrule q: forall a: blob(a)\n"))
    with pytest.raises(ConfigError, match="fed logits"):
        rf.bind(_program("sort r\nsort y\nsort x\npredicate mask(r, y, x)\n"
                         "rule q: forall a, i, j: mask(a, i, j)\n"))
    with pytest.raises(ConfigError, match="cannot be built"):
        rf.bind(_program("sort r\nsort y\nsort x\npredicate scrib(r, y, x)\n"
                         "rule q: forall a, i, j: scrib(a, i, j)\n"), available=rf.BOX_FACTS)
    with pytest.raises(ConfigError, match="3 arguments"):
        rf.bind(_program("sort r\nsort y\npredicate inbox(r, y)\nrule q: forall a, i: inbox(a, i)\n"))


# ------------------------------------------------- `fuzzyseg rules check --for` / `rules facts`
RULES_DIR = __import__("pathlib").Path(__file__).resolve().parents[2] / "examples" / "rules"


@pytest.mark.parametrize("use, files", [
    ("boxes", ["voc_boxes.rules", "refuge.rules"]), ("scribbles", ["scribbles.rules"]),
    ("points", ["points.rules"]), ("tags", ["tags.rules"]),
    ("student-voc", ["student_voc.rules"]), ("student-refuge", ["student_refuge.rules"])])
def test_each_shipped_rule_file_binds_to_the_facts_of_its_use(use, files, capsys):
    from fuzzylogic_seg.cli import main

    assert main(["rules", "check", "--for", use, *[str(RULES_DIR / f) for f in files]]) == 0
    assert f"binds to the {use} facts" in capsys.readouterr().out


def test_check_for_a_use_names_the_fact_it_cannot_feed_with_file_and_line(tmp_path, capsys):
    import json

    from fuzzylogic_seg.cli import main

    # scribble rules checked for box fine-tuning: `scrib` cannot be built from boxes
    path = str(RULES_DIR / "scribbles.rules")
    assert main(["rules", "check", "--for", "boxes", path]) == 1
    err = capsys.readouterr().err
    assert f"{path}:" in err and "predicate 'scrib' cannot be built from these weak labels" in err
    mine = tmp_path / "mine.rules"  # a prior over a fact that does not exist
    mine.write_text("sort region\nsort row\nsort col\npredicate mask(region, row, col) logits\n"
                    "predicate hue(region, row, col)\n"
                    "rule red: forall a, r, c in hue(a, r, c): mask(a, r, c)\n")
    assert main(["rules", "check", "--json", "--for", "boxes", str(mine)]) == 1
    entry = json.loads(capsys.readouterr().out)["files"][0]
    assert entry["kind"] == "ConfigError" and f"{mine}:5:11: predicate 'hue' is not a fact" in entry["error"]
    # without --for, the language alone is checked: the same file is fine
    assert main(["rules", "check", str(mine)]) == 0


def test_facts_lists_what_each_use_provides_with_its_meaning(capsys):
    from fuzzylogic_seg.cli import main

    def names(*argv):
        assert main(["rules", "facts", *argv]) == 0
        lines = capsys.readouterr().out.splitlines()
        return {ln.split()[0] for ln in lines[2:] if ln and not ln.startswith("(")}

    boxes, scribbles = names("--for", "boxes"), names("--for", "scribbles")
    assert {"inbox", "bglike", "mask", "zs_fg"} <= boxes and "scrib" not in boxes
    assert {"scrib", "scrib_other", "mask"} <= scribbles and "inbox" not in scribbles
    assert names() == set(rf.VOCABULARY)
    assert names("--for", "tags") == set(rf.TAG_VOCABULARY)
    assert "near_cup" in names("--for", "student-refuge")
    assert {"seg", "present", "inbox"} <= names("--for", "student-voc")


def test_every_fact_has_a_meaning_and_the_student_docs_match_the_student_facts():
    from fuzzylogic_seg.student import NUM_CLASSES, STUDENT_FACT_DOCS, STUDENT_FACTS

    assert set(rf.VOCABULARY) | set(rf.TAG_VOCABULARY) == set(rf.MEANINGS)
    for kind, build in STUDENT_FACTS.items():
        c = NUM_CLASSES[kind]
        batch = {"present": torch.ones(1, c), "valid": torch.ones(1, 4, 4, dtype=torch.bool),
                 "inbox": torch.ones(1, c, 4, 4, dtype=torch.bool)}
        assert set(build(torch.zeros(1, c, 4, 4), batch)) == set(STUDENT_FACT_DOCS[kind])


def test_a_binding_error_in_an_included_file_names_that_file_with_line_column_and_caret(
        tmp_path, capsys):
    from fuzzylogic_seg.cli import main

    # the README's own example: a shipped file included by name, plus one rule
    mine = tmp_path / "my_refuge.rules"
    mine.write_text('include "refuge.rules"\n'
                    "rule cup_small [weight = 0.5]: forall r, c: mask(cup, r, c) -> ellipse(disc, r, c)\n")
    assert main(["rules", "check", "--for", "scribbles", str(mine)]) == 1
    err = capsys.readouterr().err
    shipped = (RULES_DIR / "refuge.rules").read_text().split("\n")
    line = next(i for i, t in enumerate(shipped, 1) if t.startswith("predicate inbox("))
    # the error sits in refuge.rules (where inbox is declared), not in my_refuge.rules
    assert f"refuge.rules:{line}:11: predicate 'inbox' cannot be built" in err
    assert f"{mine}:" not in err
    assert "    predicate inbox(region, row, col)" in err and "\n              ^" in err
    assert "hint: available here: " in err and "scrib" in err


def test_a_fixed_region_is_refused_where_regions_are_not_fixed_slots(tmp_path, capsys):
    # REFUGE's regions are slots (disc 0, cup 1); VOC's are boxes in label order, so
    # "the cup lies in the disc" there would tie box 1 to box 0 of every image.
    from fuzzylogic.checker import check
    from fuzzylogic.parser import parse_file

    from fuzzylogic_seg.cli import main

    program = check(parse_file(RULES_DIR / "refuge.rules"))
    rf.bind(program, rf.available_facts("boxes"), dataset="refuge")
    rf.bind(program, rf.available_facts("boxes"))  # no data set named: nothing to tell
    with pytest.raises(ConfigError, match=r"refuge.rules:\d+:10: constant 'disc' fixes region 0"):
        rf.bind(program, rf.available_facts("boxes"), dataset="voc")
    # a constant bound at call time, or one over another sort, is fine on VOC
    rf.bind(_program("sort region\nsort row\nsort col\npredicate mask(region, row, col) logits\n"
                     "constant top: row = 0\nconstant first: region\n"
                     "rule r: forall a, j: not mask(a, top, j)\n"
                     "rule s: forall i, j: mask(first, i, j)\n"), dataset="voc")
    assert main(["rules", "check", "--for", "boxes", "--dataset", "voc",
                 str(RULES_DIR / "refuge.rules")]) == 1
    assert "hint: a fixed region is a REFUGE slot" in capsys.readouterr().err
    assert main(["rules", "check", "--for", "boxes", "--dataset", "refuge",
                 str(RULES_DIR / "refuge.rules")]) == 0


def test_a_declaration_of_the_wrong_arity_is_told_the_declaration_to_write():
    # a researcher declares a fact with one argument short: the message says how many,
    # the hint gives the line to write, in the file's own sort names
    with pytest.raises(ConfigError, match=r"(?s)takes 3 arguments.*hint: declare it "
                                          r"`predicate bglike\(obj, y, x\)`"):
        rf.bind(_program("sort obj\nsort y\nsort x\npredicate mask(obj, y, x) logits\n"
                         "predicate bglike(obj, y)\n"
                         "rule q: forall a, i, j: mask(a, i, j) and bglike(a, i)\n"))


def test_a_refuge_region_constant_past_the_two_slots_is_refused_at_check_time(tmp_path, capsys):
    # REFUGE has two region slots (disc 0, cup 1); `constant rim: region = 2` used to pass
    # `rules check --dataset refuge` and fail only in the run, after the embeddings
    from fuzzylogic_seg.cli import main

    f = tmp_path / "rim.rules"
    f.write_text('include "refuge.rules"\nconstant rim: region = 2\n'
                 "rule t: forall r, c: mask(rim, r, c) -> mask(disc, r, c)\n")
    assert main(["rules", "check", "--for", "boxes", "--dataset", "refuge", str(f)]) == 1
    err = capsys.readouterr().err
    assert "rim.rules:2:10: constant 'rim' fixes region 2, but refuge has 2 region slots" in err
    assert "mask(disc, r, c) and not mask(cup, r, c)" in err  # how to say "rim"
    rf.bind(check(parse("sort region\nsort row\nsort col\npredicate mask(region, row, col) logits\n"
                        "constant cup: region = 1\nrule r: forall i, j: mask(cup, i, j)\n",
                        source="ok.rules")), dataset="refuge")


def test_an_undeclared_fact_gets_its_declaration_as_the_hint(tmp_path, capsys):
    from fuzzylogic.errors import CheckError
    from fuzzylogic_seg.cli import main

    mine = tmp_path / "mine.rules"
    mine.write_text('include "refuge.rules"\nrule x [weight = 0.5]:\n'
                    "    forall r, c in bglike(cup, r, c): not mask(cup, r, c)\n")
    assert main(["rules", "check", "--for", "boxes", str(mine)]) == 1
    err = capsys.readouterr().err
    assert "mine.rules:3:20: unknown predicate 'bglike'" in err
    assert "hint: declare it: predicate bglike(region, row, col)   # in the box" in err
    with pytest.raises(CheckError, match="predicate bglike\\(region, row, col\\)"):
        rf.check_file_for(str(mine), "boxes")  # (what `fuzzyseg run` checks before its first stage)
    # a fact the kind does not feed says so; the core alone keeps its general hint
    mine.write_text(mine.read_text().replace("bglike", "scrib"))
    assert main(["rules", "check", "--for", "boxes", str(mine)]) == 1
    assert "weak labels of kind boxes do not feed it" in capsys.readouterr().err
    from fuzzylogic.cli import main as core

    assert core(["check", str(mine)]) == 1
    assert "hint: declare it: predicate scrib(...)" in capsys.readouterr().err


def test_the_readme_prior_files_bind_to_the_refuge_box_facts(tmp_path, capsys):
    """Every rule file block of the README that adds a prior to refuge.rules checks
    as printed (`fuzzyseg rules check --for boxes`), the share prior included."""
    from pathlib import Path

    from fuzzylogic_seg.cli import main

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    blocks, current = [], None
    for line in readme.splitlines(keepends=True):
        if line.strip().startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append(textwrap.dedent("".join(current)))
                current = None
        elif current is not None:
            current.append(line)
    blocks = [b for b in blocks if b.startswith('include "refuge.rules"')]
    assert len(blocks) >= 3 and any("at_least(" in b for b in blocks)
    for k, b in enumerate(blocks):
        f = tmp_path / f"prior{k}.rules"
        f.write_text(b)
        assert main(["rules", "check", "--for", "boxes", str(f)]) == 0, capsys.readouterr().err
