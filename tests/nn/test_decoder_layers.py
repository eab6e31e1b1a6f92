"""Fewer decoder layers at inference, without retraining: running the first k layers of a
model equals a model built with k layers that holds those same layers' weights."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import rtdetr
from rtdetr.models.zoo import get_config


def truncated_copy(model: rtdetr.RTDETR, k: int) -> rtdetr.RTDETR:
    """A k-layer model holding the first k decoder layers (and heads) of `model`."""
    cfg = replace(model.cfg, decoder=replace(model.cfg.decoder, num_layers=k, eval_layers=None))
    small = rtdetr.build_model(cfg).eval()
    keep = {key: v for key, v in model.state_dict().items() if key in small.state_dict()}
    small.load_state_dict(keep, strict=True)
    return small


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = rtdetr.create_model("rtdetrv2_r18vd").eval()
    with torch.no_grad():  # non-zero box heads, so every layer moves the boxes
        for head in m.decoder.dec_bbox_head:
            head.layers[-1].weight.normal_(std=0.01)
    return m


@pytest.mark.parametrize("k", [1, 2])
def test_first_k_layers_equal_a_k_layer_model(model, k):
    x = torch.rand(1, 3, 256, 320)
    with torch.no_grad():
        dial = model(x, num_decoder_layers=k)
        small = truncated_copy(model, k)(x)
        full = model(x)
    assert torch.equal(dial["pred_logits"], small["pred_logits"])
    assert torch.equal(dial["pred_boxes"], small["pred_boxes"])
    assert not torch.allclose(dial["pred_boxes"], full["pred_boxes"])


def test_dial_at_build_and_load_time(model):
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        expected = model(x, num_decoder_layers=2)
        model.set_decoder_layers(2)
        assert torch.equal(model(x)["pred_logits"], expected["pred_logits"])
        model.set_decoder_layers(3)
    assert rtdetr.load_model("rtdetrv2_r18vd", weights=None, decoder_layers=1).decoder.eval_layers == 1


def test_r50vd_m_runs_three_of_six_layers_by_default():
    cfg = get_config("rtdetr_r50vd_m")
    assert (cfg.decoder.num_layers, cfg.decoder.eval_layers) == (6, 3)
    assert get_config("rtdetrv2_r50vd_m").decoder.eval_layers == 3


@pytest.mark.parametrize("k", [0, 4])
def test_out_of_range_layer_count_is_refused(model, k):
    with pytest.raises(ValueError, match="decoder layers must be in 1..3"):
        model(torch.rand(1, 3, 64, 64), num_decoder_layers=k)
    with pytest.raises(ValueError, match="decoder layers must be in 1..3"):
        model.set_decoder_layers(k)
