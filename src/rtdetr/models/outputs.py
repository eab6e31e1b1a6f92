"""The output of every detector in the library, documented once.

`model(x)` with x [B, 3, H, W] (RGB in [0, 1], H and W multiples of 32) returns a
`DetectorOutput`. In eval mode it holds only the first two keys; in train mode all the
others too (for the losses). Q is the number of queries, K the number of classes.
"""
from __future__ import annotations

from typing import TypedDict

import torch


class LayerOutput(TypedDict):
    pred_logits: torch.Tensor  # [B, Q, K] class logits (sigmoid, not softmax: a query may hold several classes)
    pred_boxes: torch.Tensor   # [B, Q, 4] cx, cy, w, h normalised to [0, 1]


class DetectorOutput(TypedDict, total=False):
    pred_logits: torch.Tensor  # [B, Q, K] of the last decoder layer that ran
    pred_boxes: torch.Tensor   # [B, Q, 4] of the last decoder layer that ran
    aux_outputs: list[LayerOutput]      # training: every earlier decoder layer
    enc_aux_outputs: list[LayerOutput]  # training: the Q encoder queries selected for the decoder
    enc_meta: dict                      # training: {'class_agnostic': bool}
    dn_aux_outputs: list[LayerOutput]   # training with targets: the denoising queries, per decoder layer
    dn_meta: dict                       # training with targets: {'dn_positive_idx', 'dn_num_group', 'dn_num_split'}
    aifi: torch.Tensor                  # training: AIFI's output F5 [B, C, H/32, W/32] (the stride-32 map)
    # Segmentation models (a mask head); every level dict of training holds both as well:
    mask_features: torch.Tensor         # [B, C, H/4, W/4] pixel features
    mask_queries: torch.Tensor          # [B, Q, C] mask embeddings; masks = einsum(queries, features) > 0
