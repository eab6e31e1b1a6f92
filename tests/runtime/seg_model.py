"""A small segmentation model whose masks are clear, for comparing runtimes' masks.

A random mask head gives logits of ~1e-2 without structure: its masks are blobs of noise, many
nearly empty, where an IoU hinges on a handful of pixels and agreement says little about the
export. So `clear_mask_model` takes demo_seg (random detector), sets the running statistics of
the encoder's and the mask head's batch norms from the pictures' activations (a data-dependent
initialisation: the random encoder's maps are ~5e-4 otherwise, too faint to learn from; it also
makes folding the norms not a no-op), and trains only the mask head (pixel decoder and query
embedding), 100 Adam steps on two synthetic pictures of three shapes: each query learns the
mask of the shape nearest its box centre (per query, the IoU with its best-fitting shape
reaches a median of 0.98). Its logits then reach |logit| ~ 15 typically, up to ~120, with a
sharp change at the shapes' edges, as a trained model's do: 99% of the pixels lie more than 0.4
from the threshold, so only pixels right on an edge can flip between runtimes. Training takes
~3 s on one thread (denormal gradients are flushed: they made it three times slower).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

import rtdetr
from rtdetr.models.nn.mask_head import MASK_STRIDE

SIZE = 160              # network input (H = W); masks at SIZE / 4 = 40
ORIG_HW = (480, 640)    # the pictures' own size, (H, W), for pasting
STEPS = 100
LR = 1e-2


def shape_masks(size: int, layout: int) -> torch.Tensor:
    """Three shapes (rectangle, disc, triangle) as bool [3, size, size], placed by `layout` (0 or 1)."""
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = c[:, None].expand(size, size), c[None, :].expand(size, size)
    if layout == 0:
        rect = (x > 0.08) & (x < 0.42) & (y > 0.1) & (y < 0.45)
        disc = (x - 0.7) ** 2 + (y - 0.3) ** 2 < 0.18 ** 2
        tri = (y < 0.92) & (y > 0.55) & ((x - 0.45).abs() < (y - 0.55) * 0.9)
    else:
        rect = (x > 0.55) & (x < 0.92) & (y > 0.55) & (y < 0.85)
        disc = (x - 0.28) ** 2 + (y - 0.7) ** 2 < 0.2 ** 2
        tri = (y < 0.45) & (y > 0.08) & ((x - 0.6).abs() < (y - 0.08) * 0.8)
    return torch.stack([rect, disc, tri])


def pictures(size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Two pictures [2, 3, size, size] in [0, 1] (shapes in red, green, blue on grey) and their
    shapes' masks bool [2, 3, size, size]."""
    masks = torch.stack([shape_masks(size, 0), shape_masks(size, 1)])
    colours = torch.tensor([[0.9, 0.15, 0.1], [0.1, 0.8, 0.2], [0.15, 0.2, 0.9]])
    images = torch.full((2, 3, size, size), 0.45)
    for k in range(3):
        images = torch.where(masks[:, k, None], colours[k][None, :, None, None], images)
    return images, masks


@functools.lru_cache(maxsize=1)  # made once per test session (~3 s); callers must not change it
def clear_mask_model(seed: int = 0) -> tuple[rtdetr.RTDETR, torch.Tensor]:
    """(demo_seg in eval mode, no gradients, with a mask head trained as the module docstring
    says, and its two pictures [2, 3, SIZE, SIZE])."""
    torch.manual_seed(seed)
    model = rtdetr.models.zoo.create_model("demo_seg").eval()
    images, masks = pictures()
    calibrate_norms([model.encoder, model.mask_head], model, images)
    grid = SIZE // MASK_STRIDE
    small = F.interpolate(masks.float(), size=(grid, grid), mode="area")  # [2, 3, h, w] in [0, 1]
    with torch.no_grad():
        feats = model.encoder(model.backbone(images))
        out = model.decoder(feats)
    centres = out["pred_boxes"][..., :2]                                   # [2, Q, 2] (x, y)
    c = (torch.arange(SIZE, dtype=torch.float32) + 0.5) / SIZE
    area = masks.float().sum((-2, -1))                                     # [2, 3]
    cx = (masks.float() * c[None, None, None, :]).sum((-2, -1)) / area
    cy = (masks.float() * c[None, None, :, None]).sum((-2, -1)) / area
    nearest = torch.cdist(centres, torch.stack([cx, cy], -1)).argmin(-1)   # [2, Q]
    target = small.gather(1, nearest[..., None, None].expand(-1, -1, grid, grid))  # [2, Q, h, w]

    head = model.mask_head
    optimizer = torch.optim.Adam(head.parameters(), lr=LR)
    flush = torch.set_flush_denormal(True)  # denormal gradients make the backward pass 3x slower
    try:
        for _ in range(STEPS):
            logits = torch.einsum("bqc,bchw->bqhw", head.embed(out["queries"]), head.pixel_decoder(feats))
            loss = F.binary_cross_entropy_with_logits(logits, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        if flush:
            torch.set_flush_denormal(False)
    model.requires_grad_(False)
    return model, images


def calibrate_norms(parts: list[torch.nn.Module], model: torch.nn.Module, images: torch.Tensor) -> None:
    """Set the running statistics of every BatchNorm2d in `parts` to those of `model(images)`'s
    activations (one pass, norms in batch-statistics mode, the rest in eval mode)."""
    norms = [m for part in parts for m in part.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: after one pass, that batch's statistics
        m.train()
    with torch.no_grad():
        model(images)
    for m in norms:
        m.eval()


def assert_clear(dets: list[dict]) -> None:
    """The fixture's masks are what makes the IoU checks meaningful: most of them not empty, and
    almost no pixel near the threshold (else IoU would compare noise)."""
    logits = torch.cat([d["masks"] for d in dets])
    assert (logits.amax((1, 2)) > 0).float().mean() > 0.9, "the fixture's masks are mostly empty"
    assert (logits.abs() < 0.1).float().mean() < 0.01, "the fixture's mask logits lie near the threshold"


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of bool masks a, b [k, H, W] row by row -> [k] float64 (1 where both are empty).
    (Counted only for the rows that differ: counting 300 masks of 480x640 takes a second.)"""
    iou = torch.ones(len(a), dtype=torch.float64)
    rows = (a != b).flatten(1).any(1).nonzero()[:, 0]
    if len(rows):
        sa, sb = a[rows].flatten(1), b[rows].flatten(1)
        inter = (sa & sb).sum(1, dtype=torch.int64).double()
        union = (sa | sb).sum(1, dtype=torch.int64).double()
        iou[rows] = inter / union  # rows that differ have a non-empty union
    return iou


def pair_detections(expected: dict, got: dict) -> torch.Tensor:
    """For each expected detection, the index of the `got` one with the same label and box (one to
    one, min-cost assignment): near-tied scores may come out in another order in another runtime."""
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(expected["boxes"].double(), got["boxes"].double(), p=float("inf"))
    cost = cost + 1e6 * (expected["labels"][:, None] != got["labels"][None, :])
    rows, cols = linear_sum_assignment(cost.numpy())
    assert cost[rows, cols].max() < 1.0, "detections do not pair up (labels or boxes differ)"
    return torch.as_tensor(cols)[torch.as_tensor(rows).argsort()]
