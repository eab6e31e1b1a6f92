"""The ImageNet-pretrained backbone files the official recipes start from, by backbone name.

Copied from the official RT-DETRv2 code (`rtdetrv2_pytorch/src/nn/backbone/`): PResNet's
`donwload_url` (sic) by depth, and HGNetv2's `arch_configs[...]['url']` for L, X and H. The
official backbones load them with `backbone.load_state_dict(state)`, so their keys are the
backbone's own: this library's `model.backbone` keys (its detector keys without `backbone.`).
The D-FINE family's HGNetv2 B0-B6 start from the D-FINE release's `PPHGNetV2_B*_stage1.pth`,
whose keys use D-FINE's names (mapped on load, `rtdetr.models.weights.normalise_keys`).
"""
from __future__ import annotations

_STORAGE = "https://github.com/lyuwenyu/storage/releases/download/v0.1/"
_DFINE_STORAGE = "https://github.com/Peterande/storage/releases/download/dfinev1.0/"

PRETRAINED_BACKBONES: dict[str, str] = {
    "presnet18": _STORAGE + "ResNet18_vd_pretrained_from_paddle.pth",
    "presnet34": _STORAGE + "ResNet34_vd_pretrained_from_paddle.pth",
    "presnet50": _STORAGE + "ResNet50_vd_ssld_v2_pretrained_from_paddle.pth",
    "presnet101": _STORAGE + "ResNet101_vd_ssld_pretrained_from_paddle.pth",
    "hgnetv2_l": _STORAGE + "PPHGNetV2_L_ssld_pretrained_from_paddle.pth",
    "hgnetv2_x": _STORAGE + "PPHGNetV2_X_ssld_pretrained_from_paddle.pth",
    "hgnetv2_h": _STORAGE + "PPHGNetV2_H_ssld_pretrained_from_paddle.pth",
    **{f"hgnetv2_b{i}": _DFINE_STORAGE + f"PPHGNetV2_B{i}_stage1.pth" for i in range(7)},
}
