"""The mask head as a model option: outputs, config round trip, the same detector underneath."""
from dataclasses import replace

import pytest
import torch

from rtdetr.models.config import MaskConfig, ModelConfig
from rtdetr.models.nn.detector import build_model
from rtdetr.models.zoo import ZOO, create_model, get_config

TARGETS = [{"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.3, 0.1, 0.2]])},
           {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.6, 0.4, 0.3, 0.3]])}]


def test_seg_siblings_are_their_detectors_plus_a_mask_head():
    for name in ("rtdetrv2_r18vd", "dfine_hgnetv2_s", "deim_hgnetv2_n", "rtv4_hgnetv2_l", "demo"):
        seg = get_config(name + "_seg")
        assert seg.mask is not None and seg.task == "segment" and get_config(name).task == "detect"
        assert (seg.backbone, seg.encoder, seg.decoder) == (ZOO[name].config.backbone, ZOO[name].config.encoder,
                                                            ZOO[name].config.decoder)
    cfg = get_config("demo_seg")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert ModelConfig.from_dict(get_config("demo").to_dict()).mask is None


def test_eval_outputs_are_the_mask_factors_and_the_detections_are_unchanged():
    torch.manual_seed(0)
    seg = create_model("demo_seg").eval()
    det = build_model(get_config("demo")).eval()
    det.load_state_dict({k: v for k, v in seg.state_dict().items() if not k.startswith("mask_head.")})
    x = torch.rand(2, 3, 128, 160)
    with torch.no_grad():
        out, ref = seg(x), det(x)
    assert set(ref) == {"pred_logits", "pred_boxes"}
    assert out["mask_features"].shape == (2, 64, 32, 40) and out["mask_queries"].shape == (2, 100, 64)
    # The mask head only reads: boxes and scores are the detector's, bit for bit.
    assert torch.equal(out["pred_logits"], ref["pred_logits"]) and torch.equal(out["pred_boxes"], ref["pred_boxes"])


def test_training_levels_carry_mask_queries_and_the_mask_loss_reaches_the_encoder():
    torch.manual_seed(0)
    model = create_model("demo_seg").train()
    out = model(torch.rand(2, 3, 128, 128), targets=TARGETS)
    levels = [out, *out["aux_outputs"], *out["dn_aux_outputs"], *out["enc_aux_outputs"]]
    assert len(levels) == 1 + 2 + 3 + 1
    for level in levels:
        assert level["mask_queries"].shape[-1] == 64 and level["mask_features"] is out["mask_features"]
        assert "queries" not in level
    assert out["dn_aux_outputs"][0]["mask_queries"].shape[1] == out["dn_meta"]["dn_num_split"][0]
    # A mask term on the encoder proposals reaches the encoder's output head (enc_output) too.
    logits = torch.einsum("bqc,bchw->bqhw", out["enc_aux_outputs"][0]["mask_queries"], out["mask_features"])
    logits.mean().backward()
    assert model.decoder.enc_output.proj.weight.grad.abs().sum() > 0
    assert model.encoder.input_proj[0].conv.weight.grad.abs().sum() > 0


# The N model's encoder has strides 16 and 32 only (its mask features are upsampled 4x): 300
# queries need 320x320 there.
@pytest.mark.parametrize("name, size", [("deim_hgnetv2_n_seg", 320), ("rtdetrv2_r18vd_seg", 160)])
def test_other_families_build_and_run(name, size):
    cfg = replace(get_config(name, num_classes=3), mask=MaskConfig(dim=32))
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, size, size))
    assert out["mask_features"].shape == (1, 32, size // 4, size // 4)
    assert out["mask_queries"].shape == (1, cfg.decoder.num_queries, 32)
