"""Building and loading SAM: the embedded model, real-type checkpoints through
segment_anything.sam_model_registry, safe loading and actionable errors."""
import importlib
from pathlib import Path

import pytest
import segment_anything
import torch

from fuzzylogic_seg.errors import CheckpointError, ConfigError
from fuzzylogic_seg.sam import build as B
from fuzzylogic_seg.sam.build import (TINY_CONFIG, EmbeddedConfig, build_embedded,
                                      embedded_checkpoint, load_sam, model_fingerprint)

# The package re-exports a function named build_sam, hiding the submodule.
sa_build = importlib.import_module("segment_anything.build_sam")


def _perturbed(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return model


def _equal_states(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def no_default_weights(tmp_path, monkeypatch):
    """No shipped weights, an empty user cache."""
    monkeypatch.setattr(B, "package_weights_path", lambda: tmp_path / "pkg" / "sam_embedded.pt")
    monkeypatch.setenv("FUZZYSEG_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_embedded_roundtrip_is_exact_and_records_architecture(tmp_path):
    torch.manual_seed(0)
    sam = _perturbed(build_embedded(TINY_CONFIG))
    path = tmp_path / "w.pt"
    torch.save(embedded_checkpoint(sam), path)
    loaded = load_sam("embedded", checkpoint=path)
    assert _equal_states(sam, loaded)
    assert loaded.embedded_config == TINY_CONFIG
    assert loaded.image_encoder.img_size == 64 and not loaded.training
    assert loaded.weights_path == str(path)


def test_half_checkpoint_rounds_weights_but_not_the_fourier_matrix(tmp_path):
    torch.manual_seed(1)
    sam = _perturbed(build_embedded(TINY_CONFIG))
    path = tmp_path / "w16.pt"
    ckpt = embedded_checkpoint(sam, half=True)
    torch.save(ckpt, path)
    key = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
    assert ckpt["state_dict"][key].dtype == torch.float32
    assert ckpt["state_dict"]["mask_decoder.iou_token.weight"].dtype == torch.float16
    loaded = load_sam("embedded", checkpoint=path)
    for k, v in sam.state_dict().items():
        want = v if k == key else v.half().float()
        assert torch.equal(loaded.state_dict()[k], want), k
        assert loaded.state_dict()[k].dtype == torch.float32


def test_default_embedded_architecture_size_and_grid():
    sam = build_embedded(EmbeddedConfig())
    n = sum(p.numel() for p in sam.parameters())
    assert 2e6 <= n <= 5e6  # 2-5 M parameters: an fp16 file under ~8 MB
    assert sam.image_encoder.img_size == 256
    assert tuple(sam.prompt_encoder.image_embedding_size) == (16, 16)
    with torch.no_grad():
        emb = sam.image_encoder(torch.zeros(1, 3, 256, 256))
    assert emb.shape == (1, 128, 16, 16)


def test_missing_embedded_weights_say_how_to_make_them(no_default_weights):
    with pytest.raises(CheckpointError, match="fuzzyseg sam pretrain"):
        load_sam("embedded")


def test_user_cache_is_used_when_nothing_ships_and_package_wins_otherwise(no_default_weights):
    torch.manual_seed(2)
    cached, shipped = _perturbed(build_embedded(TINY_CONFIG), 1), _perturbed(build_embedded(TINY_CONFIG), 2)
    cache_file = no_default_weights / "cache" / "sam_embedded.pt"
    cache_file.parent.mkdir(parents=True)
    torch.save(embedded_checkpoint(cached), cache_file)
    assert _equal_states(load_sam(), cached)
    pkg = B.package_weights_path()
    pkg.parent.mkdir(parents=True)
    torch.save(embedded_checkpoint(shipped), pkg)
    assert _equal_states(load_sam(), shipped)


def test_cache_dir_env_and_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("FUZZYSEG_CACHE", str(tmp_path / "c"))
    assert B.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FUZZYSEG_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert B.cache_dir() == tmp_path / "x" / "fuzzyseg"


@pytest.fixture
def small_registry(monkeypatch):
    """Make segment_anything's real registry build a narrow, shallow ViT.

    The registry functions (build_sam_vit_b, ...) run unchanged and call the
    module's _build_sam with the real vit_b/l/h hyper-parameters; this wrapper
    records them and shrinks width and depth, so no 375 MB model is made."""
    calls = []
    original = sa_build._build_sam

    def shrunk(encoder_embed_dim, encoder_depth, encoder_num_heads, encoder_global_attn_indexes,
               checkpoint=None):
        calls.append((encoder_embed_dim, encoder_depth, encoder_num_heads,
                      list(encoder_global_attn_indexes), checkpoint))
        return original(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
                        encoder_global_attn_indexes=[1], checkpoint=checkpoint)

    monkeypatch.setattr(sa_build, "_build_sam", shrunk)
    return calls


def test_vit_b_checkpoint_through_the_registry(tmp_path, small_registry):
    torch.manual_seed(3)
    ref = _perturbed(segment_anything.sam_model_registry["vit_b"](checkpoint=None))
    path = tmp_path / "sam_vit_b_small.pth"
    torch.save(ref.state_dict(), path)  # a plain state dict, as Meta ships
    small_registry.clear()
    sam = load_sam("vit_b", checkpoint=path)
    # Built by the registry's vit_b entry with vit_b's own hyper-parameters ...
    assert small_registry == [(768, 12, 12, [2, 5, 8, 11], None)]
    # ... and loaded by us (weights_only), exactly.
    assert _equal_states(sam, ref)
    assert sam.image_encoder.img_size == 1024 and sam.sam_type == "vit_b"


def test_wrapped_model_key_is_accepted(tmp_path, small_registry):
    ref = _perturbed(segment_anything.sam_model_registry["vit_l"](checkpoint=None))
    path = tmp_path / "wrapped.pth"
    torch.save({"model": ref.state_dict(), "epoch": 3}, path)
    assert _equal_states(load_sam("vit_l", checkpoint=path), ref)
    assert small_registry[-1][:2] == (1024, 24)


def test_mismatched_checkpoint_names_file_and_keys(tmp_path, small_registry):
    path = tmp_path / "embedded_as_vit_b.pt"
    torch.save(build_embedded(TINY_CONFIG).state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        load_sam("vit_b", checkpoint=path)
    msg = str(err.value)
    assert str(path) in msg and "shape mismatch" in msg
    # A state dict missing a key names it.
    state = segment_anything.sam_model_registry["vit_b"]().state_dict()
    del state["mask_decoder.iou_token.weight"]
    state["extra.thing"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"missing keys, first: mask_decoder\.iou_token\.weight"
                       r".*unexpected keys, first: extra\.thing"):
        load_sam("vit_b", checkpoint=path)


def test_a_meta_checkpoint_of_another_type_says_which_type_it_is(tmp_path, small_registry):
    """Meta's files tell their type by the image encoder's width (768 / 1024 / 1280):
    loading one as the embedded model, or as another ViT, names the right --sam-type."""
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1, 64, 64, 768),
                "mask_decoder.iou_token.weight": torch.zeros(1, 256)}, path)
    with pytest.raises(CheckpointError, match="Meta's SAM vit_b checkpoint.*--sam-type vit_b") as e:
        load_sam("embedded", checkpoint=path)
    assert str(path) in str(e.value)
    with pytest.raises(CheckpointError, match="SAM vit_b checkpoint, not vit_l.*--sam-type vit_b"):
        load_sam("vit_l", checkpoint=path)


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path(_Evil.target),))


