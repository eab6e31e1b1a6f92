"""HGNetv2 against the official reference fixtures (key layout and backbone outputs), RT-DETRv2's L/X/H
and the B-series of D-FINE / DEIM / RT-DETRv4."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from rtdetr.models.nn.hgnetv2 import ARCHITECTURES, ConvBNAct, HGNetv2
from rtdetr.models.reparam import fuse_model
from rtdetr.models.weights import normalise_keys
from tests.recipe import load_reference, recipe_image, recipe_state_dict

PREFIX = "backbone."
VARIANTS = ["l", "x", "h"]
REL_TOL = 1e-4


def backbone_manifest(reference: dict) -> dict[str, list[int]]:
    """The official `backbone.*` entries of the manifest, prefix stripped."""
    return {
        key[len(PREFIX):]: shape
        for key, shape in reference["state_dict_manifest"].items()
        if key.startswith(PREFIX)
    }


def relative_deviation(actual: float, expected: float) -> float:
    return abs(actual - expected) / max(abs(expected), 1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_layout_matches_official(variant):
    reference = load_reference(f"rtdetrv2_hgnetv2_{variant}")
    model = HGNetv2(variant.upper())
    ours = {key: list(value.shape) for key, value in model.state_dict().items()}
    assert ours == backbone_manifest(reference)


@pytest.mark.parametrize("variant", VARIANTS)
def test_outputs_match_official(variant):
    reference = load_reference(f"rtdetrv2_hgnetv2_{variant}")
    model = HGNetv2(variant.upper()).eval()

    official = recipe_state_dict(reference["state_dict_manifest"])
    weights = {key[len(PREFIX):]: value for key, value in official.items() if key.startswith(PREFIX)}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert unexpected == []
    # The recipe covers every backbone entry (all weights and frozen-norm buffers).
    assert missing == []

    inp = reference["input"]
    image = recipe_image(inp["recipe_image_seed"], inp["h"], inp["w"])
    with torch.no_grad():
        outputs = model(image)

    assert len(outputs) == 3
    worst = 0.0
    for i, out in enumerate(outputs):
        expected = reference["stats"][f"backbone.{i}"]
        assert list(out.shape) == expected["shape"]
        out64 = out.double()
        actual = {"mean": out64.mean().item(), "std": out64.std().item(), "abs_sum": out64.abs().sum().item()}
        for stat, value in actual.items():
            deviation = relative_deviation(value, expected[stat])
            worst = max(worst, deviation)
            assert deviation < REL_TOL, f"backbone.{i} {stat}: {value} vs official {expected[stat]}"
    print(f"HGNetv2-{variant.upper()}: largest relative deviation of the stats {worst:.2e}")


def test_out_channels_and_strides():
    model = HGNetv2("L", freeze_norm=False)
    assert model.out_channels == [512, 1024, 2048]
    assert model.out_strides == [8, 16, 32]
    outputs = model.eval()(torch.zeros(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outputs] == [(1, 512, 8, 12), (1, 1024, 4, 6), (1, 2048, 2, 3)]

    model = HGNetv2("X", return_idx=(0, 3))
    assert model.out_channels == [128, 2048]
    assert model.out_strides == [4, 32]


@pytest.mark.parametrize("freeze_at", [-1, 0, 2])
def test_freeze_at(freeze_at):
    model = HGNetv2("L", freeze_at=freeze_at, freeze_norm=False)

    def trainable(module: nn.Module) -> bool:
        return all(p.requires_grad for p in module.parameters())

    def frozen(module: nn.Module) -> bool:
        return not any(p.requires_grad for p in module.parameters())

    if freeze_at < 0:
        assert trainable(model)
        return
    assert frozen(model.stem)
    for i, stage in enumerate(model.stages):
        assert (frozen if i < freeze_at else trainable)(stage)


def test_freeze_norm():
    frozen = HGNetv2("L", freeze_norm=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules())
    assert not any(k.endswith("num_batches_tracked") for k in frozen.state_dict())

    trainable = HGNetv2("L", freeze_norm=False)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in trainable.modules())
    assert any(k.endswith("num_batches_tracked") for k in trainable.state_dict())


def test_unknown_variant():
    with pytest.raises(ValueError):
        HGNetv2("M")


# ---------------------------------------------------------------- the B-series (D-FINE / DEIM / RT-DETRv4)

V4 = Path(__file__).resolve().parents[1] / "fixtures" / "official_v4"


@pytest.mark.parametrize("fixture, variant, use_lab, freeze_norm", [
    ("dfine_hgnetv2_s", "B0", True, False),
    ("deim_hgnetv2_m", "B2", True, False),
    ("dfine_hgnetv2_l", "B4", False, True),
])
def test_b_series_layout_matches_the_official_manifests(fixture, variant, use_lab, freeze_norm):
    """Every official backbone key and shape, through the key map that loading uses (D-FINE names
    two blocks and the 2x2 stem convs differently: `rtdetr.models.weights.DFINE_RENAMES`)."""
    manifest = json.loads((V4 / f"{fixture}.json").read_text())["state_dict_manifest"]
    official = normalise_keys({k[len(PREFIX):]: torch.empty(shape) for k, shape in manifest.items()
                               if k.startswith(PREFIX)})
    model = HGNetv2(variant, freeze_at=-1, freeze_norm=freeze_norm, use_lab=use_lab)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == {k: list(v.shape) for k, v in official.items()}


def test_b4_b5_b6_are_l_x_h():
    for b, name in (("B4", "L"), ("B5", "X"), ("B6", "H")):
        assert ARCHITECTURES[b] == ARCHITECTURES[name]


def test_learnable_affine_follows_the_activation_and_survives_fusing():
    torch.manual_seed(0)
    block = ConvBNAct(3, 4, kernel_size=3, lab=True).eval()
    block.lab.scale.data.fill_(2.0)
    block.lab.bias.data.fill_(-0.5)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        plain = torch.relu(block.bn(block.conv(x)))
        assert torch.allclose(block(x), 2.0 * plain - 0.5)  # by hand: scale * relu(bn(conv(x))) + bias
        fused = fuse_model(block)
        assert torch.allclose(fused(x), block(x), atol=1e-5)  # folding changes float rounding only
    assert "lab.scale" in dict(ConvBNAct(3, 4, lab=True).named_parameters())
    assert not any("lab" in k for k in ConvBNAct(3, 4, act=False, lab=True).state_dict())  # no act, no LAB
