"""The on-disk image-embedding cache: exact, computed once, invalidated when stale."""
import warnings

import numpy as np
import pytest
import torch

from fuzzylogic_seg.sam.build import TINY_CONFIG, build_embedded
from fuzzylogic_seg.sam.cache import EmbeddingCache, encoder_fingerprint, image_hash
from fuzzylogic_seg.sam.forward import PromptableSAM


pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/seg/conftest.py)


def _model(seed=0):
    torch.manual_seed(seed)
    return PromptableSAM(build_embedded(TINY_CONFIG))


class Counting:
    """Wraps a PromptableSAM, counting image-encoder calls."""

    def __init__(self, model):
        self.model, self.calls = model, 0
        orig = model.embed

        def embed(x):
            self.calls += x.shape[0]
            return orig(x)

        model.embed = embed


def _img(h, w, seed):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8))


def _direct(model, img):
    with torch.no_grad():
        x, _ = model.preprocess(img)
        return model.embed(x)[0]


def test_embedding_is_exact_and_computed_once(tmp_path):
    model = _model()
    counter = Counting(model)
    cache = EmbeddingCache.for_model(tmp_path, model)
    img = _img(40, 70, 0)
    first = cache.get(model, "a/b c", img)
    assert counter.calls == 1
    assert torch.equal(first.embedding, _direct(model, img))
    assert first.orig_size == (40, 70) and first.input_size == model.input_size((40, 70))
    second = EmbeddingCache.for_model(tmp_path, model).get(model, "a/b c", img)
    assert counter.calls == 2 - 1 + 1  # only the direct reference call above
    assert torch.equal(second.embedding, first.embedding)
    assert second.input_size == first.input_size and second.orig_size == first.orig_size
    assert len(list(tmp_path.rglob("*.pt"))) == 1


def test_batch_of_misses_matches_single_images(tmp_path):
    model = _model()
    counter = Counting(model)
    cache = EmbeddingCache.for_model(tmp_path, model)
    imgs = [_img(30 + 5 * i, 64 - 4 * i, i) for i in range(5)]
    ids = [f"im{i}" for i in range(5)]
    cache.get(model, ids[2], imgs[2])
    got = cache.get_many(model, ids, imgs, batch_size=3)
    assert counter.calls == 1 + 4  # image 2 came from disk
    for im, g in zip(imgs, got):
        assert torch.allclose(g.embedding, _direct(model, im), atol=1e-5)
    assert cache.hits == 1


def test_fp16_entries_are_rounded_and_half_the_size(tmp_path):
    model = _model()
    img = _img(64, 64, 1)
    c32 = EmbeddingCache.for_model(tmp_path / "32", model)
    c16 = EmbeddingCache.for_model(tmp_path / "16", model, fp16=True)
    e32 = c32.get(model, "x", img).embedding
    fresh = c16.get(model, "x", img).embedding
    again = c16.get(model, "x", img).embedding
    assert fresh.dtype == again.dtype == torch.float32
    assert torch.equal(fresh, e32.half().float()) and torch.equal(again, fresh)
    s32 = c32.path("x").stat().st_size
    s16 = c16.path("x").stat().st_size
    assert s16 < 0.75 * s32
    # Asking for another precision recomputes instead of serving a mismatched entry.
    c32b = EmbeddingCache(tmp_path / "16", c16.fingerprint, fp16=False)
    assert torch.equal(c32b.get(model, "x", img).embedding, e32) and c32b.stale == 1


def test_entries_made_in_another_compute_precision_are_recomputed(tmp_path):
    """An entry records the precision the encoder ran in (bf16 under AMP on a GPU):
    a run in another precision recomputes instead of reusing it, and entries made
    before the field existed count as fp32."""
    from fuzzylogic_seg.io import load_torch, save_torch

    model = _model()
    img = _img(64, 64, 3)
    c32 = EmbeddingCache.for_model(tmp_path, model)
    e32 = c32.get(model, "x", img).embedding
    assert load_torch(c32.path("x"))["compute"] == "fp32"
    bf = EmbeddingCache.for_model(tmp_path, model, compute="bf16")
    bf.get(model, "x", img)
    assert bf.stale == 1 and bf.hits == 0
    assert load_torch(bf.path("x"))["compute"] == "bf16"
    again = EmbeddingCache.for_model(tmp_path, model)
    assert torch.equal(again.get(model, "x", img).embedding, e32) and again.stale == 1
    entry = load_torch(again.path("x"))
    del entry["compute"]  # as written by an older version
    save_torch(entry, again.path("x"))
    old = EmbeddingCache.for_model(tmp_path, model)
    assert torch.equal(old.get(model, "x", img).embedding, e32) and old.hits == 1


def test_other_model_and_changed_image_are_recomputed(tmp_path):
    a, b = _model(0), _model(1)
    img = _img(50, 50, 2)
    ca = EmbeddingCache.for_model(tmp_path, a)
    ca.get(a, "x", img)
    cb = EmbeddingCache.for_model(tmp_path, b)
    assert cb.fingerprint != ca.fingerprint
    eb = cb.get(b, "x", img).embedding
    assert torch.equal(eb, _direct(b, img)) and cb.hits == 0
    # Same id, new pixels: the entry is stale.
    img2 = img.clone()
    img2[0, 0, 0] ^= 1
    e2 = ca.get(a, "x", img2).embedding
    assert ca.stale == 1 and torch.equal(e2, _direct(a, img2))


def test_fingerprint_ignores_the_decoder_but_not_the_encoder():
    m = _model()
    f = encoder_fingerprint(m)
    with torch.no_grad():
        m.sam.mask_decoder.iou_token.weight.add_(1.0)
        m.sam.prompt_encoder.no_mask_embed.weight.add_(1.0)
    assert encoder_fingerprint(m) == f  # decoder fine-tuning keeps the cache valid
    with torch.no_grad():
        m.sam.image_encoder.neck[0].weight[0, 0] += 1e-3
    assert encoder_fingerprint(m) != f


def test_corrupt_entry_is_recomputed_with_a_warning(tmp_path):
    model = _model()
    cache = EmbeddingCache.for_model(tmp_path, model)
    img = _img(32, 32, 3)
    cache.get(model, "x", img)
    cache.path("x").write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable"):
        got = cache.get(model, "x", img)
    assert torch.equal(got.embedding, _direct(model, img))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.get(model, "x", img)  # repaired


def test_image_hash_is_layout_independent():
    img = _img(10, 12, 4)
    assert image_hash(img) == image_hash(img.permute(1, 2, 0).numpy())
    assert image_hash(img) != image_hash(img.flip(-1))
