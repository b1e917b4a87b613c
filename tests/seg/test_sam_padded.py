"""One decoder pass for prompts of different structures (sam/padded.py) gives what a
pass per structure gives (segment_anything's own transformer is the reference)."""
import numpy as np
import pytest
import torch

from fuzzylogic_seg.errors import ConfigError
from fuzzylogic_seg.sam.build import TINY_CONFIG, EmbeddedConfig
from fuzzylogic_seg.sam.forward import PromptableSAM, predict_masks
from fuzzylogic_seg.sam.padded import padded_predict_masks
from fuzzylogic_seg.sam.pretrain import PretrainConfig, make_batch, step_loss

pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/seg/conftest.py)


@pytest.fixture(scope="module", params=["tiny", "embedded"])
def model(request, varied_sam):
    return PromptableSAM(varied_sam(TINY_CONFIG if request.param == "tiny" else EmbeddedConfig()))


def _groups(s, g):
    """Four prompt structures over two images: 2, 3, 2 (a point and SAM's padding
    point) and 4 (three points and padding) sparse tokens."""
    def r(*shape):
        return torch.rand(*shape, generator=g) * s

    a, b = r(3, 2), r(3, 2)
    boxes = torch.cat([a.minimum(b), a.maximum(b)], 1)  # x0 y0 x1 y1
    return [
        dict(boxes=boxes, image_index=torch.tensor([0, 1, 1])),
        dict(boxes=boxes[:2], points=r(2, 1, 2), point_labels=torch.ones(2, 1, dtype=torch.int),
             image_index=torch.tensor([1, 0])),
        dict(points=r(4, 1, 2), point_labels=torch.ones(4, 1, dtype=torch.int), multimask=True,
             image_index=torch.tensor([0, 0, 1, 1])),
        dict(points=r(1, 3, 2), point_labels=torch.tensor([[1, 0, 1]], dtype=torch.int),
             image_index=torch.tensor([1])),
        # coordinates in original images of other sizes, and a previous round's mask
        dict(boxes=boxes[1:], orig_size=[(2 * s, s), (s, 3 * s // 2)],
             mask_input=torch.randn(2, 1, 4 * (s // 16), 4 * (s // 16), generator=g),
             image_index=torch.tensor([0, 1])),
    ]


def _loss(outs):
    return sum((low.square().mean() + low.mean() + iou.sum()) for low, iou in outs)


def test_one_pass_equals_a_pass_per_prompt_structure(model):
    g = torch.Generator().manual_seed(1)
    s = model.img_size
    emb = torch.randn(2, model.embed_dim, *model.embedding_size, generator=g)
    groups = _groups(s, g)
    params = [p for p in model.sam.mask_decoder.parameters()]
    e1 = emb.clone().requires_grad_(True)
    ref = [model.decode(e1, **kw) for kw in groups]
    ref_grads = torch.autograd.grad(_loss(ref), [e1] + params)
    e2 = emb.clone().requires_grad_(True)
    got = model.decode_groups(e2, groups)
    grads = torch.autograd.grad(_loss(got), [e2] + params)
    for (a, ai), (b, bi), kw in zip(got, ref, groups):
        assert a.shape == b.shape == (len(kw["image_index"]), 3 if kw.get("multimask") else 1,
                                      4 * model.embedding_size[0], 4 * model.embedding_size[1])
        assert ai.shape == bi.shape
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ai, bi, atol=1e-5, rtol=1e-5)
        assert a.abs().max() > 1e-3 and (a - a.mean()).abs().max() > 1e-4  # non-trivial
    for x, y in zip(grads, ref_grads):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)
    # one group: a plain pass, the same as decode
    one = model.decode_groups(emb, groups[:1])[0]
    torch.testing.assert_close(one[0], ref[0][0].detach(), atol=1e-5, rtol=1e-5)
    assert model.decode_groups(emb, []) == []


def test_padding_tokens_are_inert(model):
    """Whatever the padded tokens hold, the prompts' outputs are the same: they are
    masked out of every attention that reads tokens."""
    g = torch.Generator().manual_seed(2)
    dec, c = model.sam.mask_decoder, model.sam.prompt_encoder.embed_dim
    p, n = 5, 4
    src = torch.randn(p, c, *model.embedding_size, generator=g)
    pos = model.sam.prompt_encoder.get_dense_pe()
    sparse = torch.randn(p, n, c, generator=g)
    valid = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]],
                         dtype=torch.bool)
    a, ai = padded_predict_masks(dec, src, pos, sparse, valid)
    noise = torch.randn(p, n, c, generator=g) * 100
    b, bi = padded_predict_masks(dec, src, pos, torch.where(valid[..., None], sparse, noise), valid)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    torch.testing.assert_close(ai, bi, atol=1e-6, rtol=0)
    c, _ = padded_predict_masks(dec, src, pos, sparse, valid.int())  # (a 0/1 mask as well)
    torch.testing.assert_close(c, a, atol=0, rtol=0)
    # each prompt alone, unpadded, through segment_anything's own transformer
    for i in range(p):
        k = int(valid[i].sum())
        ref, ref_iou = predict_masks(dec, src[i:i + 1], pos, sparse[i:i + 1, :k])
        torch.testing.assert_close(a[i:i + 1], ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ai[i:i + 1], ref_iou, atol=1e-5, rtol=1e-5)
    # no padding: segment_anything's transformer, to float rounding
    full, full_iou = padded_predict_masks(dec, src, pos, sparse)
    ref, ref_iou = predict_masks(dec, src, pos.expand(p, -1, -1, -1), sparse)
    torch.testing.assert_close(full, ref, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(a).all() and torch.isfinite(ai).all()


def test_saturated_padding_keeps_gradients_finite(model):
    g = torch.Generator().manual_seed(3)
    dec, c = model.sam.mask_decoder, model.sam.prompt_encoder.embed_dim
    src = (torch.randn(2, c, *model.embedding_size, generator=g) * 50).requires_grad_(True)
    sparse = (torch.randn(2, 3, c, generator=g) * 50).requires_grad_(True)
    valid = torch.tensor([[1, 0, 0], [1, 1, 0]], dtype=torch.bool)
    low, iou = padded_predict_masks(dec, src, model.sam.prompt_encoder.get_dense_pe(), sparse, valid)
    (low.sum() + iou.sum()).backward()
    assert torch.isfinite(src.grad).all() and torch.isfinite(sparse.grad).all()
    assert (sparse.grad[~valid] == 0).all()  # nothing reads a padded token


def test_errors_name_what_is_wrong(model):
    emb = torch.zeros(1, model.embed_dim, *model.embedding_size)
    with pytest.raises(ConfigError, match="unknown keys.*'box'"):
        model.decode_groups(emb, [dict(box=torch.zeros(1, 4))])
    with pytest.raises(ConfigError, match="give boxes, points"):
        model.decode_groups(emb, [dict(boxes=torch.zeros(1, 4)), dict(multimask=True)])
    dec, c = model.sam.mask_decoder, model.sam.prompt_encoder.embed_dim
    with pytest.raises(ConfigError, match=r"valid must be \[P, N\] = \(2, 3\), got \(2, 2\)"):
        padded_predict_masks(dec, torch.zeros(2, c, *model.embedding_size),
                             model.sam.prompt_encoder.get_dense_pe(), torch.zeros(2, 3, c),
                             torch.ones(2, 2, dtype=torch.bool))


def test_pretraining_loss_is_the_same_in_one_decoder_pass(varied_sam):
    """A pretraining step's loss and gradient with ``one_decoder_pass`` equal those of a
    pass per prompt kind, to float rounding."""
    cfg = PretrainConfig(steps=4, images_per_step=3, prompts_per_image=8, model=TINY_CONFIG)
    model = PromptableSAM(varied_sam(TINY_CONFIG, seed=4))
    params = list(model.sam.parameters())
    images, groups = make_batch(np.random.default_rng([0, 0, 3]), cfg)
    assert len(groups) >= 3  # several prompt structures in the step
    out = {}
    for one in (False, True):
        c = PretrainConfig(**{**cfg.__dict__, "one_decoder_pass": one})
        loss, stats = step_loss(model, images, groups, c, np.random.default_rng(0))
        out[one] = (loss.detach(), {k: v.detach() for k, v in stats.items()},
                    torch.autograd.grad(loss, params, allow_unused=True))
    torch.testing.assert_close(out[True][0], out[False][0], atol=1e-6, rtol=1e-5)
    for k in out[False][1]:
        torch.testing.assert_close(out[True][1][k], out[False][1][k], atol=1e-6, rtol=1e-5)
    for a, b in zip(out[True][2], out[False][2]):
        if b is None:
            assert a is None or not a.any()
        else:
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)



def test_iterative_rounds_keep_a_pass_per_kind(varied_sam):
    """Corrective rounds decode each kind again with its own points: the one-pass
    option leaves such a step on the per-kind path (the same loss, bit for bit)."""
    cfg = PretrainConfig(steps=4, images_per_step=2, prompts_per_image=6, iterative_rounds=1,
                         model=TINY_CONFIG)
    model = PromptableSAM(varied_sam(TINY_CONFIG, seed=5))
    images, groups = make_batch(np.random.default_rng([0, 0, 4]), cfg)
    losses = [step_loss(model, images, groups,
                        PretrainConfig(**{**cfg.__dict__, "one_decoder_pass": one}),
                        np.random.default_rng(0))[0] for one in (False, True)]
    assert torch.equal(losses[0], losses[1])
