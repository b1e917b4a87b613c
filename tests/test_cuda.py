"""CUDA paths: the same results as on the CPU (skipped where no GPU is present).

Run on a GPU machine with ``pytest -m cuda``; CI (CPU only) skips them.
``FUZZYSEG_TEST_DEVICE=cpu`` runs the same code paths on the CPU (a check of
the tests themselves where no GPU is present); ``FUZZYSEG_TEST_INDUCTOR=1``
compiles with inductor there too (as on CUDA) instead of aot_eager.
"""
import os

import numpy as np
import pytest
import torch

import fuzzylogic as fl
from fuzzylogic.nn import LogicLoss

DEV = os.environ.get("FUZZYSEG_TEST_DEVICE", "cuda")
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(DEV == "cuda" and not torch.cuda.is_available(),
                                 reason="no CUDA device")]



@pytest.fixture(autouse=True)
def _global_torch_flags():
    """Tests here change process-wide switches (deterministic algorithms via
    `fuzzyseg run`, TF32 off for the SAM comparison): put them back, so each test
    runs under the kernels it would get alone, whatever ran before it."""
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.utils.deterministic.fill_uninitialized_memory,
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    yield
    det, warn, fill, cdet, bench, mm_tf32, cudnn_tf32 = saved
    torch.use_deterministic_algorithms(det, warn_only=warn)
    torch.utils.deterministic.fill_uninitialized_memory = fill
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cdet, bench
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = mm_tf32, cudnn_tf32


RULES = """
sort pixel[2]
sort box
predicate cup(pixel) logits
predicate disc(pixel) logits
predicate inside(pixel, box)
constant disc_box: box
rule cup_in_disc: forall p: cup(p) -> disc(p)
rule outside [weight = 0.5]: forall p where not inside(p, disc_box): not disc(p)
rule some_disc [exists = max]: exists p: disc(p)
"""


def _facts(device, seed=0, S=64):
    g = torch.Generator().manual_seed(seed)
    f = dict(cup=torch.randn(2, S, S, generator=g) * 4, disc=torch.randn(2, S, S, generator=g) * 4,
             inside=(torch.rand(2, S, S, 2, generator=g) > 0.5).float(), disc_box=torch.tensor([0, 1]))
    f = {k: v.to(device) for k, v in f.items()}
    f["cup"].requires_grad_()
    f["disc"].requires_grad_()
    return f


@pytest.mark.parametrize("semantics", ["log_product", "product", "godel"])
def test_logic_loss_on_cuda_equals_cpu_values_and_gradients(semantics):
    th = fl.compile(RULES, semantics)
    fc, fg = _facts("cpu"), _facts(DEV)
    lc, lg = th.loss(**fc), th.loss(**fg)
    lc.backward()
    lg.backward()
    assert lg.device.type == DEV
    assert lg.item() == pytest.approx(lc.item(), rel=1e-4)
    for k in ("cup", "disc"):
        torch.testing.assert_close(fg[k].grad.cpu(), fc[k].grad, rtol=1e-3, atol=1e-6)


def test_saturated_truths_under_autocast_stay_finite():
    th = fl.compile(RULES.replace("logits", ""), "log_product")
    f = _facts(DEV)
    with torch.no_grad():
        for k in ("cup", "disc"):
            f[k] = (f[k] > 0).float().requires_grad_()  # truths exactly 0 and 1
    with torch.autocast(DEV, dtype=torch.bfloat16):
        loss = th.loss(**f)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(f[k].grad).all() for k in ("cup", "disc"))


