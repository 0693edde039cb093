"""The baseline model families: shapes, exact parameter counts, and ``previt``'s weight loading."""
from __future__ import annotations

import pytest
import torch

import gatedconv
from gatedconv.models import create_model, model_entrypoint

TINY_VIT = {"patch_size": 8, "num_layers": 1, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32}

# Exact parameter counts at the defaults (num_classes=10).
PARAM_COUNTS = {
    "mlp": 308_310,
    "convnet": 42_362,
    "convnet_small": 5_538,
    "convnet_tiny": 4_146,
    "cnn_small": 51_898,
    "cnn_medium": 2_791_434,
    "cnn_base": 620_362,
    "cnn_base_bn": 620_586,
    "cnn_base_bn_dropout": 620_586,
    "cnn_base_wide": 2_474_058,
    "cnn_base_deep": 3_249_098,
    "resnet": 11_173_962,
    "resnet_small": 272_474,
    "vit": 1_905_834,
}


BASELINE_MODULES = ("gatedconv.models.cnn", "gatedconv.models.resnet", "gatedconv.models.vit")


def _baselines() -> list:
    return [n for n in gatedconv.list_models() if model_entrypoint(n).__module__ in BASELINE_MODULES]


def _save_tiny_vit(path, image_size: int = 32, **overrides):
    """A randomly initialised tiny torchvision VisionTransformer, saved the way vit_b_16 weights would be."""
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    arch = dict(TINY_VIT, **overrides)
    ref = VisionTransformer(image_size=image_size, **arch)
    torch.save(ref.state_dict(), path)
    return ref


@pytest.fixture(scope="module")
def tiny_vit_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("previt") / "tiny_vit.pth"
    _save_tiny_vit(path, image_size=32)
    return path


def _kwargs(name: str, tiny_vit_file) -> dict:
    return dict(weights=str(tiny_vit_file), image_size=32, **TINY_VIT) if name == "previt" else {}


def test_all_baselines_registered():
    expected = set(PARAM_COUNTS) | {"previt"}
    assert expected <= set(_baselines())


@pytest.mark.parametrize("name", gatedconv.list_models())
def test_every_model_maps_images_to_logits(name, tiny_vit_file):
    torch.manual_seed(0)
    net = create_model(name, **_kwargs(name, tiny_vit_file))
    x = torch.randn(2, 3, 32, 32)
    net.train()
    out = net(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    net.eval()
    with torch.no_grad():
        out = net(x)
    assert out.shape == (2, 10) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert net.num_params() == sum(p.numel() for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_exact_parameter_counts(name):
    net = create_model(name)
    assert net.num_params() == PARAM_COUNTS[name]
    assert net.num_params(trainable_only=False) == PARAM_COUNTS[name]


@pytest.mark.parametrize("name", ["mlp", "convnet_tiny", "cnn_small", "cnn_medium", "cnn_base_bn_dropout",
                                  "resnet_small", "vit"])
def test_num_classes_keyword(name):
    net = create_model(name, num_classes=7).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_resnet_depth_and_widths():
    assert create_model("resnet", depth=10, widths=(8, 16, 32, 64)).config.blocks == (1, 1, 1, 1)
    assert create_model("resnet", depth=34, widths=(8, 16, 32, 64)).config.blocks == (3, 4, 6, 3)
    assert create_model("resnet_small").config.blocks == (3, 3, 3)
    with pytest.raises(ValueError, match="depth 19"):
        create_model("resnet", depth=19)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_keywords(pool):
    net = create_model("vit", dim=32, depth=2, heads=4, mlp_ratio=1.5, patch_size=8, stem_channels=(8,), pool=pool)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="divisible"):
        create_model("vit", dim=30, heads=4)


def test_vit_cpu_attention_equals_sdpa():
    """On CPU the ViT's attention is written out (faster than the CPU flash kernel for short sequences); it must
    be the same function as F.scaled_dot_product_attention, outputs and gradients."""
    from einops import rearrange

    from gatedconv.models.vit import Attention

    torch.manual_seed(0)
    attn = Attention(dim=24, heads=3)
    x = torch.randn(2, 5, 24, requires_grad=True)
    out = attn(x)
    q, k, v = rearrange(attn.qkv(x), "b n (three h d) -> three b h n d", three=3, h=3)
    ref = attn.proj(rearrange(torch.nn.functional.scaled_dot_product_attention(q, k, v), "b h n d -> b n (h d)"))
    torch.testing.assert_close(out, ref)
    g_out, = torch.autograd.grad(out.square().sum(), x)
    g_ref, = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(g_out, g_ref)


def test_previt_without_weights_is_one_clear_line():
    with pytest.raises(ValueError) as e:
        create_model("previt")
    msg = str(e.value)
    assert msg.startswith("previt needs pretrained weights: pass a local file") and "\n" not in msg


def test_previt_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no such weights file"):
        create_model("previt", weights=str(tmp_path / "nope.pth"))


def test_previt_loads_weights_and_resizes(tmp_path):
    path = tmp_path / "vit48.pth"
    ref = _save_tiny_vit(path, image_size=48)  # 32x32 inputs get resized to 48x48 inside the model
    net = create_model("previt", weights=str(path), image_size=48, num_classes=10, **TINY_VIT)
    ref_state, state = ref.state_dict(), net.vit.state_dict()
    for k, v in ref_state.items():
        if not k.startswith("heads."):
            assert torch.equal(state[k], v), k
    assert net.vit.heads.weight.shape == (10, TINY_VIT["hidden_dim"])
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_previt_wrong_architecture_and_freezing(tiny_vit_file):
    with pytest.raises(ValueError) as e:
        create_model("previt", weights=str(tiny_vit_file), image_size=32, **dict(TINY_VIT, num_layers=2))
    assert "does not fit" in str(e.value) and "\n" not in str(e.value)
    net = create_model("previt", weights=str(tiny_vit_file), image_size=32, num_classes=3, freeze_backbone=True,
                       **TINY_VIT)
    assert net.num_params() == TINY_VIT["hidden_dim"] * 3 + 3