def test_pickled_code_is_never_run(tmp_path, small_registry):
    _Evil.target = str(tmp_path / "pwned")
    path = tmp_path / "evil.pth"
    torch.save({"w": _Evil()}, path)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_sam("vit_b", checkpoint=path)
    assert not (tmp_path / "pwned").exists()


def test_real_types_need_a_checkpoint_and_unknown_types_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="--sam-checkpoint"):
        load_sam("vit_h")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_sam("vit_h", checkpoint=tmp_path / "absent.pth")
    with pytest.raises(ConfigError, match="vit_b"):
        load_sam("vit_x")
    assert set(B.SAM_BUILDERS) == {"embedded", "vit_b", "vit_l", "vit_h"}


def test_bad_embedded_config_in_file(tmp_path):
    ckpt = embedded_checkpoint(build_embedded(TINY_CONFIG))
    ckpt["config"]["bogus"] = 1
    path = tmp_path / "bad.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="bad embedded SAM config"):
        load_sam("embedded", checkpoint=path)


def test_fingerprint_tracks_weights():
    torch.manual_seed(4)
    a = build_embedded(TINY_CONFIG)
    fa = model_fingerprint(a)
    assert model_fingerprint(a) == fa
    with torch.no_grad():
        a.mask_decoder.iou_token.weight[0, 0] += 1e-3
    assert model_fingerprint(a) != fa


def test_a_checkpoint_without_a_type_is_loaded_as_what_it_holds(tmp_path, small_registry):
    """--sam-checkpoint without --sam-type: the file's own type, told from its weights
    (Meta's by the encoder's width, ours by its format), never a guess."""
    from fuzzylogic_seg.sam.build import detect_sam_type, resolve_sam_type

    meta = {}
    for width, name in ((768, "vit_b"), (1024, "vit_l"), (1280, "vit_h")):
        meta[name] = tmp_path / f"{name}.pth"
        torch.save({"image_encoder.pos_embed": torch.zeros(1, 64, 64, width)}, meta[name])
        assert detect_sam_type(meta[name]) == name
    wrapped = tmp_path / "train_ckpt.pth"  # a training checkpoint wrapping the state dict
    torch.save({"model": {"image_encoder.pos_embed": torch.zeros(1, 64, 64, 1024)}}, wrapped)
    assert detect_sam_type(wrapped) == "vit_l"
    ours = tmp_path / "ours.pt"
    torch.save(embedded_checkpoint(build_embedded(TINY_CONFIG)), ours)
    assert detect_sam_type(ours) == "embedded"
    bare = tmp_path / "bare.pt"
    torch.save(build_embedded().state_dict(), bare)
    assert detect_sam_type(bare) == "embedded"
    other = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="cannot tell which SAM.*--sam-type") as e:
        detect_sam_type(other)
    assert str(other) in str(e.value)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        detect_sam_type(tmp_path / "absent.pth")
    assert resolve_sam_type(None, None) == "embedded"
    assert resolve_sam_type("vit_h", meta["vit_b"]) == "vit_h"  # given: the loader checks it
    assert resolve_sam_type(None, meta["vit_h"]) == "vit_h"


