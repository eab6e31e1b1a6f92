"""DEIM's Mosaic ("Dense O2O"): the sample and three others of the data set on one canvas, then
one random affine transform, so that each image carries more objects for one-to-one matching.

    mosaic = Mosaic(source=dataset)          # dataset: len() and load_item(index) -> (image, target)
    image, target = mosaic(image, target)    # as the data set gives them (uint8, XYXY pixel boxes)

Steps, on torchvision v2 tensors (boxes follow the pixels through every op):

1. each of the four samples is resized to a shorter side of `output_size` (320), aspect kept;
2. they go on a canvas of 2 x 2 cells, each cell as large as the largest resized image
   (height and width apart), at the top-left corner of its cell: the sample itself top left,
   then top right, bottom left, bottom right; the rest is `fill` (0);
3. one `RandomAffine` of the whole canvas: rotation within +-`degrees` (10), translation up
   to `translate` (0.1, 0.1) of its size, scale in `scale` (0.5, 1.5), `fill` outside. Boxes
   become the enclosing boxes of their transformed corners, clipped to the canvas; boxes
   pushed out (zero size) are for a following `SanitizeBoundingBoxes` to drop.

Masks (`target["masks"]`, tv_tensors.Mask [n, H, W], when every sample has them) follow the
pixels through the same steps: resized nearest-neighbour, placed on the canvas with their tile
(0 around it), then the same affine (nearest, 0 outside). A mask is the object's own pixels,
not its box: after a rotation the box (around the rotated box's corners) holds its mask.

The three others are drawn with replacement (`torch.randint`) from the whole source, from the
global torch generator, as the affine parameters are: under `rtdetr.train.seeding.SeededTransforms`
(seeded by seed, epoch and image id) a sample's mosaic is the same in every worker and after a
resume. The source's items are taken untransformed (`load_item`), never through its transforms.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

from rtdetr.data.dataset import PER_BOX_KEYS
from rtdetr.data.masks import MASKS


class MosaicSource(Protocol):
    """Where Mosaic takes the other samples from (a `DetectionDataset` is one)."""

    def __len__(self) -> int: ...

    def load_item(self, index: int) -> tuple[tv_tensors.Image, dict]: ...


class Mosaic(T.Transform):
    """Four samples on one canvas, then a random affine transform (see the module docstring).

    `source`: the data set the three other samples come from; it may be set after construction
    (`mosaic.source = dataset`), before the first call. Called as `op(image, target)`; the target
    keeps the sample's own non-box fields (image_id, orig_size) and concatenates the boxes and
    per-box fields (labels, iscrowd, area: those that all four targets have) and the masks.
    """

    def __init__(self, source: MosaicSource | None = None, output_size: int = 320, degrees: float = 10.0,
                 translate: tuple[float, float] = (0.1, 0.1), scale: tuple[float, float] = (0.5, 1.5),
                 fill: int = 0) -> None:
        super().__init__()
        self.source = source
        self.output_size = output_size
        self.fill = fill
        self.resize = T.Resize(output_size)
        self.affine = T.RandomAffine(degrees=degrees, translate=translate, scale=scale, fill=fill)

    def forward(self, image: Any, target: dict) -> tuple[Any, dict]:
        if self.source is None:
            raise RuntimeError("Mosaic has no source of other samples: set mosaic.source to a data set "
                               "(len() and load_item(index))")
        others = torch.randint(len(self.source), (3,)).tolist()
        tiles = [self.resize(image, target)] + [self.resize(*self.source.load_item(i)) for i in others]
        return self.affine(*combine(tiles, self.fill))

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, affine={self.affine}, fill={self.fill}"


def combine(tiles: list[tuple[Any, dict]], fill: int = 0) -> tuple[tv_tensors.Image, dict]:
    """Four (image, target) on a 2 x 2 canvas of cells as large as the largest image, each at the
    top-left of its cell (order: top left, top right, bottom left, bottom right). Masks [n, h, w]
    (all four targets have them, or none) go on a canvas of their own, 0 around their tile."""
    sizes = [F.get_size(image) for image, _ in tiles]
    cell_h, cell_w = max(h for h, _ in sizes), max(w for _, w in sizes)
    first = tiles[0][0]
    canvas = torch.full((first.shape[0], 2 * cell_h, 2 * cell_w), fill, dtype=first.dtype)
    boxes = []
    for (image, target), (h, w), (x, y) in zip(tiles, sizes, [(0, 0), (cell_w, 0), (0, cell_h), (cell_w, cell_h)]):
        canvas[:, y:y + h, x:x + w] = image
        # padding left, top, right, bottom: moves the boxes and sets their canvas to the mosaic's
        xyxy = F.convert_bounding_box_format(target["boxes"], new_format=tv_tensors.BoundingBoxFormat.XYXY)
        boxes.append(F.pad(xyxy, [x, y, 2 * cell_w - x - w, 2 * cell_h - y - h]))
    targets = [target for _, target in tiles]
    merged = {k: v for k, v in targets[0].items() if k not in ("boxes", MASKS) and k not in PER_BOX_KEYS}
    merged["boxes"] = tv_tensors.wrap(torch.cat([b.as_subclass(torch.Tensor) for b in boxes]), like=boxes[0])
    for key in PER_BOX_KEYS:
        if all(isinstance(t.get(key), torch.Tensor) for t in targets):
            merged[key] = torch.cat([t[key] for t in targets])
    with_masks = [MASKS in t for t in targets]
    if any(with_masks):
        if not all(with_masks):
            raise ValueError("Mosaic: some samples have masks and others not; load the data set with masks=True")
        merged[MASKS] = _combine_masks([t[MASKS] for t in targets], sizes, (2 * cell_h, 2 * cell_w))
    return tv_tensors.Image(canvas), merged


def _combine_masks(masks: list[torch.Tensor], sizes: list[tuple[int, int]],
                   canvas_size: tuple[int, int]) -> tv_tensors.Mask:
    """Each tile's masks [n_i, h_i, w_i] on one canvas [sum n_i, H, W] at its tile's place."""
    cell_h, cell_w = canvas_size[0] // 2, canvas_size[1] // 2
    out = torch.zeros((sum(len(m) for m in masks), *canvas_size), dtype=masks[0].dtype)
    start = 0
    for m, (h, w), (x, y) in zip(masks, sizes, [(0, 0), (cell_w, 0), (0, cell_h), (cell_w, cell_h)]):
        out[start:start + len(m), y:y + h, x:x + w] = m.as_subclass(torch.Tensor)
        start += len(m)
    return tv_tensors.Mask(out)
