"""The zoo knows every official architecture; those without a reference fixture are checked
against the official key naming of their closest fixture model, with shapes worked out by hand."""
from __future__ import annotations

import pytest
import torch

import rtdetr
from rtdetr.models.weights import normalise_keys
from rtdetr.models.zoo import ZOO
from tests.recipe import OFFICIAL, OFFICIAL_V4, load_reference

OFFICIAL_NAMES = {
    "rtdetr_r18vd", "rtdetr_r34vd", "rtdetr_r50vd_m", "rtdetr_r50vd", "rtdetr_r101vd",
    "rtdetrv2_r18vd", "rtdetrv2_r34vd", "rtdetrv2_r50vd_m", "rtdetrv2_r50vd", "rtdetrv2_r101vd",
    "rtdetrv2_hgnetv2_l", "rtdetrv2_hgnetv2_x", "rtdetrv2_hgnetv2_h",
    "rtdetrv2_r18vd_sp1", "rtdetrv2_r18vd_sp2", "rtdetrv2_r18vd_sp3",
    "rtdetrv2_r18vd_dsp", "rtdetrv2_r34vd_dsp", "rtdetrv2_r50vd_m_dsp", "rtdetrv2_r50vd_dsp",
    *(f"{family}_hgnetv2_{size}" for family in ("dfine", "deim") for size in "nsmlx"),
    *(f"rtv4_hgnetv2_{size}" for size in "smlx"),
    *(f"deim_rtv2_{depth}" for depth in ("r18vd", "r34vd", "r50vd_m", "r50vd", "r101vd")),
}


def shapes_of(sd: dict) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in sd.items()}


def official_shapes(name: str) -> dict[str, list[int]]:
    manifest = load_reference(name)["state_dict_manifest"]
    return shapes_of(normalise_keys({k: torch.empty(s, device="meta") for k, s in manifest.items()}))


def test_zoo_has_every_official_architecture():
    detectors = {n for n in ZOO if ZOO[n].config.task == "detect"}   # `*_seg` siblings: tests/nn/test_mask_head.py
    assert detectors == OFFICIAL_NAMES | {"demo"}
    assert all(ZOO[n].weights is not None and ZOO[n].weights.url.startswith("https://") for n in OFFICIAL_NAMES)


@pytest.mark.parametrize("name, base", [("rtdetrv2_r34vd_dsp", "rtdetrv2_r34vd"),
                                        ("rtdetrv2_r50vd_m_dsp", "rtdetrv2_r50vd_m")])
def test_discrete_sampling_models_have_their_base_layout(name, base):
    assert shapes_of(rtdetr.create_model(name).state_dict()) == official_shapes(base)
    assert ZOO[name].config.decoder.cross_attn_method == "discrete"


@pytest.mark.parametrize("points", [2, 3])
def test_sampling_point_variants(points):
    expected = official_shapes("rtdetrv2_r18vd_sp1")
    heads, levels = 8, 3
    for key in expected:
        if key.endswith("cross_attn.sampling_offsets.weight"):
            expected[key] = [heads * levels * points * 2, 256]
        elif key.endswith("cross_attn.sampling_offsets.bias"):
            expected[key] = [heads * levels * points * 2]
        elif key.endswith("cross_attn.attention_weights.weight"):
            expected[key] = [heads * levels * points, 256]
        elif key.endswith("cross_attn.attention_weights.bias"):
            expected[key] = [heads * levels * points]
    assert shapes_of(rtdetr.create_model(f"rtdetrv2_r18vd_sp{points}").state_dict()) == expected


def test_every_fixture_model_is_in_the_zoo():
    assert {p.name.removesuffix(".json") for p in (*OFFICIAL.glob("*.json"), *OFFICIAL_V4.glob("*.json"))} <= set(ZOO)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="rtdetrv2_r18vd"):
        rtdetr.create_model("rtdetrv3_r18")


def test_num_classes_changes_only_class_dependent_shapes():
    five = shapes_of(rtdetr.create_model("rtdetrv2_r18vd", num_classes=5).state_dict())
    coco = shapes_of(rtdetr.create_model("rtdetrv2_r18vd").state_dict())
    changed = {k for k in coco if coco[k] != five[k]}
    assert changed == {"decoder.enc_score_head.weight", "decoder.enc_score_head.bias",
                       "decoder.denoising_class_embed.weight"} | {
        f"decoder.dec_score_head.{i}.{p}" for i in range(3) for p in ("weight", "bias")}
    assert five["decoder.denoising_class_embed.weight"] == [6, 256]
