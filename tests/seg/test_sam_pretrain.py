"""Pretraining data (generic shapes), losses, the recipe's determinism and resumption,
the CLI, and the shipped embedded weights."""
import json

import numpy as np
import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from fuzzylogic_seg.cli import main
from fuzzylogic_seg.errors import CheckpointError, ConfigError, DivergenceError
from fuzzylogic_seg.io import load_torch
from fuzzylogic_seg.sam.build import TINY_CONFIG, build_embedded, load_sam, package_weights_path
from fuzzylogic_seg.sam.forward import PromptableSAM
from fuzzylogic_seg.sam.pretrain import (RECIPES, PretrainConfig, dice_loss, evaluate, focal_loss,
                                         make_batch, mask_iou, pretrain, recipe_config,
                                         state_path, tie_decoder_qk)
from fuzzylogic_seg.sam.shapes import generate_scene, jitter_box, mask_box, sample_points


pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/seg/conftest.py)


def _tiny(**kw):
    base = dict(steps=8, images_per_step=2, prompts_per_image=3, eval_images=3, lr=1e-3,
                warmup=2, model=TINY_CONFIG)
    base.update(kw)
    return PretrainConfig(**base)


# ---------------------------------------------------------------- shapes
def test_scenes_are_deterministic_and_well_formed():
    a = generate_scene(np.random.default_rng(11), 120, 90)
    b = generate_scene(np.random.default_rng(11), 120, 90)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    assert a.image.shape == (120, 90, 3) and a.image.dtype == np.uint8
    assert a.masks.dtype == bool and a.masks.shape[1:] == (120, 90)
    assert (a.masks.reshape(len(a.masks), -1).sum(1) >= 16).all()


def test_painting_a_window_equals_painting_the_whole_canvas():
    # generate_scene paints each shape only inside _blur_window: the matte must be
    # exactly 0 outside it, the blurred crop equal to the crop of the blurred whole,
    # and a windowed texture equal to the whole one cropped, with the same draws
    from fuzzylogic_seg.sam.shapes import _blur_window, _shape, _soft, _texture

    rng = np.random.default_rng(5)
    for i in range(40):
        h, w = int(rng.integers(40, 200)), int(rng.integers(40, 200))
        kind = ("ellipse", "polygon", "blob", "ring", "rect", "thin")[i % 6]
        # near the border too (shapes are clipped there)
        m = _shape(rng, kind, h, w, rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h,
                   rng.uniform(0.05, 0.4) * min(h, w))
        if not m.any():
            continue
        blur = float(rng.choice([0.0, rng.uniform(0.1, 1.0), rng.uniform(1.0, 4.0)]))
        win = _blur_window(m, blur)
        whole = _soft(m, blur)
        outside = np.ones((h, w), bool)
        outside[win] = False
        assert not whole[outside].any(), (kind, blur)
        assert np.array_equal(_soft(m[win], blur), whole[win]), (kind, blur)
        for seed in range(6):
            r1, r2 = np.random.default_rng([seed, i]), np.random.default_rng([seed, i])
            full = _texture(r1, h, w, 10.0)
            part = _texture(r2, h, w, 10.0, win)
            assert np.array_equal(part, full[win]) and r1.random() == r2.random()


def test_nested_and_low_contrast_regions_occur_and_nest():
    n_nested = n_low = 0
    for i in range(25):
        s = generate_scene(np.random.default_rng([3, i]), 128, 128)
        for j, p in enumerate(s.parent):
            if p >= 0:
                n_nested += 1
                # A nested region lies inside its parent's visible mask.
                assert not (s.masks[j] & ~s.masks[p]).any()
        n_low += int(s.low_contrast.sum())
    assert n_nested >= 5 and n_low >= 5


def test_low_contrast_regions_are_close_in_colour():
    diffs = {True: [], False: []}
    for i in range(30):
        s = generate_scene(np.random.default_rng([4, i]), 128, 128, p_nested=0.0)
        img = s.image.astype(float)
        for m, lc in zip(s.masks, s.low_contrast):
            ring = np.zeros_like(m)
            ys, xs = np.nonzero(m)
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            ring[max(0, y0 - 4):y1 + 4, max(0, x0 - 4):x1 + 4] = True
            ring &= ~m
            if ring.sum() < 20 or m.sum() < 200:
                continue
            diffs[bool(lc)].append(np.abs(img[m].mean(0) - img[ring].mean(0)).max())
    assert np.median(diffs[True]) < 0.6 * np.median(diffs[False])


