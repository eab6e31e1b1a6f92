"""The built-in demo: a small RT-DETRv2 that learns the synthetic shapes data set on a CPU
in minutes, and its training recipe.

    rtdetr demo            # generate data, train, evaluate, predict, print AP
"""
from __future__ import annotations

from .config import BackboneConfig, DecoderConfig, EncoderConfig, ModelConfig
from .train.recipes import TrainRecipe

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

# Faster learning than COCO's recipe: higher lr, short warm-up, no multi-scale.
DEMO_RECIPE = TrainRecipe(
    epochs=30, lr=4e-4, weight_decay=1e-4, param_groups=((r"^(?=.*(?:norm|bn)).*$", {"weight_decay": 0.0}),),
    warmup_steps=50, ema_decay=0.999, ema_warmups=100, total_batch_size=8,
    aug_stop_epoch=None, scales=None, scales_stop_epoch=None, eval_size=320, use_amp=False,
)
