"""What is trained: decoder (default), prompt encoder, LoRA adapters in the encoder."""
import pytest
import torch

from fuzzylogic_seg.errors import ConfigError
from fuzzylogic_seg.sam.build import TINY_CONFIG, build_embedded
from fuzzylogic_seg.sam.forward import PromptableSAM
from fuzzylogic_seg.sam.lora import (LoRALinear, add_lora, encoder_frozen, has_lora, merge_lora,
                                     trainable_parameters)


pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/seg/conftest.py)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return PromptableSAM(build_embedded(TINY_CONFIG))


def _run(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8, generator=g)
    logits, iou = model(img, boxes=torch.tensor([[4.0, 6.0, 40.0, 30.0]]),
                        points=torch.tensor([[[20.0, 20.0]]]), point_labels=torch.tensor([[1]]),
                        multimask=True)
    return logits, iou


def _grad_names(model):
    return {n for n, p in model.sam.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_lora_linear_matches_hand_written_formula():
    torch.manual_seed(1)
    base = torch.nn.Linear(6, 9)
    lora = LoRALinear(base, rank=2, alpha=6.0)
    with torch.no_grad():
        lora.lora_B.normal_()
    x = torch.randn(4, 5, 6)
    want = x @ base.weight.T + base.bias + (6.0 / 2) * (x @ lora.lora_A.T @ lora.lora_B.T)
    assert torch.allclose(lora(x), want, atol=1e-5)
    assert torch.allclose(lora.merged()(x), want, atol=1e-5)


def test_lora_leaves_output_unchanged_at_init(model):
    before = _run(model)
    n = add_lora(model, rank=4)
    assert n == TINY_CONFIG.depth and has_lora(model)
    after = _run(model)
    for a, b in zip(before, after):
        assert torch.equal(a, b)
    assert add_lora(model, rank=4) == 0  # idempotent
    with pytest.raises(ConfigError, match="rank 4"):
        add_lora(model, rank=8)


def test_default_trains_only_the_decoder(model):
    params = trainable_parameters(model)
    assert {id(p) for p in params} == {id(p) for p in model.sam.mask_decoder.parameters()}
    logits, iou = _run(model)
    (logits.mean() + iou.sum()).backward()
    names = _grad_names(model)
    assert names and all(n.startswith("mask_decoder.") for n in names)
    assert all(not p.requires_grad for p in model.sam.image_encoder.parameters())


def test_decoder_and_prompt_encoder(model):
    trainable_parameters(model, train=("decoder", "prompt_encoder"))
    logits, iou = _run(model)
    (logits.mean() + iou.sum()).backward()
    names = _grad_names(model)
    assert any(n.startswith("prompt_encoder.point_embeddings") for n in names)
    assert any(n.startswith("mask_decoder.") for n in names)
    assert not any(n.startswith("image_encoder.") for n in names)


def test_lora_trains_only_adapters_and_merges_back(model):
    params = trainable_parameters(model, train=("lora",), lora_rank=2)
    assert len(params) == 2 * TINY_CONFIG.depth
    assert all(p.requires_grad for p in params)
    logits, iou = _run(model)
    (logits.mean() + iou.sum()).backward()
    names = _grad_names(model)
    # B starts at zero, so at step one only B gets a gradient (dL/dA = B^T ...= 0).
    assert names and all(n.endswith("lora_B") for n in names)
    assert all(n.startswith("image_encoder.blocks.") for n in names)
    opt = torch.optim.SGD(params, lr=0.5)
    opt.step()
    assert model.sam.image_encoder.blocks[0].attn.qkv.weight.grad is None  # frozen base weight
    adapted = _run(model)
    assert not torch.allclose(adapted[0], _run(PromptableSAM(build_embedded(TINY_CONFIG)))[0])
    merge_lora(model)
    assert not has_lora(model)
    merged = _run(model)
    assert torch.allclose(adapted[0], merged[0], atol=1e-4)
    # A merged model has the stock state-dict keys again.
    assert set(model.sam.state_dict()) == set(build_embedded(TINY_CONFIG).state_dict())
    # ... and its encoder stays frozen (the merged qkv layers were trainable once)
    assert not any(p.requires_grad for p in model.sam.image_encoder.parameters())


def test_adding_lora_again_with_another_alpha_is_refused(model):
    from fuzzylogic_seg.errors import ConfigError
    from fuzzylogic_seg.sam.lora import add_lora

    assert add_lora(model, 2, alpha=8) == TINY_CONFIG.depth
    assert add_lora(model, 2, alpha=8) == 0  # idempotent
    with pytest.raises(ConfigError, match="alpha 8.0, asked 2.0"):
        add_lora(model, 2)


def test_encoder_frozen_and_errors(model):
    assert encoder_frozen(("decoder",)) and encoder_frozen(("decoder", "prompt_encoder"))
    assert not encoder_frozen(("decoder", "lora")) and not encoder_frozen("encoder")
    with pytest.raises(ConfigError, match="lora_rank"):
        trainable_parameters(model, train=("lora",))
    with pytest.raises(ConfigError, match="unknown"):
        trainable_parameters(model, train=("head",))
    full = trainable_parameters(model, train="encoder")
    assert len(full) == len(list(model.sam.image_encoder.parameters()))