def test_torch_compile_inductor_on_cuda_matches_eager():
    crit = LogicLoss(RULES, semantics="log_product")
    # inductor on CUDA (Triton kernels); aot_eager elsewhere (no C++ build in a check run)
    backend = "inductor" if DEV == "cuda" or os.environ.get("FUZZYSEG_TEST_INDUCTOR") else "aot_eager"
    compiled = torch.compile(crit, fullgraph=True, backend=backend)
    f1, f2 = _facts(DEV, 3), _facts(DEV, 3)
    l1, l2 = compiled(**f1), crit(**f2)
    l1.backward()
    l2.backward()
    assert l1.item() == pytest.approx(l2.item(), rel=1e-5)
    # inductor's fused exp/log differ from eager's in the last bits (1e-4 of 0.5 seen)
    for k in ("cup", "disc"):
        torch.testing.assert_close(f1[k].grad, f2[k].grad, rtol=1e-3, atol=1e-3 * f2[k].grad.abs().max().item())
    assert f1["cup"].grad.abs().max() > 0


def test_promptable_sam_on_cuda_equals_sampredictor_and_cpu():
    from segment_anything import SamPredictor

    from fuzzylogic_seg.sam.build import load_sam
    from fuzzylogic_seg.sam.forward import PromptableSAM

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    img = np.random.default_rng(0).integers(0, 256, (90, 131, 3), dtype=np.uint8)
    box = np.array([12.3, 20.0, 85.7, 71.0])
    out = {}
    for dev in ("cpu", DEV):
        sam = load_sam().to(dev).eval()
        pred = SamPredictor(sam)
        pred.set_image(img)
        ref, _, _ = pred.predict(box=box, multimask_output=False, return_logits=True)
        model = PromptableSAM(sam)
        x, input_size = model.preprocess(torch.from_numpy(img).permute(2, 0, 1).contiguous())
        low, _ = model.decode(model.embed(x), boxes=torch.tensor(box, device=dev)[None],
                              multimask=False, orig_size=(90, 131))
        logits = model.postprocess(low, input_size, (90, 131))[0].detach().cpu().numpy()
        assert np.abs(logits - ref).max() < 1e-3
        out[dev] = logits
    assert np.abs(out["cpu"] - out[DEV]).max() < 1e-2


@pytest.mark.parametrize("dataset", ["refuge", "voc"])
def test_pipeline_runs_on_cuda_with_amp(dataset, tmp_path):
    from fuzzylogic_seg import config as C
    from fuzzylogic_seg.pipeline import run

    root = tmp_path / "data"
    if dataset == "refuge":
        from fuzzylogic_seg.data.synth_refuge import generate_refuge
        generate_refuge(root, n_train=4, n_val=2, size=96, progress=False)
    else:
        from fuzzylogic_seg.data.synth_voc import generate_voc
        root = generate_voc(root, n_train=4, n_val=2, progress=False)
    cfg = C.build(None, {
        "dataset": dataset, "root": str(root), "out": str(tmp_path / "run"), "weak": "boxes",
        "seed": 0, "device": DEV, "finetune": {"epochs": 2}, "students": ["logic", "gt"],
        "main_student": "logic",
        "student": {"arch": "unet", "encoder": "tu-mobilenetv3_small_050", "encoder_weights": None,
                    "model_kwargs": {"decoder_channels": [16, 16, 8, 8, 8]}, "size": 64,
                    "epochs": 2, "batch_size": 2},
        "report": {"overlays": 1}})
    metrics = run(cfg, progress=False)
    flat = [v for m in metrics["pseudo_labels"].values() for v in m.values()
            if isinstance(v, float)]
    assert flat and all(np.isfinite(flat))
    assert set(metrics["students"]) == {"logic", "gt"}


def _voc_boxes(tmp, n_train):
    """A small synthetic VOC set (seed 5) with box weak labels, read by the real loader."""
    from fuzzylogic_seg.data.synth_voc import generate_voc
    from fuzzylogic_seg.data.voc import VOCSegmentation

    root = generate_voc(os.path.join(tmp, "d"), seed=5, n_train=n_train, n_val=0, progress=False)
    return VOCSegmentation(root, "train", with_gt=False, kinds=("boxes",))


