"""Logic fine-tuning: it raises rule satisfaction, resumes exactly, sees weak labels only."""
import json

import pytest
import torch

from fuzzylogic_seg.errors import ConfigError
from fuzzylogic_seg.finetune import LogicFineTuner
from fuzzylogic_seg.sam.build import TINY_CONFIG, build_embedded
from fuzzylogic_seg.weak.types import WeakLabels

RULES = "examples/rules/voc_boxes.rules"


def tiny_sam(seed=0):
    torch.manual_seed(seed)
    return build_embedded(TINY_CONFIG)


class Shapes:
    """Bright rectangles on a dark, noisy background, with their boxes (and a mask)."""

    name = "voc"

    def __init__(self, n=4, scramble_gt=None):
        self.n = n
        self.scramble_gt = scramble_gt

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        h, w = 48, 64
        img = torch.randint(0, 40, (3, h, w), generator=g)
        boxes, labels = [], []
        gt = torch.zeros(h, w, dtype=torch.long)
        for k in range(1 + i % 2):
            x0, y0 = 4 + 24 * k + i, 6 + 3 * k
            img[:, y0:y0 + 20, x0:x0 + 16] += 180
            boxes.append([x0, y0, x0 + 16, y0 + 20])
            labels.append(2 + k)
            gt[y0:y0 + 20, x0:x0 + 16] = 2 + k
        s = {"id": f"img{i}", "image": img.clamp(0, 255).to(torch.uint8),
             "weak": WeakLabels(boxes=boxes, box_labels=labels, size=(h, w))}
        if self.scramble_gt is not None:  # a dataset that (wrongly) carries masks
            s["gt"] = gt[torch.randperm(h, generator=torch.Generator().manual_seed(
                self.scramble_gt))]
        return s


def tuner(out=None, epochs=3, seed=0, **kw):
    return LogicFineTuner(tiny_sam(), rules=[RULES], dataset_kind="voc", weak="boxes",
                          epochs=epochs, lr=3e-3, seed=seed, batch_size=2, out_dir=out,
                          progress=False, **kw)


def test_fine_tuning_increases_rule_satisfaction(tmp_path):
    t = tuner(tmp_path, epochs=4)
    hist = t.fit(Shapes())
    before, after = hist["initial"]["rules"], hist["epochs"][-1]["rules"]
    weak_rules = ["outside_is_background", "inside_box", "box_rows", "box_cols"]
    assert sum(after[r] for r in weak_rules) > sum(before[r] for r in weak_rules) + 0.05
    assert hist["epochs"][-1]["loss"] < hist["epochs"][0]["loss"]
    on_disk = json.loads((tmp_path / "history.json").read_text())
    assert len(on_disk["epochs"]) == 4 and set(on_disk["epochs"][0]["rules"]) == set(before)
    assert (tmp_path / "finetune.pt").is_file()
    # only the decoder moved
    fresh = dict(tiny_sam().named_parameters())
    moved = {n for n, p in t.sam.named_parameters() if not torch.equal(p, fresh[n])}
    assert moved and all(n.startswith("mask_decoder.") for n in moved)


