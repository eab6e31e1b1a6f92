"""The RT-DETR detector: backbone -> hybrid encoder -> decoder."""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .decoder import RTDETRDecoder
from .hybrid_encoder import HybridEncoder


def build_backbone(cfg: ModelConfig) -> nn.Module:
    b = cfg.backbone
    if b.name.startswith("presnet"):
        from .presnet import PResNet
        return PResNet(int(b.name[len("presnet"):]), freeze_at=b.freeze_at, freeze_norm=b.freeze_norm)
    if b.name.startswith("hgnetv2_"):
        from .hgnetv2 import HGNetv2
        return HGNetv2(b.name[len("hgnetv2_"):].upper(), freeze_at=b.freeze_at, freeze_norm=b.freeze_norm)
    raise ValueError(f"unknown backbone {b.name!r}")


class RTDETR(nn.Module):
    """`model(x [B, 3, H, W] RGB in [0, 1])` -> {'pred_logits' [B, Q, K], 'pred_boxes' [B, Q, 4] cx, cy, w, h normalised}.

    H and W may be any multiples of 32. `num_decoder_layers` picks how many decoder
    layers run (the speed/accuracy dial), per call or for good with `set_decoder_layers`.
    In train mode, `targets` (per image {'labels' [n], 'boxes' [n, 4] cx, cy, w, h normalised})
    add the denoising queries, and the output also holds every layer's and the encoder's
    predictions for the losses.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.class_names: list[str] | None = None  # set from checkpoints that carry them
        self.category_ids: list[int] | None = None
        self.backbone = build_backbone(cfg)
        self.encoder = HybridEncoder(self.backbone.out_channels, self.backbone.out_strides, cfg.encoder)
        self.decoder = RTDETRDecoder(
            cfg.num_classes, cfg.decoder.hidden_dim, self.encoder.out_channels, self.encoder.out_strides, cfg.decoder)

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    def train(self, mode: bool = True, **kwargs):
        """`model.train()` / `model.train(False)`: PyTorch's training mode switch.

        `model.train(data=..., epochs=..., ...)`: fine-tune this model on a data set (keyword
        arguments as `rtdetr train`); returns the run's `TrainResult`.
        """
        if not kwargs:
            return super().train(mode)
        from ..train.trainer import train
        from ..zoo import ZOO
        if self.cfg.name in ZOO:  # its recipe; custom architectures take the default one
            kwargs.setdefault("model", self.cfg.name)
        return train(initial_model=self, **kwargs)

    def predict(self, source, **kwargs):
        """Detections on images, folders, globs, videos, arrays or tensors; see `rtdetr.predict.predict`."""
        from ..predict import predict
        return predict(self, source, **kwargs)

    def export(self, path: str | None = None, format: str = "onnx", imgsz: int | tuple[int, int] = 640, *,
               int8: bool = False, calibration=None, **options) -> str:
        """Write this model for a deployment runtime; returns the written file's path.

        format: "onnx" (post-processing inside; run it with `rtdetr.load_model(path)`) or
                "openvino" (the ONNX graph plus its OpenVINO IR `.xml`; returns the `.xml`)
        path:   the .onnx file (default: `<model name>.onnx` in the current folder)
        int8:   also quantise it to int8 (`rtdetr.deploy.quantize_int8`, calibrated on
                `calibration`: a folder of images or a data set folder) and return that file
                (`NAME.int8.onnx`, or its OpenVINO IR `NAME.int8.xml`)
        options: those of `rtdetr.deploy.export_onnx` (opset, dynamic_hw, postprocess, num_top,
                decoder_layers, ...)
        """
        from ..deploy import export_onnx, quantize_int8, save_openvino
        if format not in ("onnx", "openvino"):
            raise ValueError(f"format must be 'onnx' or 'openvino', got {format!r}")
        if int8 and calibration is None:
            raise ValueError("int8=True needs calibration images: calibration='folder/' (or a data set folder)")
        onnx_path = export_onnx(self, path or f"{self.cfg.name}.onnx", imgsz=imgsz, **options)
        if int8:
            onnx_path = quantize_int8(onnx_path, calibration=calibration,
                                      imgsz=imgsz if options.get("dynamic_hw") else None)
        return str(save_openvino(onnx_path) if format == "openvino" else onnx_path)

    def set_decoder_layers(self, n: int) -> None:
        self.decoder.set_eval_layers(n)

    def forward(self, x: torch.Tensor, num_decoder_layers: int | None = None,
                targets: list[dict] | None = None) -> dict:
        h, w = x.shape[-2:]
        if x.ndim != 4 or x.shape[1] != 3 or h % 32 or w % 32:
            raise ValueError(f"expected input [B, 3, H, W] with H and W multiples of 32, got {list(x.shape)}")
        return self.decoder(self.encoder(self.backbone(x)), num_layers=num_decoder_layers, targets=targets)


def build_model(cfg: ModelConfig) -> RTDETR:
    return RTDETR(cfg)
