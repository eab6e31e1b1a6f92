"""RT-DETR decoder: query selection from the encoder memory, then deformable decoder layers
that refine the boxes layer by layer.

Inputs: encoder maps [P3, P4, P5] (or [P4, P5]). Output (eval): `pred_logits` [B, Q, num_classes]
and `pred_boxes` [B, Q, 4] (normalised cx, cy, w, h) of the last decoder layer that runs.

Two refinements (`DecoderConfig.refinement`), one loop (`decode`):
- "box" (RT-DETR): layer i adds a delta to the logits of layer i-1's box;
- "distribution" (D-FINE, DEIM, RT-DETRv4): a pre-box head on layer 0's output gives one initial
  box per query; layer i adds to the previous layer's edge distributions (`pred_corners`), and its
  box is that initial box with the edges moved by the distributions' expectations
  (rtdetr.models.nn.distribution); a quality head adds a score to the class logits.

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
from rtdetr.models.nn.decoder_layer import DecoderLayer
from rtdetr.models.nn.denoising import build_denoising_groups
from rtdetr.models.nn.distribution import QualityHead, distance_to_box, integral, weighting_function
from rtdetr.models.nn.position import SizeCache, generate_anchors, size_mismatch


class TransformerDecoder(nn.Module):
    """The stack of decoder layers (keys `layers.{i}.*`); with distribution refinement also the
    quality heads (`lqe_layers.{i}.*`) and the same `up` / `reg_scale` parameters as the
    decoder (the official layout stores them under both names)."""

    def __init__(self, layer: DecoderLayer, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))


class _Decoding:
    """What one pass of the decoder layers carries from layer to layer, and what it collects."""

    def __init__(self, ref_unact: torch.Tensor):
        self.ref = ref_unact.sigmoid()        # the attention reference boxes (detached)
        self.prev_boxes = None                # box refinement: layer i-1's boxes, with gradient
        self.initial = None                   # distribution refinement: the boxes every layer decodes from
        self.bins = None                      # distribution refinement: W(0..reg_max), the same for every layer
        self.corners = 0                      # distribution refinement: edge logits so far, with gradient
        self.prev_target = 0                  # distribution refinement: layer i-1's output, detached
        self.logits, self.boxes, self.all_corners, self.initials = [], [], [], []
        self.queries = []                     # each collected layer's query features (for a mask head)
        self.pre = None                       # (logits, boxes) of the pre-box head


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

        if cfg.refinement not in ("box", "distribution"):
            raise ValueError(f"unknown refinement {cfg.refinement!r}; expected 'box' or 'distribution'")
        if cfg.query_pos not in ("default", "as_reg"):
            raise ValueError(f"unknown query_pos {cfg.query_pos!r}; expected 'default' or 'as_reg'")
        self.distribution = cfg.refinement == "distribution"
        self.input_proj = nn.ModuleList(
            nn.Identity() if c == hidden_dim and not cfg.project_equal_levels else ConvNorm(c, hidden_dim)
            for c in feat_channels)
        self.decoder = TransformerDecoder(DecoderLayer(hidden_dim, cfg), cfg.num_layers)
        if cfg.num_denoising > 0:
            self.denoising_class_embed = nn.Embedding(num_classes + 1, hidden_dim, padding_idx=num_classes)
        if cfg.query_pos == "default":
            self.query_pos_head = MLP(4, 2 * hidden_dim, hidden_dim, 2, act=cfg.mlp_act)
        else:
            self.query_pos_head = MLP(4, hidden_dim, hidden_dim, 3, act=cfg.mlp_act)
        self.enc_output = nn.Sequential(OrderedDict([
            ("proj", nn.Linear(hidden_dim, hidden_dim)),
            ("norm", nn.LayerNorm(hidden_dim)),
        ]))
        self.enc_score_head = nn.Linear(hidden_dim, num_classes)
        self.enc_bbox_head = MLP(hidden_dim, hidden_dim, 4, 3, act=cfg.mlp_act)
        self.dec_score_head = nn.ModuleList(nn.Linear(hidden_dim, num_classes) for _ in range(cfg.num_layers))
        box_out = 4 * (cfg.reg_max + 1) if self.distribution else 4
        self.dec_bbox_head = nn.ModuleList(
            MLP(hidden_dim, hidden_dim, box_out, 3, act=cfg.mlp_act) for _ in range(cfg.num_layers))
        if self.distribution:
            self.pre_bbox_head = MLP(hidden_dim, hidden_dim, 4, 3, act=cfg.mlp_act)
            # Fixed, not learnt; parameters (without gradient) because the official files store them.
            self.up = nn.Parameter(torch.tensor([0.5]), requires_grad=False)
            self.reg_scale = nn.Parameter(torch.tensor([float(cfg.reg_scale)]), requires_grad=False)
            self.decoder.up, self.decoder.reg_scale = self.up, self.reg_scale
            self.decoder.lqe_layers = nn.ModuleList(
                QualityHead(cfg.reg_max, act=cfg.activation) for _ in range(cfg.num_layers))

        self.anchor_eps = anchor_eps
        self._anchor_cache = SizeCache(lambda *shapes: generate_anchors(list(shapes), eps=anchor_eps))
        self.fixed_hw: tuple[int, int] | None = None        # the input size of `fix_size`, if any
        self.fixed_shapes: list[tuple[int, int]] | None = None
        self.register_buffer("anchors", None, persistent=False)
        self.register_buffer("valid_mask", None, persistent=False)
        self.inference_only = False                         # set by `keep_layers`
        # Also output each layer's query features as 'queries' (a mask head embeds them).
        self.return_queries = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bias = prior_logit(0.01)
        nn.init.constant_(self.enc_score_head.bias, bias)
        nn.init.zeros_(self.enc_bbox_head.layers[-1].weight)
        nn.init.zeros_(self.enc_bbox_head.layers[-1].bias)
        heads = [*self.dec_bbox_head, *([self.pre_bbox_head] if self.distribution else [])]
        for cls_head in self.dec_score_head:
            nn.init.constant_(cls_head.bias, bias)
        for box_head in heads:
            nn.init.zeros_(box_head.layers[-1].weight)
            nn.init.zeros_(box_head.layers[-1].bias)
        nn.init.xavier_uniform_(self.enc_output.proj.weight)
        nn.init.xavier_uniform_(self.query_pos_head.layers[0].weight)
        nn.init.xavier_uniform_(self.query_pos_head.layers[1].weight)
        for proj in self.input_proj:
            if isinstance(proj, ConvNorm):
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

        Returns content [B, Q, C] (not detached: callers detach it for the decoder), reference
        boxes [B, Q, 4] as logits (detached), and the selected encoder logits [B, Q, num_classes]
        and boxes [B, Q, 4] (for the losses).
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
        return content, ref_unact.detach(), gather(enc_logits), ref_unact.sigmoid()

    def keep_layers(self, n: int) -> None:
        """Keep only the first n decoder layers and their heads, and drop the denoising embedding:
        an inference-only decoder that runs n layers (training needs all of them; it is refused)."""
        self.set_eval_layers(n)
        self.decoder.layers = self.decoder.layers[:n]
        self.dec_score_head = self.dec_score_head[:n]
        self.dec_bbox_head = self.dec_bbox_head[:n]
        if self.distribution:
            self.decoder.lqe_layers = self.decoder.lqe_layers[:n]
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
        state = self.decode(target.detach(), ref_unact, memory, shapes, run)
        out = {"pred_logits": state.logits[-1], "pred_boxes": state.boxes[-1]}
        if self.return_queries:
            out["queries"] = state.queries[-1]
        return out

    def decode(self, target: torch.Tensor, ref_unact: torch.Tensor, memory: torch.Tensor,
               shapes: list[tuple[int, int]], num_layers: int, attn_mask: torch.Tensor | None = None) -> _Decoding:
        """Run `num_layers` decoder layers on queries target [B, Q, C] with reference box logits
        ref_unact [B, Q, 4]. In eval mode only the last layer's logits and boxes are collected;
        in training every layer's (and the pre-box head's, for distribution refinement)."""
        state = _Decoding(ref_unact)
        refine = self._refine_distribution if self.distribution else self._refine_box
        clamp = self.cfg.query_pos_clamp
        for i in range(num_layers):
            layer = self.decoder.layers[i]
            query_pos = self.query_pos_head(state.ref)
            if clamp is not None:
                query_pos = query_pos.clamp(min=-clamp, max=clamp)
            args = (target, state.ref.unsqueeze(2), memory, shapes, query_pos, attn_mask)
            if self.training and self.grad_checkpoint:
                target = torch.utils.checkpoint.checkpoint(layer, *args, use_reentrant=False)
            else:
                target = layer(*args)
            collect = self.training or i == num_layers - 1
            refine(i, target, state, collect=collect)
            if collect and self.return_queries:
                state.queries.append(target)
        return state

    def _refine_box(self, i: int, target: torch.Tensor, state: _Decoding, collect: bool) -> None:
        delta = self.dec_bbox_head[i](target)
        new_ref = torch.sigmoid(delta + inverse_sigmoid(state.ref))
        if collect:
            state.logits.append(self.dec_score_head[i](target))
            # In training the recorded boxes of later layers keep the gradient path through
            # earlier refinements (the same values as new_ref).
            train_path = self.training and state.prev_boxes is not None
            state.boxes.append(torch.sigmoid(delta + inverse_sigmoid(state.prev_boxes)) if train_path else new_ref)
        state.prev_boxes, state.ref = new_ref, new_ref.detach()

    def _refine_distribution(self, i: int, target: torch.Tensor, state: _Decoding, collect: bool) -> None:
        # Layer i's class scores; in training layer 0's also score the pre-box head's boxes.
        scores = self.dec_score_head[i](target) if collect else None
        if i == 0:
            pre_boxes = torch.sigmoid(self.pre_bbox_head(target) + inverse_sigmoid(state.ref))
            if self.training:
                state.pre = (scores, pre_boxes)
            state.initial = pre_boxes.detach()
            state.bins = weighting_function(self.cfg.reg_max, self.up, self.reg_scale)
        # Each layer adds to the previous edge logits; its head also sees the previous output.
        corners = self.dec_bbox_head[i](target + state.prev_target) + state.corners
        boxes = distance_to_box(state.initial, integral(corners, state.bins), self.reg_scale)
        if collect:
            state.logits.append(scores + self.decoder.lqe_layers[i](corners))
            state.boxes.append(boxes)
            state.all_corners.append(corners)
            state.initials.append(state.initial)
        state.corners, state.prev_target, state.ref = corners, target.detach(), boxes.detach()

    def forward_train(self, feats: list[torch.Tensor], targets: list[dict] | None) -> dict:
        if self.inference_only:
            raise RuntimeError(f"this decoder keeps {self.num_layers} layers for inference only (keep_layers); "
                               f"train the original model")
        memory, shapes = self.flatten_levels(feats)
        content, ref_unact, enc_logits, enc_boxes = self.select_queries(memory, shapes)
        target = content.detach()
        dn = None
        if self.cfg.num_denoising > 0 and targets is not None:
            dn = build_denoising_groups(targets, self.num_classes, self.num_queries, self.denoising_class_embed,
                                        self.cfg.num_denoising, self.cfg.label_noise_ratio, self.cfg.box_noise_scale,
                                        flip_negative=self.distribution)
            target = torch.cat([dn.content, target], dim=1)
            ref_unact = torch.cat([dn.ref_unact, ref_unact], dim=1)

        state = self.decode(target, ref_unact, memory, shapes, self.num_layers, dn.attn_mask if dn else None)
        levels = {"pred_logits": state.logits, "pred_boxes": state.boxes}
        if self.return_queries:
            levels["queries"] = state.queries
        if self.distribution:
            levels.update(pred_corners=state.all_corners, ref_points=state.initials)
        pre = dict(zip(("pred_logits", "pred_boxes"), state.pre)) if self.distribution else None
        dn_levels = dn_pre = None
        if dn is not None:  # the denoising queries come first: split them off every output
            dn_levels, levels = _split_queries(levels, dn.meta["dn_num_split"])
            if pre is not None:
                dn_pre, pre = _split_queries(pre, dn.meta["dn_num_split"])

        out = {key: values[-1] for key, values in levels.items()}
        out["aux_outputs"] = self._layer_outputs(levels, slice(0, -1))
        if self.distribution:
            out.update(up=self.up, reg_scale=self.reg_scale, pre_outputs=pre)
        out["enc_aux_outputs"] = [{"pred_logits": enc_logits, "pred_boxes": enc_boxes}]
        if self.return_queries:  # the encoder's proposals are supervised with masks too
            out["enc_aux_outputs"][0]["queries"] = content
        out["enc_meta"] = {"class_agnostic": False}
        if dn is not None:
            out["dn_aux_outputs"] = self._layer_outputs(dn_levels, slice(None))
            if dn_pre is not None:
                out["dn_pre_outputs"] = dn_pre
            out["dn_meta"] = dn.meta
        return out

    def _layer_outputs(self, levels: dict[str, list], layers: slice) -> list[dict]:
        """Per-layer dicts of the collected outputs; with corners, each also names the last layer's
        corners and logits as its distillation teacher."""
        n = len(levels["pred_logits"])
        outs = [{key: values[i] for key, values in levels.items()} for i in range(n)[layers]]
        if "pred_corners" in levels:
            for o in outs:
                o.update(teacher_corners=levels["pred_corners"][-1], teacher_logits=levels["pred_logits"][-1])
        return outs


def _split_queries(outputs: dict, sizes: list[int]) -> tuple[dict, dict]:
    """{name: tensor [B, D + Q, ...] or a list of them} -> the same dicts of the first D and of
    the last Q queries (`sizes` = [D, Q])."""
    parts = [{}, {}]
    for key, value in outputs.items():
        if isinstance(value, list):
            halves = [t.split(sizes, dim=1) for t in value]
            parts[0][key], parts[1][key] = [h[0] for h in halves], [h[1] for h in halves]
        else:
            parts[0][key], parts[1][key] = value.split(sizes, dim=1)
    return parts[0], parts[1]
