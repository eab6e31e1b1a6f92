"""D-FINE, DEIM and RT-DETRv4: every architecture's layout, the release-file layouts, the
decoder-layer dial and input sizes (the official outputs themselves: test_official_parity)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import rtdetr
from rtdetr.core.errors import CheckpointError
from rtdetr.core.hub import WeightsDownloadError
from rtdetr.models import zoo
from rtdetr.core.coco_names import COCO_CATEGORY_IDS
from rtdetr.models.postprocess import postprocess
from rtdetr.models.weights import load_weights, normalise_keys, resolve_weights
from tests.nn.test_official_parity import TOL, match_queries
from tests.recipe import OFFICIAL_V4, load_reference, recipe_image, recipe_state_dict

# (parameters, official state-dict entries) of the official models, counted on the official code
# (D-FINE N in the D-FINE repository, every other in the RT-DETRv4 repository). The entries include
# what we compute rather than store: decoder anchors and valid mask, one `num_points_scale` per layer.
OFFICIAL_COUNTS = {
    "dfine_hgnetv2_n": (3_782_693, 674), "dfine_hgnetv2_s": (10_321_877, 794),
    "dfine_hgnetv2_m": (19_590_064, 1053), "dfine_hgnetv2_l": (31_244_152, 1173),
    "dfine_hgnetv2_x": (62_621_560, 1441),
    "deim_hgnetv2_n": (3_782_693, 674), "deim_hgnetv2_s": (10_321_877, 794),
    "deim_hgnetv2_m": (19_590_064, 1053), "deim_hgnetv2_l": (31_289_848, 1253),
    "deim_hgnetv2_x": (62_715_480, 1571),
    "rtv4_hgnetv2_s": (10_519_253, 796), "rtv4_hgnetv2_m": (19_787_440, 1055),
    "rtv4_hgnetv2_l": (31_487_224, 1255), "rtv4_hgnetv2_x": (63_011_160, 1573),
    "deim_rtv2_r18vd": (20_183_440, 540), "deim_rtv2_r34vd": (31_440_644, 667),
    "deim_rtv2_r50vd_m": (33_198_864, 732), "deim_rtv2_r50vd": (42_943_596, 801),
    "deim_rtv2_r101vd": (76_660_716, 1107),
}


def test_every_architecture_is_in_the_zoo():
    # The official detectors; their segmentation siblings (`*_seg`, ours) are tested in test_mask_head.
    family = {n for n in zoo.list_models() if zoo.get_config(n).version in ("dfine", "deim", "rtv4")
              and zoo.get_config(n).task == "detect"}
    assert family == set(OFFICIAL_COUNTS)


@pytest.mark.parametrize("name", sorted(OFFICIAL_COUNTS))
def test_parameter_and_entry_counts_match_official(name):
    model = rtdetr.create_model(name)
    params, entries = OFFICIAL_COUNTS[name]
    if name.startswith("rtv4_"):  # the official models hold the training-only projector (Linear
        # hidden_dim -> 768, two entries), which ours leave to the trainer (rtdetr.train.distill)
        params -= model.encoder.hidden_dim * 768 + 768
        entries -= 2
    computed = 2 + model.cfg.decoder.num_layers  # anchors, valid_mask, num_points_scale per layer
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.state_dict()) + computed == entries


def test_fixed_constants_are_shared_and_not_trained():
    """`up` and `reg_scale` are stored under two names (as in the official files) but are one
    tensor, counted once, without gradient."""
    model = rtdetr.create_model("dfine_hgnetv2_x")
    dec = model.decoder
    assert dec.up is dec.decoder.up and dec.reg_scale is dec.decoder.reg_scale
    assert dec.reg_scale.item() == 8.0 and dec.up.item() == 0.5
    assert not dec.up.requires_grad and not dec.reg_scale.requires_grad
    assert {"decoder.up", "decoder.decoder.up", "decoder.reg_scale", "decoder.decoder.reg_scale"} <= set(
        model.state_dict())


def _recipe_file_content(name: str) -> dict[str, torch.Tensor]:
    return recipe_state_dict(load_reference(name)["state_dict_manifest"])


@pytest.fixture(scope="module")
def rtv4_s():
    return _recipe_file_content("rtv4_hgnetv2_s")


@pytest.mark.parametrize("layout", ["ema", "model", "bare"])
def test_release_layouts_load_into_both_names(rtv4_s, layout, tmp_path):
    """An RT-DETRv4 file loads as RT-DETRv4 and as DEIM (its projector is then left out), in each
    layout people have; the two give the same outputs (the projector is training-only)."""
    content = {"ema": {"ema": {"module": rtv4_s}}, "model": {"model": rtv4_s}, "bare": rtv4_s}[layout]
    file = tmp_path / "w.pth"
    torch.save(content, file)
    x = recipe_image(0, 320, 320)
    with torch.no_grad():
        a = rtdetr.load_model("rtv4_hgnetv2_s", weights=file)(x)
        b = rtdetr.load_model("deim_hgnetv2_s", weights=file)(x)
    assert torch.equal(a["pred_logits"], b["pred_logits"]) and torch.equal(a["pred_boxes"], b["pred_boxes"])


def test_projector_may_be_absent(rtv4_s, tmp_path):
    file = tmp_path / "w.pth"
    torch.save({k: v for k, v in rtv4_s.items() if "feature_projector" not in k}, file)
    rtdetr.load_model("rtv4_hgnetv2_s", weights=file)


def test_wrong_architecture_is_one_line(rtv4_s, tmp_path):
    file = tmp_path / "w.pth"
    torch.save(rtv4_s, file)
    with pytest.raises(CheckpointError) as e:
        rtdetr.load_model("dfine_hgnetv2_m", weights=file)
    assert "\n" not in str(e.value) and "dfine_hgnetv2_m" in str(e.value) and "shape mismatch" in str(e.value)


def test_drive_releases_say_where_to_put_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("RTDETR_CACHE", str(tmp_path))
    with pytest.raises(WeightsDownloadError) as e:
        resolve_weights("deim_hgnetv2_s")
    msg = str(e.value)
    assert "\n" not in msg and "drive.google.com" in msg and str(tmp_path / "deim_dfine_hgnetv2_s_coco_120e.pth") in msg
    (tmp_path / "deim_dfine_hgnetv2_s_coco_120e.pth").write_bytes(b"x")
    assert resolve_weights("deim_hgnetv2_s") == tmp_path / "deim_dfine_hgnetv2_s_coco_120e.pth"


def _all_layers(model: rtdetr.RTDETR, x: torch.Tensor) -> list[dict]:
    """Every decoder layer's outputs from the training-mode forward (norms in eval mode, no
    denoising queries): the path that collects all layers, not the one that stops early."""
    model.train()
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.Dropout)):
            m.eval()
    with torch.no_grad():
        out = model(x)
    model.eval()
    return [*out["aux_outputs"], {"pred_logits": out["pred_logits"], "pred_boxes": out["pred_boxes"]}]


@pytest.mark.parametrize("name", ["dfine_hgnetv2_s", "deim_rtv2_r18vd"])
def test_decoder_layer_dial(name, tmp_path):
    """Running n layers gives layer n's outputs (scores with its quality head) of the full decoder."""
    file = tmp_path / "w.pth"
    torch.save(_recipe_file_content(name), file)
    model = rtdetr.load_model(name, weights=file).model
    x = recipe_image(0, 320, 320)
    layers = _all_layers(model, x)
    # The early-exit path runs the same layers on the same inputs: equal to float32 rounding.
    for n in range(1, model.cfg.decoder.num_layers + 1):
        with torch.no_grad():
            out = model(x, num_decoder_layers=n)
        for key in ("pred_logits", "pred_boxes"):
            torch.testing.assert_close(out[key], layers[n - 1][key], rtol=0, atol=1e-5)
    assert not torch.allclose(layers[0]["pred_boxes"], layers[-1]["pred_boxes"], atol=1e-3)