def test_resume_continues_to_the_same_weights(tmp_path):
    straight = tuner(tmp_path / "a", epochs=2)
    straight.fit(Shapes(2))
    first = tuner(tmp_path / "b", epochs=1)
    first.fit(Shapes(2))
    resumed = tuner(tmp_path / "b", epochs=2)
    hist = resumed.fit(Shapes(2))
    assert [e["epoch"] for e in hist["epochs"]] == [0, 1]
    for p, q in zip(straight.sam.parameters(), resumed.sam.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("change", ["seed", "images", "weights", "fewer_epochs"])
def test_a_checkpoint_of_another_run_is_not_resumed_but_trained_over(tmp_path, change):
    """Other settings, other images or weak labels, other starting weights, or a
    checkpoint past the epochs asked for: the run trains from the start (as a run
    in a fresh folder does) instead of going on from another run's weights."""
    tuner(tmp_path / "b", epochs=2).fit(Shapes(2))
    kw = {"seed": {"seed": 1}, "fewer_epochs": {"epochs": 1}}.get(change, {})
    data = Shapes(3) if change == "images" else Shapes(2)

    def make(out):
        t = tuner(out, **{"epochs": 2, **kw})
        if change == "weights":
            with torch.no_grad():
                t.sam.mask_decoder.iou_token.weight.add_(0.01)
        return t

    with pytest.warns(UserWarning, match="training from the start"):
        hist = (rerun := make(tmp_path / "b")).fit(data)
    fresh = make(tmp_path / "fresh")
    want = fresh.fit(data)
    assert [e["epoch"] for e in hist["epochs"]] == [e["epoch"] for e in want["epochs"]]
    for p, q in zip(rerun.sam.parameters(), fresh.sam.parameters()):
        assert torch.equal(p, q)
    # and the replaced checkpoint now resumes its own run
    again = make(tmp_path / "b")
    import warnings as w
    with w.catch_warnings():
        w.simplefilter("error")
        again.fit(data)


def test_training_sees_weak_labels_only():
    a = tuner(epochs=1)
    a.fit(Shapes(3, scramble_gt=1))
    b = tuner(epochs=1)
    b.fit(Shapes(3, scramble_gt=2))
    for p, q in zip(a.sam.parameters(), b.sam.parameters()):
        assert torch.equal(p, q)


def test_refuge_regions_sit_in_fixed_slots():
    class Refuge(Shapes):
        name = "refuge"

        def __getitem__(self, i):
            s = super().__getitem__(1)
            s["weak"] = WeakLabels(boxes=[[30, 10, 40, 20]] if i == 0 else [[4, 6, 20, 26], [8, 10, 16, 20]],
                                   box_labels=[2] if i == 0 else [1, 2], size=(48, 64))
            return s

    t = LogicFineTuner(tiny_sam(), rules=["examples/rules/refuge.rules"], dataset_kind="refuge",
                       epochs=1, progress=False)
    items = t.prepare(Refuge(2))
    assert items[0].slots.tolist() == [1] and items[1].slots.tolist() == [0, 1]
    # the crop is around the disc box (or all boxes when the disc box is missing)
    assert items[1].view.size[0] == items[1].view.size[1] < 48
    logits, _ = t.decode(items)
    facts, doms = t.facts(items, logits)
    reg = doms[t.rules[0].path]["region"]
    assert reg.tolist() == [[False, True], [True, True]]
    assert facts["inbox"][0, 0].sum() == 0 and facts["inbox"][0, 1].sum() > 0


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError):
        LogicFineTuner(tiny_sam(), rules=[RULES], dataset_kind="coco")
    with pytest.raises(ConfigError):
        LogicFineTuner(tiny_sam(), rules=[RULES], train=("everything",))
    with pytest.raises(ConfigError, match="cannot be built"):
        LogicFineTuner(tiny_sam(), rules=["examples/rules/scribbles.rules"], weak="boxes")
    with pytest.raises(ConfigError, match="no such rule file"):
        LogicFineTuner(tiny_sam(), rules=["nope.rules"])


def test_compiled_loss_equals_eager_and_pads_regions_to_one_count():
    # aot_eager: traces the whole loss in one graph (fullgraph=True fails on a
    # graph break) without inductor's C++ compile time; inductor runs in test_cuda.
    eager, comp = tuner(epochs=1), tuner(epochs=1, compile_loss={"backend": "aot_eager"})
    ds = Shapes(4)  # 1 or 2 boxes per image
    items_e, items_c = eager.prepare(ds), comp.prepare(ds)
    assert eager.region_pad is None and comp.region_pad == 2
    one = items_c[:1] if items_c[0].n_regions == 1 else items_c[1:2]
    assert comp.decode(one)[0].shape[1] == 2  # padded to the data set's largest count
    # images 0 and 2 hold one box each: padded to 2 slots only when compiled
    counts = []
    for batch_e, batch_c in (([items_e[0], items_e[2]], [items_c[0], items_c[2]]),
                             (items_e[:2], items_c[:2])):
        out = []
        for t, batch in ((eager, batch_e), (comp, batch_c)):
            for _ in range(2):  # the first call validates eagerly, the second is compiled
                loss, per_rule, grad = t.loss_and_grad(batch, t.decode(batch)[0])
            out.append((loss.detach(), grad, per_rule))
        (le, ge, re), (lc, gc, rc) = out
        assert comp._compiled is not None
        torch.testing.assert_close(lc, le, rtol=1e-5, atol=1e-4)
        n = ge.shape[1]
        counts.append(n)
        torch.testing.assert_close(gc[:, :n], ge, rtol=1e-4, atol=1e-6)
        assert gc.shape[1] == 2 and (gc[:, n:] == 0).all()  # padded slots get no gradient
        assert set(rc) == set(re)
    assert counts == [1, 2]
    with pytest.raises(ConfigError, match="compile_loss"):
        tuner(compile_loss={"fullgraph": False})
    with pytest.raises(ConfigError, match="unknown mode 'max_autotune'; choose one of .*max-autotune"):
        tuner(compile_loss="max_autotune")
    # CUDA graphs replay on a GPU only (tests/test_cuda.py runs them there)
    with pytest.raises(ConfigError, match="cuda-graphs.*needs a CUDA device, got cpu"):
        tuner(compile_loss="cuda-graphs")