def test_box_jitter_and_points():
    m = np.zeros((20, 30), bool)
    m[5:9, 10:25] = True
    box = mask_box(m)
    assert box.tolist() == [10, 5, 25, 9]  # half-open: covers x 10..24, y 5..8
    rng = np.random.default_rng(0)
    for _ in range(50):
        j = jitter_box(rng, box, 20, 30)
        assert 0 <= j[0] < j[2] <= 30 and 0 <= j[1] < j[3] <= 20
        assert np.all(np.abs(j - box) <= 2 * 0.1 * np.array([15, 4, 15, 4]) + 1e-4)
    pts, labels = sample_points(rng, m, 3, 2, near=box)
    assert labels.tolist() == [1, 1, 1, 0, 0]
    for (x, y), lab in zip(pts.astype(int), labels):
        assert m[y, x] == bool(lab)


def test_batch_groups_are_consistent():
    cfg = _tiny(images_per_step=3, prompts_per_image=5, model=TINY_CONFIG)
    images, groups = make_batch(np.random.default_rng([0, 0, 1]), cfg)
    assert len(images) == 3 and all(max(im.shape[:2]) == 64 for im in images)
    assert sum(len(g.image_index) for g in groups.values()) == 15
    for g in groups.values():
        n = len(g.image_index)
        assert len(g.targets) == n
        assert len(g.boxes) in (0, n) and len(g.points) in (0, n)
        for i, t in zip(g.image_index, g.targets):
            assert t.shape == images[i].shape[:2]
        if g.points:
            assert len({p.shape for p in g.points}) == 1  # one structure per group
        assert g.multimask == (g.kind == "point")


# ---------------------------------------------------------------- losses
def test_focal_and_dice_against_references():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 8, 8, generator=g) * 3
    target = (torch.rand(3, 1, 8, 8, generator=g) > 0.6).float()
    valid = torch.ones(3, 1, 8, 8)
    valid[..., 6:] = 0
    got = focal_loss(logits, target, valid)
    for p in range(3):
        for k in range(2):
            sel = valid[p, 0] > 0
            ref = sigmoid_focal_loss(logits[p, k][sel], target[p, 0][sel], reduction="mean")
            assert torch.allclose(got[p, k], ref, atol=1e-6)
            s = torch.sigmoid(logits[p, k][sel])
            t = target[p, 0][sel]
            dice = 1 - (2 * (s * t).sum() + 1) / (s.sum() + t.sum() + 1)
            assert torch.allclose(dice_loss(logits, target, valid)[p, k], dice, atol=1e-6)
    # IoU of thresholded logits, by brute force.
    pred = logits[0, 0] > 0
    t = target[0, 0] > 0
    sel = valid[0, 0] > 0
    iou = (pred & t & sel).sum() / ((pred | t) & sel).sum()
    assert torch.allclose(mask_iou(logits, target, valid)[0, 0], iou.float())


def test_focal_loss_is_finite_at_saturated_logits():
    logits = torch.tensor([[[[-80.0, 80.0]]]], requires_grad=True)
    target = torch.tensor([[[[0.0, 1.0]]]])
    loss = focal_loss(logits, target, torch.ones_like(target)) + dice_loss(logits, target, torch.ones_like(target))
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logits.grad).all()


# ------------------------------------------------------------------ recipe
def test_training_reduces_the_loss(tmp_path):
    card = pretrain(tmp_path / "w.pt", _tiny(steps=24), progress=False, evaluate_result=False)
    curve = [c["loss"] for c in card["loss_curve"]]
    assert np.mean(curve[-4:]) < 0.8 * np.mean(curve[:4])


