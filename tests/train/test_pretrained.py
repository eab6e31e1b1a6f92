"""ImageNet-pretrained backbones: the official files, their keys, loading them, and the offline error."""
from __future__ import annotations

import json
import urllib.error
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import rtdetr
from rtdetr.core import hub
from rtdetr.core.errors import CheckpointError
from rtdetr.models import zoo
from rtdetr.models.nn.detector import build_backbone
from rtdetr.models.pretrained import PRETRAINED_BACKBONES
from rtdetr.train.build import load_pretrained_backbone

OFFICIAL_FIXTURES = Path(__file__).parent.parent / "fixtures" / "official"
# The files the official backbones download (presnet.py `donwload_url`, hgnetv2.py `arch_configs`).
OFFICIAL_FILES = {
    "presnet18": "ResNet18_vd_pretrained_from_paddle.pth",
    "presnet34": "ResNet34_vd_pretrained_from_paddle.pth",
    "presnet50": "ResNet50_vd_ssld_v2_pretrained_from_paddle.pth",
    "presnet101": "ResNet101_vd_ssld_pretrained_from_paddle.pth",
    "hgnetv2_l": "PPHGNetV2_L_ssld_pretrained_from_paddle.pth",
    "hgnetv2_x": "PPHGNetV2_X_ssld_pretrained_from_paddle.pth",
    "hgnetv2_h": "PPHGNetV2_H_ssld_pretrained_from_paddle.pth",
}
# D-FINE / DEIM / RT-DETRv4 (hgnetv2.py `arch_configs[...]['url']` of the D-FINE code).
DFINE_FILES = {f"hgnetv2_b{i}": f"PPHGNetV2_B{i}_stage1.pth" for i in range(7)}
RELEASES = {name: "https://github.com/lyuwenyu/storage/releases/download/v0.1/" for name in OFFICIAL_FILES} | {
    name: "https://github.com/Peterande/storage/releases/download/dfinev1.0/" for name in DFINE_FILES}


def test_every_zoo_backbone_has_its_official_file():
    backbones = {entry.config.backbone.name for entry in zoo.ZOO.values()}
    assert backbones <= set(OFFICIAL_FILES) | set(DFINE_FILES)
    assert set(PRETRAINED_BACKBONES) == set(OFFICIAL_FILES) | set(DFINE_FILES)
    for name, url in PRETRAINED_BACKBONES.items():
        assert url == RELEASES[name] + {**OFFICIAL_FILES, **DFINE_FILES}[name]


def test_dfine_stage1_file_with_official_names_loads(tmp_path, monkeypatch):
    """A B0 file keyed as D-FINE's backbone (`aggregation.0`, `stem2a.conv.weight`, learnable
    affines), the official detector's `backbone.` keys of the fixture manifest without the prefix."""
    monkeypatch.setenv("RTDETR_CACHE", str(tmp_path))
    manifest = json.loads((OFFICIAL_FIXTURES.parent / "official_v4" / "dfine_hgnetv2_s.json").read_text())[
        "state_dict_manifest"]
    torch.manual_seed(0)
    sd = {k.removeprefix("backbone."): torch.randn(shape) for k, shape in manifest.items()
          if k.startswith("backbone.") and not k.endswith("num_batches_tracked")}
    assert any(".aggregation.0." in k for k in sd) and "stem.stem2a.conv.weight" in sd
    torch.save(sd, tmp_path / DFINE_FILES["hgnetv2_b0"])
    backbone = rtdetr.create_model("dfine_hgnetv2_s").backbone
    load_pretrained_backbone(backbone, "hgnetv2_b0")
    got = backbone.state_dict()
    assert torch.equal(got["stages.0.blocks.0.aggregation_squeeze_conv.conv.weight"],
                       sd["stages.0.blocks.0.aggregation.0.conv.weight"])
    assert torch.equal(got["stem.stem2a.conv.1.weight"], sd["stem.stem2a.conv.weight"])
    assert torch.equal(got["stem.stem1.lab.bias"], sd["stem.stem1.lab.bias"])


@pytest.mark.parametrize("path", sorted(OFFICIAL_FIXTURES.glob("*.json")), ids=lambda p: p.stem)
def test_backbone_keys_are_the_official_backbone_keys(path):
    """The files are the official backbones' own state dicts, so ours must have their keys: the
    official detector's `backbone.` keys (the fixture manifest) without that prefix."""
    official = {k.removeprefix("backbone.") for k in json.loads(path.read_text())["state_dict_manifest"]
                if k.startswith("backbone.")}
    with torch.device("meta"):
        ours = build_backbone(zoo.get_config(path.stem)).state_dict()
    assert set(ours) == official


def fake_file(backbone: torch.nn.Module, folder: Path, name: str, counters: bool = True) -> dict:
    """A stand-in pretrained file: the backbone's keys with random values."""
    torch.manual_seed(3)
    sd = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in backbone.state_dict().items()
          if counters or not k.endswith("num_batches_tracked")}
    torch.save(sd, folder / OFFICIAL_FILES[name])
    return sd


def test_loads_a_cached_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RTDETR_CACHE", str(tmp_path))
    backbone = rtdetr.create_model("demo").backbone       # presnet18 with live batch norms
    sd = fake_file(backbone, tmp_path, "presnet18", counters=False)
    assert load_pretrained_backbone(backbone, "presnet18") == tmp_path / OFFICIAL_FILES["presnet18"]
    got = backbone.state_dict()
    assert all(torch.equal(got[k], v) for k, v in sd.items())


def test_frozen_batch_norms_take_a_file_with_counters(tmp_path, monkeypatch):
    """r50 freezes its batch norms (no counters); a file saved from live ones has them."""
    monkeypatch.setenv("RTDETR_CACHE", str(tmp_path))
    cfg = zoo.get_config("rtdetrv2_r50vd")
    live = build_backbone(replace(cfg, backbone=replace(cfg.backbone, freeze_norm=False)))
    sd = fake_file(live, tmp_path, "presnet50")
    assert any(k.endswith("num_batches_tracked") for k in sd)
    frozen = build_backbone(cfg)
    load_pretrained_backbone(frozen, "presnet50")
    got = frozen.state_dict()
    assert all(torch.equal(got[k], sd[k]) for k in got)


def test_a_file_of_another_backbone_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RTDETR_CACHE", str(tmp_path))
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / OFFICIAL_FILES["presnet18"])
    with pytest.raises(CheckpointError, match=r"ResNet18_vd_pretrained_from_paddle\.pth: does not fit "
                                              r"architecture presnet18 \(backbone\)"):
        load_pretrained_backbone(rtdetr.create_model("demo").backbone, "presnet18")


def test_offline_error_names_the_file_and_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("RTDETR_CACHE", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(hub.urllib.request, "urlopen", offline)
    with pytest.raises(hub.WeightsDownloadError) as info:
        load_pretrained_backbone(rtdetr.create_model("demo").backbone, "presnet18")
    message = str(info.value)
    assert "\n" not in message
    assert "ResNet18_vd_pretrained_from_paddle.pth" in message and str(tmp_path) in message
    assert "pretrained_backbone=False (--no-pretrained-backbone)" in message