def test_loss_replayed_as_graphs_sees_the_facts_and_returns_what_eager_does():
    # compile_loss="cuda-graphs" on the CPU, with a stand-in grapher whose "replay"
    # runs the captured function on the graph's own input copies: the facts and
    # domains go through flattening into one signature per layout and come back
    # whole (the real capture is tested in tests/test_cuda.py).
    from torch.utils import _pytree as pytree

    from fuzzylogic.graphs import GraphedFunction

    captured = []

    def grapher(fn, samples, num_warmup_iters):
        # make_graphed_callables' shape: one autograd node whose forward copies the
        # arguments into the static inputs and "replays", whose backward returns the
        # gradients of the static inputs
        captured.append(len(samples))
        spec = []

        class Replay(torch.autograd.Function):
            @staticmethod
            def forward(ctx, *tensors):
                for st, t in zip(samples, tensors):
                    st.data.copy_(t)
                with torch.enable_grad():
                    leaves, sp = pytree.tree_flatten(fn(*samples))
                spec[:] = [sp]
                ctx.outs = leaves
                return tuple(o.detach() for o in leaves)

            @staticmethod
            def backward(ctx, *grads):
                outs = [(o, g) for o, g in zip(ctx.outs, grads) if o.requires_grad]
                wrt = [st for st in samples if st.requires_grad]
                got = iter(torch.autograd.grad([o for o, _ in outs], wrt, [g for _, g in outs]))
                return tuple(next(got) if st.requires_grad else None for st in samples)

        def replay(*tensors):
            return pytree.tree_unflatten(list(Replay.apply(*tensors)), spec[0])
        return replay

    eager, graphed = tuner(epochs=1), tuner(epochs=1)
    graphed.compile_loss = {"cuda-graphs": True}
    graphed._compiled = GraphedFunction(graphed._evaluate, grapher=grapher)
    ds = Shapes(4)
    items_e, items_g = eager.prepare(ds), graphed.prepare(ds)
    assert graphed.region_pad == 2  # padded as for torch.compile: one layout
    eager.region_pad = 2
    for b in ((0, 2), (0, 1), (2, 0), (1, 3), (0, 1)):
        le, re, ge = eager.loss_and_grad([items_e[i] for i in b], eager.decode([items_e[i] for i in b])[0])
        lg, rg, gg = graphed.loss_and_grad([items_g[i] for i in b], graphed.decode([items_g[i] for i in b])[0])
        torch.testing.assert_close(lg.detach(), le.detach())
        assert set(rg) == set(re) and all(not v.requires_grad for v in rg.values())
        torch.testing.assert_close(gg, ge)
    # the first call validates eagerly, the second captures, the rest replay
    assert graphed._compiled.captures == 1 and len(captured) == 1