@pytest.mark.parametrize("extra", [{}, {"tied_qk_init": True, "beta2": 0.95}])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, extra):
    cfg = _tiny(steps=6, iterative_rounds=1, **extra)
    pretrain(tmp_path / "a.pt", cfg, progress=False, evaluate_result=False)
    b = tmp_path / "b.pt"
    assert pretrain(b, cfg, progress=False, evaluate_result=False, stop_after=4) == {"stopped_at": 4}
    assert state_path(b).is_file() and not b.exists()
    pretrain(b, cfg, progress=False, evaluate_result=False, log=lambda s: None)
    assert not state_path(b).exists()
    wa, wb = load_torch(tmp_path / "a.pt")["state_dict"], load_torch(b)["state_dict"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # A different seed gives different weights (the comparison above can fail).
    pretrain(tmp_path / "c.pt", _tiny(steps=6, iterative_rounds=1, seed=1, **extra),
             progress=False, evaluate_result=False)
    wc = load_torch(tmp_path / "c.pt")["state_dict"]
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_a_diverged_step_stops_the_run_before_anything_of_it_is_saved(tmp_path, monkeypatch):
    import fuzzylogic_seg.sam.pretrain as P

    real, calls = P.step_loss, []

    def nan_at_third(*a, **k):
        loss, stats = real(*a, **k)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 3 else loss), stats

    monkeypatch.setattr(P, "step_loss", nan_at_third)
    out = tmp_path / "w.pt"
    with pytest.raises(DivergenceError, match="diverged at step 2"):
        pretrain(out, _tiny(steps=6), progress=False, evaluate_result=False, save_every=1)
    st = load_torch(state_path(out))
    assert st["step"] == 2 and all(torch.isfinite(v).all() for v in st["model"].values())
    assert not out.exists()