def test_run_takes_the_checkpoints_type(tmp_path):
    """From the flag, a config file or --set alike: a checkpoint without a type is
    loaded as what it holds; a given type is kept."""
    import argparse

    from fuzzylogic_seg import config as C
    from fuzzylogic_seg.commands.run import flags_to_config

    path = tmp_path / "sam_vit_l_0b3195.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1, 64, 64, 1024)}, path)
    base = {"dataset": "voc", "root": str(tmp_path), "out": str(tmp_path / "o")}
    args = argparse.Namespace(sam_checkpoint=str(path), sam_type=None)
    cfg = C.build(None, {**base, **flags_to_config(args)})
    assert cfg["sam"] == {"type": "vit_l", "checkpoint": str(path)}
    args = argparse.Namespace(sam_checkpoint=str(path), sam_type="vit_l")  # given and agreeing
    assert C.build(None, {**base, **flags_to_config(args)})["sam"]["type"] == "vit_l"
    f = tmp_path / "c.yaml"
    f.write_text(f"dataset: voc\nroot: {tmp_path}\nout: {tmp_path / 'o'}\n"
                 f"sam:\n  checkpoint: {path}\n")
    assert C.build(str(f))["sam"]["type"] == "vit_l"
    assert C.build(None, base, [f"sam.checkpoint={path}"])["sam"]["type"] == "vit_l"
    assert C.build(None, base)["sam"] == {"type": "embedded", "checkpoint": None}


def test_a_checkpoint_path_with_a_tilde_is_expanded(tmp_path, monkeypatch, small_registry):
    # `--sam-checkpoint=~/x.pth` reaches the program unexpanded (no shell expansion after '=')
    from fuzzylogic_seg.sam.build import detect_sam_type

    monkeypatch.setenv("HOME", str(tmp_path))
    torch.save({"image_encoder.pos_embed": torch.zeros(1, 64, 64, 768)}, tmp_path / "sam.pth")
    assert detect_sam_type("~/sam.pth") == "vit_b"
    torch.save(embedded_checkpoint(build_embedded(TINY_CONFIG)), tmp_path / "ours.pt")
    assert load_sam("embedded", "~/ours.pt").weights_path == str(tmp_path / "ours.pt")


def test_unreadable_checkpoints_say_what_the_file_is(tmp_path):
    from fuzzylogic_seg.io import load_torch

    (tmp_path / "page.pth").write_text("<!DOCTYPE html><html>Not Found</html>")
    (tmp_path / "empty.pth").write_bytes(b"")
    torch.save({"a": torch.zeros(3)}, tmp_path / "ok.pth")
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[:len(data) // 2])
    torch.save(torch.nn.Linear(2, 2), tmp_path / "model.pth")  # a whole pickled module
    cases = {"page": "not a PyTorch checkpoint: it begins with b'<!DOCTYPE html><'",
             "empty": "the file is empty", "cut": "a damaged or truncated PyTorch file",
             "model": "it holds objects .*such as torch.nn.modules.linear.Linear.*save the model's "
                      "state_dict"}
    for name, msg in cases.items():
        with pytest.raises(CheckpointError, match=f"{name}.pth: cannot read checkpoint: {msg}") as e:
            load_torch(tmp_path / f"{name}.pth")
        assert "weights_only=False" not in str(e.value)
        assert len(str(e.value)) < len(str(tmp_path)) + 400  # one line a user can read
    with pytest.raises(CheckpointError, match="a folder, not a checkpoint file"):
        load_torch(tmp_path)


def test_a_type_that_contradicts_the_checkpoint_is_refused_before_any_stage(tmp_path, small_registry):
    from fuzzylogic_seg import config as C

    meta = tmp_path / "sam_vit_b.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1, 64, 64, 768)}, meta)
    base = {"dataset": "voc", "root": str(tmp_path), "out": str(tmp_path / "o")}
    with pytest.raises(ConfigError, match="sam.type vit_l .* holds the vit_b model: pass --sam-type vit_b"):
        C.build(None, {**base, "sam": {"type": "vit_l", "checkpoint": str(meta)}})
    ours = tmp_path / "ours.pt"
    torch.save(embedded_checkpoint(build_embedded(TINY_CONFIG)), ours)
    with pytest.raises(ConfigError, match="holds the embedded model"):
        C.build(None, {**base, "sam": {"type": "vit_b", "checkpoint": str(ours)}})
    with pytest.raises(CheckpointError, match="embedded model's checkpoint.*--sam-type embedded"):
        load_sam("vit_b", checkpoint=ours)  # the library path says the same
