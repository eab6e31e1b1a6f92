"""The model zoo: every official architecture by its config name, with its released weights.

`create_model("rtdetrv2_r18vd")` builds one with random weights; `rtdetr.load_model`
also loads weights. Names follow the official config files without the schedule suffix.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from rtdetr.models.config import BackboneConfig, DecoderConfig, EncoderConfig, ModelConfig

RELEASES = "https://github.com/lyuwenyu/storage/releases/download/"


@dataclass(frozen=True)
class Weights:
    """An official COCO checkpoint: where it is published and the AP (val2017) reported for it."""

    url: str
    coco_ap: float

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


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
    return z


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
