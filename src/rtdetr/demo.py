"""The built-in demo: a small RT-DETRv2 that learns the synthetic shapes data set on a CPU
in minutes, and its training recipe.

    rtdetr demo            # generate data, train, evaluate, predict, print AP
"""
from __future__ import annotations

from .config import BackboneConfig, DecoderConfig, EncoderConfig, ModelConfig

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