def _box_tuner(**kw):
    """A fine-tuner of the shipped embedded SAM on DEV with the VOC box rules."""
    from fuzzylogic_seg.finetune import LogicFineTuner, default_rules
    from fuzzylogic_seg.sam.build import load_sam

    return LogicFineTuner(load_sam(), rules=[str(default_rules("voc", "boxes"))],
                          dataset_kind="voc", weak="boxes", device=DEV, progress=False, **kw)


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_fine_tuning_loss_compiled_on_cuda_matches_eager(mode):
    # The fine-tuner's compile_loss path (inductor; CUDA graphs with reduce-overhead)
    # on the VOC box rules: same loss and logit gradient as eager, three batches.
    import tempfile

    inductor = DEV == "cuda" or os.environ.get("FUZZYSEG_TEST_INDUCTOR")
    opt = mode if inductor else {"backend": "aot_eager"}
    with tempfile.TemporaryDirectory() as tmp:
        ds = _voc_boxes(tmp, 6)
        out = []
        for compile_loss in (False, opt):
            t = _box_tuner(compile_loss=compile_loss, amp=False)
            items = t.prepare(ds)
            n = max(it.n_regions for it in items)
            assert t.region_pad == (n if compile_loss else None)
            t.region_pad = n  # both on the same padded layout
            res = []
            for b in (items[:2], items[2:4], items[:2], items[4:6]):
                loss, _, g = t.loss_and_grad(b, t.decode(b)[0])
                res.append((loss.detach().cpu(), g.cpu()))
            out.append(res)
        for (le, ge), (lc, gc) in zip(*out):
            assert lc.item() == pytest.approx(le.item(), rel=1e-4)
            torch.testing.assert_close(gc, ge, rtol=1e-3, atol=1e-3 * ge.abs().max().item())


def test_graphed_logic_loss_replays_the_eager_kernels():
    # fuzzylogic.graphs with torch.cuda.make_graphed_callables: the replay gives the
    # eager values and gradients without running the Python function again.
    from fuzzylogic.graphs import GraphedFunction

    if DEV != "cuda":
        pytest.skip("CUDA graphs are a CUDA matter")
    # (validate=False: the value checks read the GPU on the host, which a capture forbids)
    crit = LogicLoss(RULES, semantics="log_product", validate=False)
    calls = []

    def counted(**facts):
        calls.append(1)
        return crit(**facts)

    f = GraphedFunction(counted)
    for seed in (1, 2, 3):  # first call eager (and the capture), then replays
        facts = _facts(DEV, seed)
        got = f(**facts)
        g_got, = torch.autograd.grad(got, facts["cup"])
        want = crit(**facts)
        g_want, = torch.autograd.grad(want, facts["cup"])
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(g_got, g_want, rtol=1e-6, atol=1e-7)
    assert f.captures == 1 and f.failures == 0
    n = len(calls)
    f(**_facts(DEV, 4))
    assert len(calls) == n  # replayed: the function did not run