def test_static_facts_are_built_once_per_image_and_rebuilt_when_their_inputs_change():
    t = tuner(epochs=1)
    items = t.prepare(Shapes(3))
    logits, _ = t.decode(items)

    uncached = tuner(epochs=1, cache_facts=False)

    def fresh(its):  # rebuilt from the items' inputs, nothing kept
        return uncached.facts(its, logits[:len(its)])[0]

    first = t.facts(items, logits)[0]   # builds and keeps
    cached = t.facts(items, logits)[0]  # served from what was kept
    assert all("_static_facts" in it.extra for it in items)
    expect = fresh(items)
    assert set(first) == set(cached) == set(expect) == t.need
    for k in first:
        assert torch.equal(first[k], expect[k]) and torch.equal(cached[k], expect[k]), k
    f0 = items[0].extra["_static_facts"][2]
    t.facts(items[:1], logits[:1])
    assert items[0].extra["_static_facts"][2] is f0  # a hit: nothing rebuilt
    # the frozen model's labels change (a second prepare): zs facts follow
    items[0].zs = torch.full_like(items[0].zs, 255)
    after = t.facts(items, logits)[0]
    assert items[0].extra["_static_facts"][2] is not f0
    assert after["zs_fg"][0, items[0].slots].eq(1).all()
    assert torch.equal(after["zs_fg"], fresh(items)["zs_fg"])
    # (inputs are replaced, never changed in place: prepare and _zero_shot assign new tensors)
    # another tuner (another keep_threshold) on the same items builds its own
    items[1].zs = torch.full_like(items[1].zs, 178)  # 0.7: object at 0.6, not at 0.9
    assert t.facts(items, logits)[0]["zs_fg"][1].eq(0).all()
    t2 = tuner(epochs=1, keep_threshold=0.6)
    assert t2.facts(items, logits)[0]["zs_fg"][1, items[1].slots].eq(1).all()


@pytest.mark.parametrize("opt", ["AdamW", "Adam"])
def test_foreach_optimizers_step_exactly_as_the_per_tensor_loop(opt):
    # The trainers use foreach=True (faster on CPU); the published numbers were made
    # with the per-tensor loop, so the two must give the same weights bit for bit.
    def run(foreach):
        sam = tiny_sam()
        params = list(sam.mask_decoder.parameters())
        o = getattr(torch.optim, opt)(params, lr=3e-3, weight_decay=0.01, foreach=foreach)
        g = torch.Generator().manual_seed(1)
        for _ in range(5):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            o.step()
        return [p.detach() for p in params]

    for a, b in zip(run(False), run(True)):
        assert torch.equal(a, b)


def test_training_with_and_without_kept_facts_ends_with_the_same_weights():
    a, b = tuner(epochs=2), tuner(epochs=2, cache_facts=False)
    a.fit(Shapes(3))
    b.fit(Shapes(3))
    assert all("_static_facts" in it.extra for it in a.items)
    assert not any("_static_facts" in it.extra for it in b.items)
    for p, q in zip(a.sam.parameters(), b.sam.parameters()):
        assert torch.equal(p, q)


def test_optimizer_steps_foreach_also_after_resuming_an_older_state():
    from fuzzylogic_seg.io import load_optimizer_state

    t = tuner(epochs=1)
    opt = t.optimizer()
    assert all(g["foreach"] is True for g in opt.param_groups)
    old = opt.state_dict()
    for g in old["param_groups"]:
        g["foreach"] = None  # as written before the trainers stepped foreach
    load_optimizer_state(opt, old)
    assert all(g["foreach"] is True for g in opt.param_groups)


@pytest.mark.parametrize("grid", [8, 24])
def test_logits_reach_another_loss_grid_as_by_interpolate(grid):
    """SAM's mask grid resampled to the loss grid by a matrix product (deterministic
    on CUDA, unlike interpolate's backward) equals F.interpolate: antialiased
    bilinear when shrinking, bilinear when growing."""
    t = tuner(epochs=0, loss_grid=grid)
    items = t.prepare(Shapes(2))
    native, _ = t.decode(items, native=True)
    got, _ = t.decode(items)
    n = native.shape[-1]
    assert n == t.native_grid and n != grid
    want = torch.nn.functional.interpolate(native, size=(grid, grid), mode="bilinear",
                                           align_corners=False, antialias=n > grid)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)


class Edge:
    """One wide image (100 x 200): dark top half, bright bottom half, a box over all."""

    name = "voc"

    def __len__(self):
        return 1

    def __getitem__(self, i):
        img = torch.full((3, 100, 200), 30, dtype=torch.uint8)
        img[:, 50:] = 200
        return {"id": "edge", "image": img,
                "weak": WeakLabels(boxes=[[0, 0, 200, 100]], box_labels=[3], size=(100, 200))}