def test_tied_init_makes_decoder_attention_local_to_the_prompt():
    # A query carrying only the positional encoding of a point, keys carrying only the
    # dense image PE: with k_proj = q_proj the highest attention logit falls on the
    # point's cell; at random init it mostly does not.
    def cell_errors(tie):
        torch.manual_seed(0)
        sam = build_embedded()
        if tie:
            tie_decoder_qk(sam)
        pe = sam.prompt_encoder
        dense = pe.get_dense_pe()[0]  # [C, h, w] at cell centres
        _, h, w = dense.shape
        stride = sam.image_encoder.img_size // h
        pts = torch.rand(40, 1, 2, generator=torch.Generator().manual_seed(1)) * (w * stride)
        q = pe.pe_layer.forward_with_coords(pts + 0.5, (h * stride, w * stride))[:, 0]
        errs = []
        for layer in sam.mask_decoder.transformer.layers:
            att = layer.cross_attn_token_to_image
            with torch.no_grad():
                best = (att.q_proj(q) @ att.k_proj(dense.flatten(1).T).T).argmax(1)
            cy, cx = pts[:, 0, 1] / stride - 0.5, pts[:, 0, 0] / stride - 0.5
            errs.append(torch.maximum((best // w - cy).abs(), (best % w - cx).abs()))
        return torch.cat(errs)

    tied, untied = cell_errors(True), cell_errors(False)
    assert (tied <= 1.5).float().mean() > 0.95
    assert (untied <= 1.5).float().mean() < 0.5
    sam = build_embedded(TINY_CONFIG)
    tie_decoder_qk(sam)
    for m in sam.mask_decoder.modules():
        if hasattr(m, "k_proj"):
            assert torch.equal(m.k_proj.weight, m.q_proj.weight) and not m.k_proj.bias.any()


def test_recipes():
    long, quick = recipe_config("long"), recipe_config("quick", seed=3)
    assert long == PretrainConfig(**RECIPES["long"]) and quick.seed == 3
    assert quick.tied_qk_init and quick.steps < long.steps
    # Options at their neutral value stay out of the recipe dict: the shipped card's
    # recipe is still the "long" one (and the cache reuse compares these dicts).
    assert "tied_qk_init" not in long.to_dict() and quick.to_dict()["tied_qk_init"] is True
    assert PretrainConfig.from_dict(quick.to_dict()) == quick
    if package_weights_path().is_file():
        card = json.loads(package_weights_path().with_suffix(".json").read_text())
        assert card["recipe"] == long.to_dict()
    with pytest.raises(ConfigError, match="quick"):
        recipe_config("fastest")
    fast = recipe_config("fast")
    fast.check()
    assert 0 < fast.low_res_steps < fast.steps and fast.stage(0)[0].model.img_size == 128
    assert fast.stage(fast.low_res_steps) == (fast, fast.low_res_steps, fast.steps)
    assert "low_res_steps" not in quick.to_dict() and PretrainConfig.from_dict(fast.to_dict()) == fast
    # fast decodes a step's prompt kinds in one pass (tests/seg/test_sam_padded.py)
    assert fast.one_decoder_pass and "one_decoder_pass" not in long.to_dict()
    assert recipe_config("quick", low_res_div=4).to_dict() == quick.to_dict() | {"seed": 0}
    for bad in (dict(low_res_steps=8), dict(low_res_steps=2, low_res_div=3),
                dict(low_res_steps=2, low_res_div=1), dict(low_res_steps=2, low_res_div=8)):
        with pytest.raises(ConfigError, match="low_res"):
            _tiny(**bad).check()


def test_positional_tables_resize_like_segment_anything():
    from segment_anything.modeling.image_encoder import get_rel_pos

    from fuzzylogic_seg.sam.build import resize_positional_state

    torch.manual_seed(0)
    small = build_embedded(TINY_CONFIG.__class__(**{**TINY_CONFIG.to_dict(), "img_size": 32}))
    big = build_embedded(TINY_CONFIG)
    state = {k: torch.randn_like(v) for k, v in small.state_dict().items()}
    out = resize_positional_state(state, big.state_dict())
    assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in big.state_dict().items()}
    changed = {k for k in state if out[k].shape != state[k].shape}
    assert changed == {"image_encoder.pos_embed", "image_encoder.blocks.1.attn.rel_pos_h",
                       "image_encoder.blocks.1.attn.rel_pos_w"}  # the global block's
    assert all(out[k] is state[k] for k in state if k not in changed)
    # relative tables: what segment_anything itself does with a table of another length
    for k in ("image_encoder.blocks.1.attn.rel_pos_h", "image_encoder.blocks.1.attn.rel_pos_w"):
        assert torch.allclose(get_rel_pos(4, 4, out[k]), get_rel_pos(4, 4, state[k]), atol=1e-6)
    # the absolute table: bilinear, so a constant table stays constant and a ramp a ramp
    ramp = torch.arange(2.0).view(1, 2, 1, 1).expand(1, 2, 2, 32)
    up = resize_positional_state({"image_encoder.pos_embed": ramp}, big.state_dict())
    col = up["image_encoder.pos_embed"][0, :, 0, 0]
    assert torch.allclose(col, torch.tensor([0.0, 0.25, 0.75, 1.0]))
    big.load_state_dict(out)  # loads


def test_coarse_to_fine_stages_resume_anywhere_with_the_same_weights(tmp_path):
    # 3 steps at 32 px, 3 at 64 px; interrupted in the first stage, at the switch and
    # in the second stage, each resumed run ends with the uninterrupted run's weights.
    cfg = _tiny(steps=6, low_res_steps=3)
    assert max(make_batch(np.random.default_rng(0), cfg.stage(0)[0])[0][0].shape[:2]) == 32
    card = pretrain(tmp_path / "a.pt", cfg, progress=False, evaluate_result=False)
    assert card["recipe"]["low_res_steps"] == 3 and card["steps"] == 6
    wa = load_torch(tmp_path / "a.pt")["state_dict"]
    assert wa["image_encoder.pos_embed"].shape[1:3] == (4, 4)  # the full size's table
    for stop in (2, 3, 4):
        b = tmp_path / f"b{stop}.pt"
        pretrain(b, cfg, progress=False, evaluate_result=False, stop_after=stop)
        assert load_torch(state_path(b))["img_size"] == (32 if stop <= 3 else 64)
        pretrain(b, cfg, progress=False, evaluate_result=False, log=lambda s: None)
        wb = load_torch(b)["state_dict"]
        assert all(torch.equal(wa[k], wb[k]) for k in wa), stop
    # the staged run differs from a one-stage run of the same steps (the stages happen)
    pretrain(tmp_path / "c.pt", _tiny(steps=6), progress=False, evaluate_result=False)
    wc = load_torch(tmp_path / "c.pt")["state_dict"]
    assert not torch.equal(wa["image_encoder.pos_embed"], wc["image_encoder.pos_embed"])
    # a time budget too small for anything: both stages shrink to one step each
    card = pretrain(tmp_path / "d.pt", cfg, progress=False, evaluate_result=False, minutes=1e-6)
    assert card["steps"] == 2 and card["budget"]["low_res_steps"] == 1
    assert card["recipe"]["steps"] == 6 and len(card["budget"]["step_seconds"]) == 2
    assert load_torch(tmp_path / "d.pt")["state_dict"]["image_encoder.pos_embed"].shape[1:3] == (4, 4)


def test_worker_processes_draw_the_same_batches(tmp_path):
    # Serial run vs a run whose batches come from a spawned pool, resumed midway:
    # identical weights (the batch of step t is a function of (seed, t) alone).
    cfg = _tiny(steps=5, iterative_rounds=1)
    pretrain(tmp_path / "a.pt", cfg, progress=False, evaluate_result=False)
    b = tmp_path / "b.pt"
    pretrain(b, cfg, progress=False, evaluate_result=False, stop_after=2, workers=1)
    pretrain(b, cfg, progress=False, evaluate_result=False, workers=2, log=lambda s: None)
    wa, wb = load_torch(tmp_path / "a.pt")["state_dict"], load_torch(b)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_worker_batches_follow_a_plan_that_moves_the_switch_between_stages(tmp_path, monkeypatch):
    """One pool serves both stages. A budget run first plans 15 + 5 steps (timed at
    1 s a step), then, at its step 13, all 30 + 10: the batches the workers drew
    ahead for steps 15.. at the second stage's size are drawn again at the first's.
    The weights equal a serial run's."""
    import fuzzylogic_seg.sam.pretrain as P

    monkeypatch.setattr(P, "stage_seconds", lambda c, device, workers=0: (1.0, 1.0))
    cfg = _tiny(steps=40, low_res_steps=30)
    cards = [pretrain(tmp_path / f"{w}.pt", cfg, progress=False, evaluate_result=False,
                      minutes=20.5 / 60, workers=w, log=lambda s: None) for w in (0, 2)]
    assert all((c["steps"], c["budget"]["low_res_steps"]) == (40, 30) for c in cards)
    wa, wb = (load_torch(tmp_path / f"{w}.pt")["state_dict"] for w in (0, 2))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_state_of_another_recipe_is_refused(tmp_path):
    out = tmp_path / "w.pt"
    pretrain(out, _tiny(steps=4), progress=False, evaluate_result=False, stop_after=2)
    with pytest.raises(CheckpointError, match="another recipe"):
        pretrain(out, _tiny(steps=4, lr=5e-4), progress=False, evaluate_result=False)


def test_a_time_capped_run_is_neither_resumed_nor_reused_as_the_full_recipe(tmp_path, monkeypatch,
                                                                           capsys):
    """`--minutes` trains fewer steps than the recipe names, on its own schedule:
    its state does not resume a full run, and its weights do not pass for them."""
    from fuzzylogic_seg.io import load_json
    from fuzzylogic_seg.sam.pretrain import card_path

    import fuzzylogic_seg.sam.pretrain as P

    monkeypatch.setattr(P, "stage_seconds",  # 1 s a step, in every stage
                        lambda c, device, workers=0: (1.0,) * (2 if c.low_res_steps else 1))
    out = tmp_path / "w.pt"
    pretrain(out, _tiny(steps=20), progress=False, evaluate_result=False, minutes=10.5 / 60,
             stop_after=4)  # interrupted: its state is on disk
    with pytest.raises(CheckpointError, match="--minutes .* run .*rerun it as it was started"):
        pretrain(out, _tiny(steps=20), progress=False, evaluate_result=False)
    pretrain(out, _tiny(steps=20), progress=False, evaluate_result=False, minutes=10.5 / 60)
    card = load_json(card_path(out))
    assert card["steps"] == 10 and card["budget"]["minutes"] == 10.5 / 60
    for name in ("steps", "images_per_step", "prompts_per_image", "eval_images", "lr"):
        assert card["recipe"][name] == getattr(_tiny(steps=20), name)
    # the command: a --minutes card is not reused for the full recipe; a full one is
    def argv(path, *extra):
        return ["sam", "pretrain", "--out", str(path), "--arch", "tiny", "--steps", "16",
                "--images-per-step", "1", "--prompts-per-image", "2", "--eval-images", "2",
                "--no-progress", *extra]

    capped, full = tmp_path / "capped.pt", tmp_path / "full.pt"
    capsys.readouterr()
    assert main(argv(capped, "--minutes", "1e-6")) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{"):])  # (after the plan's log line)
    assert summary["budget"]["minutes"] == 1e-6 and summary["steps"] == summary["budget"]["steps"]
    assert main(argv(full)) == 0
    assert load_json(card_path(capped))["steps"] < 16 == load_json(card_path(full))["steps"]
    ran = []
    monkeypatch.setattr(P, "pretrain", lambda *a, **k: ran.append(a[0]) or {
        "steps": 16, "train_seconds": 0.0})
    main(argv(full))
    assert ran == []  # reused
    main(argv(capped))
    assert ran == [capped]  # trained: its card holds fewer steps than the recipe
    main(argv(capped, "--minutes", "1e-6"))
    assert ran == [capped]  # reused: the same budget
    main(argv(capped, "--minutes", "2e-6"))
    assert ran == [capped, capped]  # trained: another budget
    # a time budget where the full recipe's weights exist (`fast`, two stages, the
    # default): those are reused, as the budget could only shorten them
    assert main(argv(full, "--recipe", "fast", "--minutes", "1")) == 0
    assert ran == [capped, capped]
    capsys.readouterr()
    assert main(argv(full, "--minutes", "0")) != 0
    assert "--minutes must be positive" in capsys.readouterr().err


def test_a_time_budget_shortens_every_stage_by_one_factor(tmp_path, monkeypatch):
    """The plan from the timed steps: each stage keeps its share; a resumed run keeps
    its plan (no new timing) and ends with the uninterrupted run's weights."""
    import fuzzylogic_seg.sam.pretrain as P

    cfg = _tiny(steps=12, low_res_steps=8)  # at 1 and 3 s a step: 8 + 12 = 20 s in full
    # real timings: positive, one per stage, from a throwaway model (the run's weights
    # do not depend on them: see the resume below, timed once)
    assert all(t > 0 for t in P.stage_seconds(cfg, "cpu"))
    monkeypatch.setattr(P, "stage_seconds", lambda c, device, workers=0: (1.0, 3.0))
    a = pretrain(tmp_path / "a.pt", cfg, progress=False, evaluate_result=False, minutes=10.5 / 60)
    assert a["steps"] == 6 and a["budget"]["low_res_steps"] == 4
    b = tmp_path / "b.pt"
    pretrain(b, cfg, progress=False, evaluate_result=False, minutes=10.5 / 60, stop_after=3)

    def no_timing(*args, **kw):
        raise AssertionError("a resumed run keeps its plan")

    monkeypatch.setattr(P, "stage_seconds", no_timing)
    pretrain(b, cfg, progress=False, evaluate_result=False, minutes=10.5 / 60, log=lambda s: None)
    wa, wb = load_torch(tmp_path / "a.pt")["state_dict"], load_torch(b)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # the same plan as a run of those steps without a budget: the same weights
    pretrain(tmp_path / "c.pt", _tiny(steps=6, low_res_steps=4), progress=False,
             evaluate_result=False)
    wc = load_torch(tmp_path / "c.pt")["state_dict"]
    assert all(torch.equal(wa[k], wc[k]) for k in wa)


def test_a_budget_run_corrects_its_plan_once_and_resumes_to_the_same_weights(tmp_path,
                                                                            monkeypatch):
    import fuzzylogic_seg.sam.pretrain as P

    # timed at 1 s a step: 20 of the 40 steps fit in 20.5 s; the run itself is far
    # faster, so at its step 13 it plans all 40
    monkeypatch.setattr(P, "stage_seconds", lambda c, device, workers=0: (1.0,))
    cfg, minutes = _tiny(steps=40), 20.5 / 60
    a = pretrain(tmp_path / "a.pt", cfg, progress=False, evaluate_result=False, minutes=minutes)
    assert a["steps"] == 40 and a["budget"]["measured"][0] > 0 and "window" not in a["budget"]
    wa = load_torch(tmp_path / "a.pt")["state_dict"]
    for stop in (8, 20):  # inside the timing window (kept in the state), after the correction
        b = tmp_path / f"b{stop}.pt"
        pretrain(b, cfg, progress=False, evaluate_result=False, minutes=minutes, stop_after=stop)
        pretrain(b, cfg, progress=False, evaluate_result=False, minutes=minutes, log=lambda s: None)
        wb = load_torch(b)["state_dict"]
        assert all(torch.equal(wa[k], wb[k]) for k in wa), stop


def test_a_budget_run_follows_a_machine_that_slows_down(tmp_path, monkeypatch):
    """In the last stage the plan is corrected every 50 steps from the speed of the
    last 50: a machine that slows down midway still ends on its budget."""
    import types

    import fuzzylogic_seg.sam.pretrain as P

    class Clock:  # two reads before training, two a step: 50 steps of 0.5 s, then 1 s each
        reads = 0

        def perf_counter(self):
            self.reads += 1
            return 0.5 * min(self.reads, 102) + 1.0 * max(0, self.reads - 102)

    monkeypatch.setattr(P, "time", types.SimpleNamespace(perf_counter=Clock().perf_counter))
    monkeypatch.setattr(P, "stage_seconds", lambda c, device, workers=0: (1.0,))
    # 100.5 s: 0.5 s for the timing, then 100 of the 200 steps at the timed 1 s
    card = pretrain(tmp_path / "w.pt", _tiny(steps=200), progress=False, evaluate_result=False,
                    minutes=100.5 / 60, log=lambda s: None)
    # step 13 (0.5 s a step): all 200 fit; step 63 (0.63 s a step over the last
    # 50): 161; step 113 (1 s): 113 + the 12 s left = 125
    assert card["steps"] == 125 and card["budget"]["measured"] == [0.5]
    assert card["train_seconds"] == 100.0  # 50 * 0.5 + 75 * 1: on budget


def test_correction_points_for_a_region_thinner_than_a_low_res_cell():
    from fuzzylogic_seg.sam.pretrain import _correction_points, _low_res

    thin = torch.zeros(1, 1, 64, 64)
    thin[0, 0, 20, 10:40] = 1  # one pixel high: no low-res cell is half covered
    t, v = _low_res(thin, torch.ones_like(thin), 4)
    pts, labs = _correction_points(np.random.default_rng(0), torch.full((1, 1, 16, 16), -1.0), t, v, 4)
    assert labs.tolist() == [[1]] and 16 <= pts[0, 0, 1] <= 24  # a cell the line touches
    empty = torch.zeros(1, 1, 64, 64)
    t, v = _low_res(empty, torch.ones_like(empty), 4)
    pts, labs = _correction_points(np.random.default_rng(0), torch.full((1, 1, 16, 16), -1.0), t, v, 4)
    assert labs.tolist() == [[-1]]  # nothing to point at: a padding point


def test_correction_points_lie_in_the_error_region_with_its_label():
    """Against the rule written out per prompt in numpy: a miss gives a positive point
    on the target, a false alarm a negative one off it; no error: a target cell; each
    cell of a small error region is drawn (uniformly, over many draws)."""
    from fuzzylogic_seg.sam.pretrain import _correction_points

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 1, 8, 8, generator=g)
    target = (torch.rand(6, 1, 8, 8, generator=g) > 0.6).float()
    valid = torch.ones_like(target)
    valid[2, :, :, 6:] = 0  # padding
    logits[3] = torch.where(target[3] > 0, 5.0, -5.0)  # no error: a target cell
    pts, labs = _correction_points(np.random.default_rng(1), logits, target, valid, k=1)
    assert pts.shape == (6, 1, 2) and labs.shape == (6, 1) and pts.dtype == torch.float32
    for p in range(6):
        x, y = int(pts[p, 0, 0]), int(pts[p, 0, 1])
        pred, t, v = logits[p, 0].numpy() > 0, target[p, 0].numpy() > 0.5, valid[p, 0].numpy() > 0.5
        err = (pred != t) & v
        if err.any():
            assert err[y, x] and labs[p, 0] == int(t[y, x])
        else:
            assert t[y, x] and v[y, x] and labs[p, 0] == 1
    # a two-cell error region: both cells come up
    logits = torch.full((1, 1, 4, 4), -5.0)
    target = torch.zeros(1, 1, 4, 4)
    target[0, 0, 1, 2] = target[0, 0, 3, 0] = 1
    rng = np.random.default_rng(2)
    seen = {tuple(_correction_points(rng, logits, target, torch.ones_like(target))[0][0, 0].tolist())
            for _ in range(40)}
    assert seen == {(2.0, 1.0), (0.0, 3.0)}


def test_second_stage_starts_from_init_weights(tmp_path):
    a = tmp_path / "a.pt"
    pretrain(a, _tiny(steps=3), progress=False, evaluate_result=False)
    b = tmp_path / "b.pt"
    card = pretrain(b, _tiny(steps=2, seed=1, lr=1e-9), progress=False, evaluate_result=False,
                    init=a)
    assert card["init_card"]["steps"] == 3 and card["recipe"]["init"]["file"] == "a.pt"
    wa, wb = load_torch(a)["state_dict"], load_torch(b)["state_dict"]
    # lr ~ 0: stage two's weights are stage one's (up to fp16 storage).
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-3) for k in wa)
    with pytest.raises(CheckpointError):
        pretrain(tmp_path / "c.pt", _tiny(steps=1), progress=False, init=tmp_path / "none.pt")
    # weights of another image size continue at this one (positional tables resized)
    small = _tiny(steps=2, model=TINY_CONFIG.__class__(**{**TINY_CONFIG.to_dict(), "img_size": 32}))
    pretrain(tmp_path / "s.pt", small, progress=False, evaluate_result=False)
    card = pretrain(tmp_path / "d.pt", _tiny(steps=1), progress=False, evaluate_result=False,
                    init=tmp_path / "s.pt")
    assert card["recipe"]["init"]["file"] == "s.pt"