@pytest.mark.parametrize("hw", [(320, 480), (480, 320), (256, 256)])
def test_any_multiple_of_32(hw):
    """Rectangular inputs run, the N model's two levels included, and a size fixed once gives what
    the per-size cache gives."""
    for name in ("dfine_hgnetv2_n", "deim_hgnetv2_s"):
        torch.manual_seed(0)
        model = rtdetr.create_model(name).eval()
        x = torch.rand(1, 3, *hw)
        with torch.no_grad():
            free = model(x)
            fixed = model.fix_size(hw)(x)
        assert free["pred_boxes"].shape == (1, 300, 4)
        assert torch.equal(free["pred_logits"], fixed["pred_logits"]) and torch.equal(free["pred_boxes"], fixed["pred_boxes"])


def test_n_model_has_two_levels():
    model = rtdetr.create_model("dfine_hgnetv2_n")
    assert model.backbone.out_strides == [16, 32] and model.encoder.use_encoder_idx == [1]
    assert model.decoder.feat_strides == [16, 32]


def test_rectangular_input_matches_official():
    """D-FINE-S at 320x480 against the official model built for that size (`eval_spatial_size`
    [320, 480]: its anchors, valid mask and position embedding at that size, in the official
    layout), queries as a set within the parity tolerance, and its post-processed detections."""
    file_sd = _recipe_file_content("dfine_hgnetv2_s")
    model = rtdetr.create_model("dfine_hgnetv2_s").eval()
    load_weights(model, normalise_keys(file_sd), "recipe", "dfine_hgnetv2_s")
    with torch.no_grad():
        out = model(recipe_image(0, 320, 480))
    expected = torch.load(OFFICIAL_V4 / "dfine_hgnetv2_s_320x480.outputs.pt", weights_only=True)
    ours = torch.cat([out["pred_logits"][0], out["pred_boxes"][0]], 1)
    theirs = torch.cat([expected["pred_logits"][0], expected["pred_boxes"][0]], 1)
    assert match_queries(theirs, ours) < TOL
    det = postprocess(out, torch.tensor([[1280, 640]]), category_ids=COCO_CATEGORY_IDS)[0]
    rows = lambda d: torch.cat([d["labels"][:, None].double() * 10, d["scores"][:, None] * 1e3,  # noqa: E731
                                d["boxes"] / 1280], 1)
    assert match_queries(rows(expected), rows(det)) < TOL * 1e3