def test_colour_affinity_facts_sit_on_the_image_edge_in_a_wide_view():
    # The facts must come from the view's cells, not from the padded grid resized
    # again (which moved the edge and added one at the padding).
    t = tuner(epochs=1)
    items = t.prepare(Edge())
    it = items[0]
    g = it.grid
    assert g.cols == g.size and g.rows == g.size // 2  # a wide view, padded below
    f = t.facts(items, t.decode(items)[0])[0]
    down, right = f["similar_down"][0], f["similar_right"][0]
    # the vertical step lies between view rows 49 and 50: grid rows rows/2 - 1 and rows/2
    edge_row = g.rows // 2 - 1
    col = down[:g.rows - 1, :g.cols]
    assert (col[edge_row] < 0.01).all()
    others = torch.cat([col[:edge_row], col[edge_row + 1:]])
    assert (others > 0.99).all()
    assert (right[:g.rows, :g.cols - 1] > 0.99).all()  # no vertical edge anywhere


def test_a_compiled_loss_is_part_of_the_run_config_and_eager_configs_stay_as_they_were():
    # (resume compares configs: an eager checkpoint of an older version still resumes,
    # a compiled run, whose arithmetic rounds differently, does not continue an eager one)
    assert "compile_loss" not in tuner().config()
    assert tuner(compile_loss="default").config()["compile_loss"] == {"mode": "default"}
    assert tuner(compile_loss={"backend": "aot_eager"}).config()["compile_loss"] == {
        "backend": "aot_eager"}


def test_a_diverged_run_stops_before_saving_its_weights(tmp_path):
    # A learning rate far too large: the loss turns NaN in the second epoch. The run
    # stops there with an error that says what to change, and the checkpoint on
    # disk is still the first epoch's, with finite weights.
    from fuzzylogic_seg.errors import DivergenceError
    from fuzzylogic_seg.io import load_torch

    t = tuner(tmp_path, epochs=3)
    t.lr = 1e10
    with pytest.raises(DivergenceError, match=r"epoch 2; lower finetune\.lr"):
        t.fit(Shapes(2))
    ck = load_torch(tmp_path / "finetune.pt")
    assert ck["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in ck["trainable"].values())


def test_refuge_rules_are_refused_for_voc_before_training():
    # refuge.rules names the disc and cup slots (regions 0 and 1): on VOC, whose
    # regions are boxes in label order, they would tie box 1 to box 0 silently.
    with pytest.raises(ConfigError, match=r"refuge.rules:\d+:\d+: constant 'disc' fixes region 0"):
        LogicFineTuner(tiny_sam(), rules=["examples/rules/refuge.rules"], dataset_kind="voc",
                       weak="boxes", progress=False)
    LogicFineTuner(tiny_sam(), rules=["examples/rules/refuge.rules"], dataset_kind="refuge",
                   weak="boxes", progress=False)


def test_a_brightness_prior_needs_no_code(tmp_path):
    # "the object is the bright part of its box", as a rule over the `bright` fact
    rules = tmp_path / "bright.rules"
    rules.write_text('include "voc_boxes.rules"\npredicate bright(row, col)\n'
                     "rule bright_is_object [weight = 0.1]:\n"
                     "    forall a, r, c in inbox(a, r, c) and bright(r, c): mask(a, r, c)\n")
    t = LogicFineTuner(tiny_sam(), rules=[str(rules)], dataset_kind="voc", weak="boxes", epochs=2,
                       lr=3e-3, batch_size=2, progress=False)
    items = t.prepare(Shapes())
    f = t.facts(items, t.decode(items)[0])[0]
    b, it = f["bright"][0], items[0]
    assert float(b.max()) == 1.0 and float(b.min()) == 0.0
    assert float(b[it.grid.rows:].abs().sum()) == 0  # nothing outside the view
    hist = t.fit(Shapes(), items)
    assert hist["epochs"][-1]["rules"]["bright_is_object"] > hist["initial"]["rules"]["bright_is_object"]