def test_card_and_weights_load_through_load_sam(tmp_path):
    out = tmp_path / "w.pt"
    card = pretrain(out, _tiny(steps=3), progress=False)
    assert json.loads((tmp_path / "w.json").read_text())["heldout"] == card["heldout"]
    h = card["heldout"]
    assert set(h["miou"]) == {"box", "box_jitter", "point", "box_painted"}
    assert all(0 <= v <= 1 for v in h["miou"].values())
    assert h["n_masks"] > 0 and "nested" in h["by_group"]
    sam = load_sam("embedded", checkpoint=out)
    assert sam.image_encoder.img_size == 64


def test_cli_pretrain_reuse_and_info(tmp_path, capsys):
    out = tmp_path / "sam.pt"
    args = ["sam", "pretrain", "--out", str(out), "--steps", "2", "--eval-images", "2",
            "--arch", "tiny", "--no-progress", "--threads", "1"]
    assert main(args) == 0
    printed = capsys.readouterr()
    first = json.loads(printed.out)
    assert first["steps"] == 2 and set(first["heldout_miou"]) >= {"box", "point"}
    # weights written elsewhere than where the embedded SAM is loaded from: say how to use them
    assert first["loaded_by_default"] is False
    assert f"use these weights with --sam-checkpoint {out}" in printed.err
    # the default recipe has two stages; --steps keeps a share of low-resolution steps
    assert json.loads(out.with_suffix(".json").read_text())["recipe"]["low_res_steps"] == 1
    mtime = out.stat().st_mtime_ns
    assert main(args) == 0
    assert "reusing" in capsys.readouterr().out and out.stat().st_mtime_ns == mtime
    assert main(["sam", "info", "--sam-checkpoint", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["weights"] == str(out) and info["img_size"] == 64
    assert info["card"]["steps"] == 2
    assert main(["sam", "pretrain", "--out", str(out), "--steps", "0"]) == 1
    # recipe names come from RECIPES (not a list repeated in the CLI)
    assert main(["sam", "pretrain", "--out", str(out), "--recipe", "nope"]) == 1
    assert str(sorted(RECIPES)) in capsys.readouterr().err
    # Another recipe into the same file retrains, and its card names it.
    other = [a for a in args if a != "--force"] + ["--recipe", "quick", "--prompts-per-image", "2"]
    assert main(other) == 0
    capsys.readouterr()
    recipe = json.loads(out.with_suffix(".json").read_text())["recipe"]
    assert recipe["tied_qk_init"] and recipe["prompts_per_image"] == 2 and recipe["steps"] == 2
    assert main(other) == 0
    assert "reusing" in capsys.readouterr().out


# ---------------------------------------------------------- shipped weights
SHIPPED = package_weights_path()


@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped embedded weights")
def test_shipped_weights_are_small_documented_and_reproduce_their_card():
    assert SHIPPED.stat().st_size < 8.5e6
    card = json.loads(SHIPPED.with_suffix(".json").read_text())
    assert {"recipe", "steps", "heldout", "loss_curve"} <= set(card)
    sam = load_sam()
    assert sam.weights_path == str(SHIPPED)
    # Fresh scenes (another seed than the card's 96): the card's numbers hold up, and
    # prompts are used (an untrained model scores ~0 here).
    res = evaluate(PromptableSAM(sam), seed=12345, n_images=10)
    assert res["miou"]["box"] > 0.3 and res["miou"]["point"] > 0.1
    assert abs(res["miou"]["box"] - card["heldout"]["miou"]["box"]) < 0.15
    assert abs(res["miou"]["box_painted"] - card["heldout"]["miou"]["box_painted"]) < 0.15


def test_default_workers(monkeypatch):
    from fuzzylogic_seg.commands.sam import default_workers

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert default_workers("cpu") == 1 and default_workers("cuda") == 8
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert default_workers("cpu") == 1 and default_workers("cuda:0") == 3
    monkeypatch.setattr("os.cpu_count", lambda: 2)  # (this project's machine)
    assert default_workers("cpu") == 0 and default_workers("cuda") == 1
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert default_workers("cpu") == 0 and default_workers("cuda") == 0
