"""RT-DETR decoder: query selection from the encoder memory, then deformable decoder layers
with iterative box refinement.

Inputs: encoder maps [P3, P4, P5]. Output (eval): `pred_logits` [B, Q, num_classes] and
`pred_boxes` [B, Q, 4] (normalised cx, cy, w, h) of the last decoder layer that runs.

For inference, `fix_size(hw)` turns the per-size anchor cache into buffers and `keep_layers(n)`
drops the layers after the exit and the training-only parts; the forward is the same in every case.
"""
from __future__ import annotations

import copy
from collections import OrderedDict

import torch
import torch.utils.checkpoint
from torch import nn

from rtdetr.models.config import DecoderConfig
from rtdetr.models.nn.common import MLP, ConvNorm, inverse_sigmoid, prior_logit
from rtdetr.models.nn.deformable_attention import MSDeformableAttention
from rtdetr.models.nn.denoising import build_denoising_groups
from rtdetr.models.nn.position import SizeCache, generate_anchors, size_mismatch


class DecoderLayer(nn.Module):
    """Post-norm: self-attention, deformable cross-attention, FFN."""

    def __init__(self, d_model: int, cfg: DecoderConfig):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, cfg.nhead, dropout=cfg.dropout, batch_first=True)
        self.dropout1 = nn.Dropout(cfg.dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MSDeformableAttention(d_model, cfg.nhead, cfg.num_points, cfg.cross_attn_method)
        self.dropout2 = nn.Dropout(cfg.dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, cfg.dim_feedforward)
        self.activation = nn.ReLU(inplace=True)
        self.dropout3 = nn.Dropout(cfg.dropout)
        self.linear2 = nn.Linear(cfg.dim_feedforward, d_model)
        self.dropout4 = nn.Dropout(cfg.dropout)
        self.norm3 = nn.LayerNorm(d_model)
        self.clamp_before_norm = cfg.clamp_before_norm
        nn.init.xavier_uniform_(self.linear1.weight)
        nn.init.xavier_uniform_(self.linear2.weight)

    def forward(self, target: torch.Tensor, ref_boxes: torch.Tensor, memory: torch.Tensor,
                spatial_shapes: list[tuple[int, int]], query_pos: torch.Tensor,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """target [B, Q, C], ref_boxes [B, Q, 1, 4], memory [B, L, C], query_pos [B, Q, C] -> [B, Q, C]."""
        q = k = target + query_pos
        attn, _ = self.self_attn(q, k, value=target, attn_mask=attn_mask, need_weights=False)
        target = self.norm1(target + self.dropout1(attn))
        cross = self.cross_attn(target + query_pos, ref_boxes, memory, spatial_shapes)
        target = self.norm2(target + self.dropout2(cross))
        target = target + self.dropout4(self.linear2(self.dropout3(self.activation(self.linear1(target)))))
        if self.clamp_before_norm:
            target = target.clamp(min=-65504, max=65504)
        return self.norm3(target)


class TransformerDecoder(nn.Module):
    """The stack of decoder layers (keys `layers.{i}.*`)."""

    def __init__(self, layer: DecoderLayer, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))


class RTDETRDecoder(nn.Module):
    """Input projection, anchors, top-k query selection, decoder layers and their heads.

    `anchors` [1, L, 4] and `valid_mask` [1, L, 1] are non-persistent buffers, None until `fix_size`.
    """

    def __init__(self, num_classes: int, hidden_dim: int, feat_channels: list[int], feat_strides: list[int],
                 cfg: DecoderConfig, anchor_eps: float = 1e-2):
        super().__init__()
        if len(cfg.num_points) != len(feat_channels):
            raise ValueError(f"num_points needs one entry per level ({len(feat_channels)}), got {cfg.num_points}")
        self.num_classes = num_classes
        self.hidden_dim = hidden_dim
        self.num_queries = cfg.num_queries
        self.feat_strides = list(feat_strides)
        self.num_layers = cfg.num_layers
        self.cfg = cfg
        self.grad_checkpoint = False  # recompute layer activations in backward (saves memory)
        self.set_eval_layers(cfg.num_layers if cfg.eval_layers is None else cfg.eval_layers)

        self.input_proj = nn.ModuleList(ConvNorm(c, hidden_dim) for c in feat_channels)
        self.decoder = TransformerDecoder(DecoderLayer(hidden_dim, cfg), cfg.num_layers)
        if cfg.num_denoising > 0:
            self.denoising_class_embed = nn.Embedding(num_classes + 1, hidden_dim, padding_idx=num_classes)
        self.query_pos_head = MLP(4, 2 * hidden_dim, hidden_dim, 2)
        self.enc_output = nn.Sequential(OrderedDict([
            ("proj", nn.Linear(hidden_dim, hidden_dim)),
            ("norm", nn.LayerNorm(hidden_dim)),
        ]))
        self.enc_score_head = nn.Linear(hidden_dim, num_classes)
        self.enc_bbox_head = MLP(hidden_dim, hidden_dim, 4, 3)
        self.dec_score_head = nn.ModuleList(nn.Linear(hidden_dim, num_classes) for _ in range(cfg.num_layers))
        self.dec_bbox_head = nn.ModuleList(MLP(hidden_dim, hidden_dim, 4, 3) for _ in range(cfg.num_layers))

        self.anchor_eps = anchor_eps
        self._anchor_cache = SizeCache(lambda *shapes: generate_anchors(list(shapes), eps=anchor_eps))
        self.fixed_hw: tuple[int, int] | None = None        # the input size of `fix_size`, if any
        self.fixed_shapes: list[tuple[int, int]] | None = None
        self.register_buffer("anchors", None, persistent=False)
        self.register_buffer("valid_mask", None, persistent=False)
        self.inference_only = False                         # set by `keep_layers`
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bias = prior_logit(0.01)
        nn.init.constant_(self.enc_score_head.bias, bias)
        nn.init.zeros_(self.enc_bbox_head.layers[-1].weight)
        nn.init.zeros_(self.enc_bbox_head.layers[-1].bias)
        for cls_head, box_head in zip(self.dec_score_head, self.dec_bbox_head):
            nn.init.constant_(cls_head.bias, bias)
            nn.init.zeros_(box_head.layers[-1].weight)
            nn.init.zeros_(box_head.layers[-1].bias)
        nn.init.xavier_uniform_(self.enc_output.proj.weight)
        nn.init.xavier_uniform_(self.query_pos_head.layers[0].weight)
        nn.init.xavier_uniform_(self.query_pos_head.layers[1].weight)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj.conv.weight)
        if hasattr(self, "denoising_class_embed"):
            nn.init.normal_(self.denoising_class_embed.weight[:-1])

    def set_eval_layers(self, n: int) -> None:
        """How many decoder layers run at inference (1..num_layers); no retraining needed."""
        if not 1 <= n <= self.num_layers:
            raise ValueError(f"decoder layers must be in 1..{self.num_layers}, got {n}")
        self.eval_layers = n

    def flatten_levels(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Project each level and concatenate: memory [B, sum(h*w), C] and the (h, w) of each level."""
        proj = [p(f) for p, f in zip(self.input_proj, feats)]
        shapes = [(f.shape[2], f.shape[3]) for f in proj]
        memory = torch.cat([f.flatten(2).permute(0, 2, 1) for f in proj], dim=1)
        return memory, shapes

    def fix_size(self, hw: tuple[int, int] | None) -> None:
        """Compute the anchors and the valid mask once, for inputs of hw = (H, W) pixels, as
        non-persistent buffers (the state dict is unchanged); the forward then takes only that
        size. None goes back to any size (a per-size cache)."""
        if hw is None:
            self.fixed_hw = self.fixed_shapes = self.anchors = self.valid_mask = None
            return
        shapes = [(int(hw[0]) // s, int(hw[1]) // s) for s in self.feat_strides]
        cells = sum(h * w for h, w in shapes)
        if cells < self.num_queries:
            raise ValueError(f"input too small: {cells} feature cells for {self.num_queries} queries "
                             f"(use at least 160x160)")
        ref = next(self.parameters())
        anchors, valid = generate_anchors(shapes, eps=self.anchor_eps)
        self.anchors = anchors.to(ref.device, ref.dtype)
        self.valid_mask = valid.to(ref.device, ref.dtype)  # 1.0 / 0.0: multiplies the memory with no cast per call
        self.fixed_hw, self.fixed_shapes = (int(hw[0]), int(hw[1])), shapes

    def anchors_for(self, shapes: list[tuple[int, int]], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(anchors [1, L, 4] as logits, inf where invalid; valid_mask [1, L, 1]) for these level
        sizes: the fixed buffers, else cached per size."""
        if self.anchors is None:
            anchors, valid = self._anchor_cache.get(tuple(shapes), like.device)
        elif shapes != self.fixed_shapes:
            raise size_mismatch(self.fixed_hw, f"feature maps {shapes}")
        else:
            anchors, valid = self.anchors, self.valid_mask
        return anchors.to(like.dtype), valid

    def select_queries(self, memory: torch.Tensor, shapes: list[tuple[int, int]]):
        """Uncertainty-minimal top-k selection over all memory tokens.

        Returns content [B, Q, C] (detached), reference boxes [B, Q, 4] as logits (detached),
        and the selected encoder logits [B, Q, num_classes] and boxes [B, Q, 4] (for the losses).
        """
        if memory.shape[1] < self.num_queries:
            raise ValueError(f"input too small: {memory.shape[1]} feature cells for {self.num_queries} queries "
                             f"(use at least 160x160)")
        anchors, valid = self.anchors_for(shapes, memory)
        memory = valid.to(memory.dtype) * memory
        output_memory = self.enc_output(memory)                                          # [B, L, C]
        enc_logits = self.enc_score_head(output_memory)                                  # [B, L, K]

        topk = torch.topk(enc_logits.max(-1).values, self.num_queries, dim=-1).indices  # [B, Q]
        gather = lambda t: t.gather(1, topk.unsqueeze(-1).expand(-1, -1, t.shape[-1]))  # noqa: E731
        content = gather(output_memory)                                                  # [B, Q, C]
        # The box head is a per-token MLP, so running it on the Q selected tokens only (300 of
        # 8400 at 640x640) gives the same rows, and the same gradients, as running it on all.
        ref_unact = self.enc_bbox_head(content) + gather(anchors.expand(memory.shape[0], -1, -1))
        return content.detach(), ref_unact.detach(), gather(enc_logits), ref_unact.sigmoid()

    def keep_layers(self, n: int) -> None:
        """Keep only the first n decoder layers and their heads, and drop the denoising embedding:
        an inference-only decoder that runs n layers (training needs all of them; it is refused)."""
        self.set_eval_layers(n)
        self.decoder.layers = self.decoder.layers[:n]
        self.dec_score_head = self.dec_score_head[:n]
        self.dec_bbox_head = self.dec_bbox_head[:n]
        if hasattr(self, "denoising_class_embed"):
            del self.denoising_class_embed
        self.num_layers = n
        self.inference_only = True

    def forward(self, feats: list[torch.Tensor], num_layers: int | None = None,
                targets: list[dict] | None = None) -> dict:
        """feats: encoder maps -> `DetectorOutput` (rtdetr.models.outputs).

        Eval: runs `num_layers` layers (default `eval_layers`); training runs every layer.
        """
        if self.training:
            return self.forward_train(feats, targets)
        run = self.eval_layers if num_layers is None else num_layers
        if not 1 <= run <= self.num_layers:
            raise ValueError(f"decoder layers must be in 1..{self.num_layers}, got {run}")
        memory, shapes = self.flatten_levels(feats)
        target, ref_unact, _, _ = self.select_queries(memory, shapes)

        ref = ref_unact.sigmoid()
        for i in range(run):
            target = self.decoder.layers[i](target, ref.unsqueeze(2), memory, shapes, self.query_pos_head(ref))
            ref = torch.sigmoid(self.dec_bbox_head[i](target) + inverse_sigmoid(ref))
        return {"pred_logits": self.dec_score_head[run - 1](target), "pred_boxes": ref}

    def forward_train(self, feats: list[torch.Tensor], targets: list[dict] | None) -> dict:
        if self.inference_only:
            raise RuntimeError(f"this decoder keeps {self.num_layers} layers for inference only (keep_layers); "
                               f"train the original model")
        memory, shapes = self.flatten_levels(feats)
        target, ref_unact, enc_logits, enc_boxes = self.select_queries(memory, shapes)
        dn = None
        if self.cfg.num_denoising > 0 and targets is not None:
            dn = build_denoising_groups(targets, self.num_classes, self.num_queries, self.denoising_class_embed,
                                        self.cfg.num_denoising, self.cfg.label_noise_ratio, self.cfg.box_noise_scale)
            target = torch.cat([dn.content, target], dim=1)
            ref_unact = torch.cat([dn.ref_unact, ref_unact], dim=1)

        logits, boxes = [], []
        ref = ref_unact.sigmoid()  # detached: the decoder refines, the encoder is trained by its own loss
        prev_boxes = None
        for i, layer in enumerate(self.decoder.layers):
            args = (target, ref.unsqueeze(2), memory, shapes, self.query_pos_head(ref), dn.attn_mask if dn else None)
            if self.grad_checkpoint:
                target = torch.utils.checkpoint.checkpoint(layer, *args, use_reentrant=False)
            else:
                target = layer(*args)
            delta = self.dec_bbox_head[i](target)
            new_ref = torch.sigmoid(delta + inverse_sigmoid(ref))
            logits.append(self.dec_score_head[i](target))
            # The recorded boxes of later layers keep the gradient path through earlier refinements.
            boxes.append(new_ref if prev_boxes is None else torch.sigmoid(delta + inverse_sigmoid(prev_boxes)))
            prev_boxes, ref = new_ref, new_ref.detach()

        if dn is not None:
            split = dn.meta["dn_num_split"]
            dn_logits, logits = zip(*(t.split(split, dim=1) for t in logits))
            dn_boxes, boxes = zip(*(t.split(split, dim=1) for t in boxes))
        out = {
            "pred_logits": logits[-1],
            "pred_boxes": boxes[-1],
            "aux_outputs": [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])],
            "enc_aux_outputs": [{"pred_logits": enc_logits, "pred_boxes": enc_boxes}],
            "enc_meta": {"class_agnostic": False},
        }
        if dn is not None:
            out["dn_aux_outputs"] = [{"pred_logits": a, "pred_boxes": b} for a, b in zip(dn_logits, dn_boxes)]
            out["dn_meta"] = dn.meta
        return out
