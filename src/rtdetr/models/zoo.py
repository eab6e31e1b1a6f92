"""The model zoo: every official architecture by its config name, with its released weights
(RT-DETR, RT-DETRv2, D-FINE, DEIM, RT-DETRv4).

`create_model("rtdetrv2_r18vd")` builds one with random weights; `rtdetr.load_model`
also loads weights. Names follow the official config files without the schedule suffix.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from rtdetr.models.config import BackboneConfig, DecoderConfig, EncoderConfig, MaskConfig, ModelConfig

RELEASES = "https://github.com/lyuwenyu/storage/releases/download/"
DFINE_RELEASES = "https://github.com/Peterande/storage/releases/download/dfinev1.0/"
DRIVE = "https://drive.google.com/file/d/"


@dataclass(frozen=True)
class Weights:
    """An official COCO checkpoint: where it is published, the AP (val2017) reported for it and
    its licence. `direct`: a plain HTTP download fetches it; False for Google Drive links, which
    need a browser: the file is then looked for in the cache under `filename` (the name it is
    published under, or `file` where the URL does not carry one)."""

    url: str
    coco_ap: float
    file: str | None = None
    direct: bool = True
    licence: str = "Apache-2.0"

    @property
    def filename(self) -> str:
        return self.file or self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ZooEntry:
    config: ModelConfig
    weights: Weights | None


def _resnet_config(name: str, version: str, depth: int, dec_layers: int, expansion: float,
                   eval_layers: int | None = None, enc_hidden: int = 256, enc_ffn: int = 1024,
                   num_points: tuple[int, ...] = (4, 4, 4), method: str = "default") -> ModelConfig:
    # ResNet-18/34 train every layer with live batch norms; ResNet-50/101 freeze the stem and norms.
    frozen = depth >= 50
    return ModelConfig(
        name=name,
        version=version,
        backbone=BackboneConfig(f"presnet{depth}", freeze_at=0 if frozen else -1, freeze_norm=frozen),
        encoder=EncoderConfig(hidden_dim=enc_hidden, dim_feedforward=enc_ffn, expansion=expansion),
        decoder=DecoderConfig(num_layers=dec_layers, eval_layers=eval_layers, num_points=num_points,
                              cross_attn_method=method, clamp_before_norm=(version == "v1")),
    )


def _hgnetv2_config(name: str, variant: str, enc_hidden: int, enc_ffn: int, enc_layers: int) -> ModelConfig:
    return ModelConfig(
        name=name,
        version="v2",
        backbone=BackboneConfig(f"hgnetv2_{variant}", freeze_at=0, freeze_norm=True),
        encoder=EncoderConfig(hidden_dim=enc_hidden, dim_feedforward=enc_ffn, num_encoder_layers=enc_layers),
        decoder=DecoderConfig(num_layers=6),
    )


def _w(path: str, ap: float) -> Weights:
    return Weights(RELEASES + path, ap)


def _drive(file_id: str, ap: float, file: str) -> Weights:
    return Weights(DRIVE + file_id, ap, file=file, direct=False)


# D-FINE / DEIM / RT-DETRv4 on HGNetv2: (backbone, lab, return_idx, encoder hidden/ffn, expansion,
# depth_mult, decoder hidden/ffn/layers, points, reg_scale) per size.
DFINE_SIZES = {
    "n": ("b0", True, (2, 3), 128, 512, 0.34, 0.5, 128, 512, 3, (6, 6), 4.0),
    "s": ("b0", True, (1, 2, 3), 256, 1024, 0.5, 0.34, 256, 1024, 3, (3, 6, 3), 4.0),
    "m": ("b2", True, (1, 2, 3), 256, 1024, 1.0, 0.67, 256, 1024, 4, (3, 6, 3), 4.0),
    "l": ("b4", False, (1, 2, 3), 256, 1024, 1.0, 1.0, 256, 1024, 6, (3, 6, 3), 4.0),
    "x": ("b5", False, (1, 2, 3), 384, 2048, 1.0, 1.0, 256, 1024, 6, (3, 6, 3), 8.0),
}


def _dfine_config(name: str, version: str, size: str) -> ModelConfig:
    """D-FINE (`version` "dfine"), DEIM ("deim") or RT-DETRv4 ("rtv4") on HGNetv2, one size.

    They share the architecture. DEIM and RT-DETRv4 use SiLU in the decoder's FFN and MLPs
    (D-FINE ReLU) and train every backbone layer with live batch norms (D-FINE L/X freeze the
    stem and every norm). RT-DETRv4's distillation projector is training-only: it lives in the
    trainer (`rtdetr.train.distill`), not in the model."""
    bb, lab, idx, enc_h, enc_ffn, expansion, depth, dec_h, dec_ffn, layers, points, reg_scale = DFINE_SIZES[size]
    frozen = version == "dfine" and size in ("l", "x")
    act = "relu" if version == "dfine" else "silu"
    return ModelConfig(
        name=name,
        version=version,
        backbone=BackboneConfig(f"hgnetv2_{bb}", freeze_at=0 if frozen else -1, freeze_norm=frozen, use_lab=lab,
                                return_idx=idx),
        encoder=EncoderConfig(hidden_dim=enc_h, dim_feedforward=enc_ffn, expansion=expansion, depth_mult=depth,
                              fusion_block="elan", downsample="scdown", lateral_act=False),
        decoder=DecoderConfig(hidden_dim=dec_h, dim_feedforward=dec_ffn, num_layers=layers, num_points=points,
                              clamp_before_norm=True, refinement="distribution", reg_max=32, reg_scale=reg_scale,
                              value_proj=False, gate=True, activation=act, mlp_act=act, query_pos_clamp=10.0,
                              project_equal_levels=False),
    )


def _deim_rtv2_config(name: str, depth: int, dec_layers: int, expansion: float, eval_layers: int | None = None,
                      enc_hidden: int = 256, enc_ffn: int = 1024) -> ModelConfig:
    """DEIM on RT-DETRv2: v2's architecture with live backbone norms, a 3-layer query-position
    MLP and SiLU in the decoder."""
    cfg = _resnet_config(name, "deim", depth, dec_layers, expansion, eval_layers, enc_hidden, enc_ffn)
    return replace(cfg, backbone=replace(cfg.backbone, freeze_at=-1, freeze_norm=False),
                   decoder=replace(cfg.decoder, query_pos="as_reg", activation="silu", mlp_act="silu"))


# Released weights: D-FINE on GitHub; DEIM and RT-DETRv4 on Google Drive (ids and AP from their READMEs;
# the file names are those the files are published under).
DFINE_WEIGHTS = {s: Weights(DFINE_RELEASES + f"dfine_{s}_coco.pth", ap)
                 for s, ap in (("n", 42.8), ("s", 48.5), ("m", 52.3), ("l", 54.0), ("x", 55.8))}
DEIM_WEIGHTS = {
    "n": _drive("1ZPEhiU9nhW4M5jLnYOFwTSLQC1Ugf62e", 43.0, "deim_dfine_hgnetv2_n_coco_160e.pth"),
    "s": _drive("1tB8gVJNrfb6dhFvoHJECKOF5VpkthhfC", 49.0, "deim_dfine_hgnetv2_s_coco_120e.pth"),
    "m": _drive("18Lj2a6UN6k_n_UzqnJyiaiLGpDzQQit8", 52.7, "deim_dfine_hgnetv2_m_coco_90e.pth"),
    "l": _drive("1PIRf02XkrA2xAD3wEiKE2FaamZgSGTAr", 54.7, "deim_dfine_hgnetv2_l_coco_50e.pth"),
    "x": _drive("1dPtbgtGgq1Oa7k_LgH1GXPelg1IVeu0j", 56.5, "deim_dfine_hgnetv2_x_coco_50e.pth"),
}
DEIM_RTV2_WEIGHTS = {
    "r18vd": _drive("153_JKff6EpFgiLKaqkJsoDcLal_0ux_F", 49.0, "deim_rtdetrv2_r18vd_coco_120e.pth"),
    "r34vd": _drive("1O9RjZF6kdFWGv1Etn1Toml4r-YfdMDMM", 50.9, "deim_rtdetrv2_r34vd_coco_120e.pth"),
    "r50vd_m": _drive("10dLuqdBZ6H5ip9BbBiE6S7ZcmHkRbD0E", 53.2, "deim_rtdetrv2_r50vd_m_coco_60e.pth"),
    "r50vd": _drive("1mWknAXD5JYknUQ94WCEvPfXz13jcNOTI", 54.3, "deim_rtdetrv2_r50vd_coco_60e.pth"),
    "r101vd": _drive("1BIevZijOcBO17llTyDX32F_pYppBfnzu", 55.5, "deim_rtdetrv2_r101vd_coco_60e.pth"),
}
RTV4_WEIGHTS = {
    "s": _drive("1jDAVxblqRPEWed7Hxm6GwcEl7zn72U6z", 49.8, "RTv4-S-hgnet.pth"),
    "m": _drive("1O-YpP4X-quuOXbi96y2TKkztbjroP5mX", 53.7, "RTv4-M-hgnet.pth"),
    "l": _drive("1shO9EzZvXZyKedE2urLsN4dwEv8Jqa_8", 55.4, "RTv4-L-hgnet.pth"),
    "x": _drive("19gnkMTgFveJsrOvSmEPQXCTG6v9oQHN3", 57.0, "RTv4-X-hgnet.pth"),
}


def _build_zoo() -> dict[str, ZooEntry]:
    z: dict[str, ZooEntry] = {}

    def add(cfg: ModelConfig, weights: Weights | None) -> None:
        z[cfg.name] = ZooEntry(cfg, weights)

    # RT-DETR (v1)
    add(_resnet_config("rtdetr_r18vd", "v1", 18, 3, 0.5), _w("v0.1/rtdetr_r18vd_dec3_6x_coco_from_paddle.pth", 46.5))
    add(_resnet_config("rtdetr_r34vd", "v1", 34, 4, 0.5), _w("v0.1/rtdetr_r34vd_dec4_6x_coco_from_paddle.pth", 48.9))
    add(_resnet_config("rtdetr_r50vd_m", "v1", 50, 6, 0.5, eval_layers=3),
        _w("v0.1/rtdetr_r50vd_m_6x_coco_from_paddle.pth", 51.3))
    add(_resnet_config("rtdetr_r50vd", "v1", 50, 6, 1.0), _w("v0.1/rtdetr_r50vd_6x_coco_from_paddle.pth", 53.1))
    add(_resnet_config("rtdetr_r101vd", "v1", 101, 6, 1.0, enc_hidden=384, enc_ffn=2048),
        _w("v0.1/rtdetr_r101vd_6x_coco_from_paddle.pth", 54.3))

    # RT-DETRv2
    add(_resnet_config("rtdetrv2_r18vd", "v2", 18, 3, 0.5), _w("v0.2/rtdetrv2_r18vd_120e_coco_rerun_48.1.pth", 48.1))
    add(_resnet_config("rtdetrv2_r34vd", "v2", 34, 4, 0.5), _w("v0.1/rtdetrv2_r34vd_120e_coco_ema.pth", 49.9))
    add(_resnet_config("rtdetrv2_r50vd_m", "v2", 50, 6, 0.5, eval_layers=3),
        _w("v0.1/rtdetrv2_r50vd_m_7x_coco_ema.pth", 51.9))
    add(_resnet_config("rtdetrv2_r50vd", "v2", 50, 6, 1.0), _w("v0.1/rtdetrv2_r50vd_6x_coco_ema.pth", 53.4))
    add(_resnet_config("rtdetrv2_r101vd", "v2", 101, 6, 1.0, enc_hidden=384, enc_ffn=2048),
        _w("v0.1/rtdetrv2_r101vd_6x_coco_from_paddle.pth", 54.3))
    # HGNetv2 rows are not in the official results table; their files are listed but unpublished there.
    add(_hgnetv2_config("rtdetrv2_hgnetv2_l", "l", 256, 1024, 1), _w("v0.1/rtdetrv2_hgnetv2_l_6x_coco_from_paddle.pth", 52.9))
    add(_hgnetv2_config("rtdetrv2_hgnetv2_x", "x", 384, 2048, 1), _w("v0.1/rtdetrv2_hgnetv2_x_6x_coco_from_paddle.pth", 54.7))
    add(_hgnetv2_config("rtdetrv2_hgnetv2_h", "h", 512, 2048, 2), _w("v0.1/rtdetrv2_hgnetv2_h_6x_coco_from_paddle.pth", 56.3))

    # RT-DETRv2, fewer sampling points per level
    for p, ap in ((1, 47.3), (2, 47.7), (3, 47.8)):
        add(_resnet_config(f"rtdetrv2_r18vd_sp{p}", "v2", 18, 3, 0.5, num_points=(p, p, p)),
            _w(f"v0.1/rtdetrv2_r18vd_sp{p}_120e_coco.pth", ap))

    # RT-DETRv2, discrete sampling (no GridSample: deployable on old TensorRT)
    dsp = (("rtdetrv2_r18vd", "v0.1/rtdetrv2_r18vd_dsp_3x_coco.pth", 47.4),
           ("rtdetrv2_r34vd", "v0.1/rrtdetrv2_r34vd_dsp_1x_coco.pth", 49.2),  # sic: the published name
           ("rtdetrv2_r50vd_m", "v0.1/rtdetrv2_r50vd_m_dsp_3x_coco.pth", 51.4),
           ("rtdetrv2_r50vd", "v0.1/rtdetrv2_r50vd_dsp_1x_coco.pth", 52.9))
    for base, path, ap in dsp:
        cfg = z[base].config
        add(replace(cfg, name=f"{base}_dsp", decoder=replace(cfg.decoder, cross_attn_method="discrete")), _w(path, ap))

    # D-FINE, DEIM (on D-FINE and on RT-DETRv2), RT-DETRv4
    for size in DFINE_SIZES:
        add(_dfine_config(f"dfine_hgnetv2_{size}", "dfine", size), DFINE_WEIGHTS[size])
        add(_dfine_config(f"deim_hgnetv2_{size}", "deim", size), DEIM_WEIGHTS[size])
        if size != "n":
            add(_dfine_config(f"rtv4_hgnetv2_{size}", "rtv4", size), RTV4_WEIGHTS[size])
    add(_deim_rtv2_config("deim_rtv2_r18vd", 18, 3, 0.5), DEIM_RTV2_WEIGHTS["r18vd"])
    add(_deim_rtv2_config("deim_rtv2_r34vd", 34, 4, 0.5), DEIM_RTV2_WEIGHTS["r34vd"])
    add(_deim_rtv2_config("deim_rtv2_r50vd_m", 50, 3, 0.5), DEIM_RTV2_WEIGHTS["r50vd_m"])
    add(_deim_rtv2_config("deim_rtv2_r50vd", 50, 6, 1.0), DEIM_RTV2_WEIGHTS["r50vd"])
    add(_deim_rtv2_config("deim_rtv2_r101vd", 101, 6, 1.0, enc_hidden=384, enc_ffn=2048),
        DEIM_RTV2_WEIGHTS["r101vd"])

    # Instance segmentation: the same detectors with a mask head (no released weights: train them,
    # starting from the detector's own weights, `--weights <detector name>`).
    for base in SEGMENT_BASES:
        add(segmentation_config(z[base].config), None)
    return z


# The detectors that have a `<name>_seg` sibling in the zoo.
SEGMENT_BASES = ("rtdetrv2_r18vd", "rtdetrv2_r34vd", "rtdetrv2_r50vd_m", "rtdetrv2_r50vd", "rtdetrv2_r101vd",
                 *(f"{family}_hgnetv2_{size}" for family in ("dfine", "deim") for size in DFINE_SIZES),
                 *(f"rtv4_hgnetv2_{size}" for size in DFINE_SIZES if size != "n"))


def segmentation_config(cfg: ModelConfig, mask: MaskConfig | None = None) -> ModelConfig:
    """`cfg` with an instance-mask head, named `<name>_seg`."""
    return replace(cfg, name=f"{cfg.name}_seg", mask=mask or MaskConfig())


# The small RT-DETRv2 of `rtdetr demo`, which learns the synthetic shapes on a CPU in minutes:
# ResNet-18 backbone, a narrower encoder and decoder, fewer queries and denoising groups.
DEMO_MODEL = ModelConfig(
    name="demo",
    version="v2",
    num_classes=3,
    backbone=BackboneConfig("presnet18"),
    encoder=EncoderConfig(hidden_dim=128, dim_feedforward=512, expansion=0.5, depth_mult=0.34),
    decoder=DecoderConfig(hidden_dim=128, num_layers=3, num_queries=100, dim_feedforward=512,
                          num_points=(4, 4, 4), num_denoising=50),
)

ZOO: dict[str, ZooEntry] = _build_zoo()
ZOO["demo"] = ZooEntry(DEMO_MODEL, None)  # no released weights
# The demo's segmentation sibling (`rtdetr demo --task segment`), with narrower mask features.
ZOO["demo_seg"] = ZooEntry(segmentation_config(DEMO_MODEL, MaskConfig(dim=64)), None)


def list_models() -> list[str]:
    return sorted(ZOO)


def get_entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return ZOO[name]


def get_config(name: str, num_classes: int | None = None, decoder_layers: int | None = None) -> ModelConfig:
    cfg = get_entry(name).config
    if num_classes is not None:
        cfg = cfg.with_classes(num_classes)
    return with_decoder_layers(cfg, decoder_layers)


def with_decoder_layers(cfg: ModelConfig, decoder_layers: int | None) -> ModelConfig:
    """`cfg` running `decoder_layers` decoder layers at inference (None: its own number)."""
    if decoder_layers is None:
        return cfg
    return replace(cfg, decoder=replace(cfg.decoder, eval_layers=decoder_layers))


def create_model(name: str, num_classes: int | None = None, decoder_layers: int | None = None):
    """A randomly initialised `RTDETR` nn.Module of a zoo architecture, in train mode (as timm's
    `create_model`); `rtdetr.load_model` gives a `Detector` with weights."""
    from rtdetr.models.nn.detector import build_model
    return build_model(get_config(name, num_classes, decoder_layers))