def _step_without_host_sync(t, items):
    """A training step on items[:2] (its first calls may read the GPU: validation,
    capture), then one on items[2:4] under sync debug mode "error": (loss, rule losses)."""
    opt = t.optimizer()
    t._step(items[:2], opt)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        return t._step(items[2:4], opt)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_fine_tuning_loss_replayed_as_cuda_graphs_matches_eager_without_syncs():
    # compile_loss="cuda-graphs": the eager loss captured once per signature (the
    # region axis padded as for torch.compile) and replayed; a replayed step queues
    # its work without a host sync.
    import tempfile

    if DEV != "cuda":
        pytest.skip("CUDA graphs are a CUDA matter")
    with tempfile.TemporaryDirectory() as tmp:
        ds = _voc_boxes(tmp, 6)
        out, tuners = [], []
        for compile_loss in (False, "cuda-graphs"):
            t = _box_tuner(compile_loss=compile_loss, amp=False)
            items = t.prepare(ds)
            t.region_pad = max(it.n_regions for it in items)
            res = []
            for b in (items[:2], items[2:4], items[:2], items[4:6], items[2:4]):
                loss, _, g = t.loss_and_grad(b, t.decode(b)[0])
                res.append((loss.detach().cpu(), g.cpu()))
            out.append(res)
            tuners.append((t, items))
        for (le, ge), (lc, gc) in zip(*out):
            torch.testing.assert_close(lc, le, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(gc, ge, rtol=1e-5, atol=1e-6 * ge.abs().max().item())
        t, items = tuners[1]
        # one signature, captured (a failed capture also counts as one, and its eager
        # fallback would pass every comparison here): every batch replayed it
        assert t._compiled.captures == 1 and t._compiled.failures == 0
        loss, rule_loss = _step_without_host_sync(t, items)
        assert torch.isfinite(loss).item() and len(rule_loss) == 11


def test_a_fine_tuning_step_does_not_wait_for_the_gpu():
    # After the first call (which validates the facts once), a training step
    # with box prompts queues its work without a host sync: no blocking copies,
    # no reads of the loss (the epoch reads its sums once at the end).
    import tempfile

    if DEV != "cuda":
        pytest.skip("host syncs are a CUDA matter")
    with tempfile.TemporaryDirectory() as tmp:
        ds = _voc_boxes(tmp, 4)
        t = _box_tuner(cache_dir=os.path.join(tmp, "emb"))  # as the pipeline: on disk
        items = t.prepare(ds)
        loss, rule_loss = _step_without_host_sync(t, items)
        assert torch.isfinite(loss).item() and len(rule_loss) == 11  # voc_boxes.rules


def test_fine_tuning_on_another_loss_grid_is_deterministic_under_amp():
    # ViT-B/L/H's masks (256 x 256) reach the 64 x 64 loss grid by a resampling
    # matrix, whose backward (a matrix product) is deterministic on CUDA, where
    # interpolate's (atomic adds) was not: two runs of two epochs, same weights.
    # The embedded SAM stands in with a loss grid of 48 (its own is 64); AMP on.
    from fuzzylogic_seg.distributed import set_deterministic
    import tempfile

    set_deterministic(True)
    with tempfile.TemporaryDirectory() as tmp:
        ds = _voc_boxes(tmp, 6)
        states = []
        for run in range(2):
            t = _box_tuner(epochs=2, loss_grid=48, amp=True,
                           cache_dir=os.path.join(tmp, f"emb{run}"))
            hist = t.fit(ds)
            assert all(np.isfinite(e["loss"]) for e in hist["epochs"])
            states.append({k: v.detach().cpu() for k, v in t.sam.mask_decoder.state_dict().items()})
        assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_pretraining_step_in_one_decoder_pass_under_autocast_matches_a_pass_per_kind():
    """The padded decoder pass (sam/padded.py) under the pretraining's autocast (bf16
    where native): the same loss as a pass per prompt kind, finite gradients."""
    from fuzzylogic_seg.sam.build import TINY_CONFIG, build_embedded
    from fuzzylogic_seg.sam.forward import PromptableSAM
    from fuzzylogic_seg.sam.pretrain import PretrainConfig, make_batch, step_loss

    torch.manual_seed(0)
    model = PromptableSAM(build_embedded(TINY_CONFIG).to(DEV))
    cfg = PretrainConfig(steps=2, images_per_step=3, prompts_per_image=8, model=TINY_CONFIG)
    images, groups = make_batch(np.random.default_rng([0, 0, 3]), cfg)
    losses = {}
    for one in (False, True):
        c = PretrainConfig(**{**cfg.__dict__, "one_decoder_pass": one})
        loss, _ = step_loss(model, images, groups, c, np.random.default_rng(0))
        grads = torch.autograd.grad(loss, list(model.sam.mask_decoder.parameters()))
        assert all(torch.isfinite(g).all() for g in grads)
        losses[one] = loss.item()
    assert losses[True] == pytest.approx(losses[False], rel=2e-2)
