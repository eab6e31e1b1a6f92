"""Masks through the augmentation: the train and val pipelines, SanitizeBoundingBoxes, Mosaic,
MixUp and the multi-scale collate keep each mask aligned with its box.

Samples are black images with filled rectangles, each its object's mask, so that a mask's
tight box is its box until something resamples it.
"""
from __future__ import annotations

import torch
from torchvision import tv_tensors

from rtdetr.data import load_dataset
from rtdetr.data.collate import MultiScaleCollate, mix_up
from rtdetr.data.masks import MASKS
from rtdetr.data.mosaic import Mosaic
from rtdetr.data.transforms import AugmentConfig, sanitize, train_transforms, val_transforms
from rtdetr.train.seeding import SeededTransforms

PALETTE = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=torch.uint8)


def rect_sample(rects, height, width, image_id=0):
    """Black image with filled rectangles (label, x1, y1, x2, y2), boxes and masks to match."""
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    masks = torch.zeros(len(rects), height, width, dtype=torch.uint8)
    for i, (label, x1, y1, x2, y2) in enumerate(rects):
        image[:, y1:y2, x1:x2] = PALETTE[label][:, None, None]
        masks[i, y1:y2, x1:x2] = 1
    boxes = torch.tensor([r[1:] for r in rects], dtype=torch.float32).reshape(-1, 4)
    target = {"boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
              "labels": torch.tensor([r[0] for r in rects], dtype=torch.int64), "image_id": image_id,
              "orig_size": torch.tensor([width, height]), MASKS: tv_tensors.Mask(masks)}
    return tv_tensors.Image(image), target


def random_rects(generator, count=4, height=96, width=128):
    """Rectangles of 6..40 px anywhere (they may overlap: each mask is its own rectangle)."""
    rects = []
    for _ in range(count):
        w, h = (int(v) for v in torch.randint(6, 41, (2,), generator=generator))
        x1 = int(torch.randint(0, width - w + 1, (1,), generator=generator))
        y1 = int(torch.randint(0, height - h + 1, (1,), generator=generator))
        rects.append((int(torch.randint(0, 4, (1,), generator=generator)), x1, y1, x1 + w, y1 + h))
    return rects


def tight_box(mask):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def pixel_boxes(target, height, width):
    """Normalised cxcywh -> XYXY pixels [n, 4]."""
    cx, cy, w, h = target["boxes"].unbind(-1)
    return torch.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], -1)


def check_output(target, height, width):
    """What the pipelines promise: a plain uint8 tensor [n', h, w], one mask per box."""
    masks = target[MASKS]
    assert type(masks) is torch.Tensor and masks.dtype == torch.uint8
    assert tuple(masks.shape) == (len(target["boxes"]), height, width) == (len(target["labels"]), height, width)
    assert set(masks.unique().tolist()) <= {0, 1}
    return masks


def test_train_pipeline_keeps_each_mask_on_its_box():
    """Zoom-out, IoU crop (always), flip, resize to 72 x 88: each mask's tight box equals its box
    within 1 px. Zoom-out, crop and flip move whole pixels, so they keep rectangles exact; the
    resize scales the box exactly but samples the mask nearest-neighbour, which puts each of its
    edges less than one output pixel from the scaled edge. A kept box is at least 1 px wide and
    high, so its rectangle keeps a pixel."""
    cfg = AugmentConfig(size=(72, 88), iou_crop_p=1.0, scales=None, stop_epoch=None)
    transforms = SeededTransforms(train_transforms(cfg), seed=0)
    generator = torch.Generator().manual_seed(0)
    checked = cropped = 0
    for image_id in range(40):
        sample = rect_sample(random_rects(generator), 96, 128, image_id)
        image, target = transforms(*sample)
        assert image.shape == (3, 72, 88)
        masks = check_output(target, 72, 88)
        cropped += len(masks) < 4
        for mask, box in zip(masks, pixel_boxes(target, 72, 88).tolist()):
            assert max(abs(a - b) for a, b in zip(tight_box(mask), box)) < 1 + 1e-4, (image_id, box)
            checked += 1
    assert checked >= 80 and cropped >= 5    # enough masks seen, and the crop did drop some


def test_val_pipeline_resizes_the_masks():
    image, target = val_transforms((48, 64))(*rect_sample([(0, 10, 20, 50, 60), (1, 0, 0, 128, 96)], 96, 128))
    masks = check_output(target, 48, 64)
    assert tight_box(masks[0]) == [5, 10, 25, 30] and bool(masks[1].all())


def test_sanitize_drops_the_masks_of_dropped_boxes():
    """torchvision's SanitizeBoundingBoxes filters every tv_tensors.Mask with the boxes; each
    mask here holds its own index + 1, so the survivors can be told apart."""
    image, target = rect_sample([(0, 1, 1, 9, 9), (1, 10, 2, 10, 8), (2, 12, 1, 20, 9), (3, 3, 11, 20, 11)], 16, 24)
    target[MASKS] = tv_tensors.Mask(target[MASKS] * torch.arange(1, 5, dtype=torch.uint8)[:, None, None])
    _, out = sanitize()(image, target)
    assert out["labels"].tolist() == [0, 2] and isinstance(out[MASKS], tv_tensors.Mask)
    assert [m.max().item() for m in out[MASKS]] == [1, 3]


def test_mosaic_masks_are_exactly_their_objects_pixels():
    """Four one-rectangle samples (shorter sides 320: no resampling but the affine's), many
    random affines: image and masks are sampled nearest on the same grid, so each mask is
    exactly the pixels of its object's colour, and lies inside its box."""
    items = [rect_sample([(0, 40, 60, 200, 180)], 320, 480, 0), rect_sample([(1, 30, 30, 150, 300)], 400, 320, 1),
             rect_sample([(2, 120, 60, 300, 210)], 320, 320, 2), rect_sample([(3, 15, 180, 285, 450)], 480, 320, 3)]

    class Source:
        def __len__(self):
            return len(items)

        def load_item(self, index):
            return items[index][0], dict(items[index][1])

    mosaic = Mosaic(Source())
    checked = 0
    for seed in range(16):
        torch.manual_seed(seed)
        image, target = mosaic(*items[0])
        masks, labels = target[MASKS], target["labels"].tolist()
        assert isinstance(masks, tv_tensors.Mask) and tuple(masks.shape) == (4, *image.shape[-2:])
        for mask, box, label in zip(masks, target["boxes"].tolist(), labels):
            if labels.count(label) != 1:
                continue
            assert torch.equal(mask.bool(), (image == PALETTE[label][:, None, None]).all(0))
            if mask.any():
                x1, y1, x2, y2 = tight_box(mask)
                assert x1 >= box[0] - 1 and y1 >= box[1] - 1 and x2 <= box[2] + 1 and y2 <= box[3] + 1
                checked += 1
    assert checked >= 24


def test_mixup_concatenates_masks_and_multi_scale_leaves_them():
    """MixUp: target i gets its own masks, then those of image i-1, as its boxes. Multi-scale
    resizes the images to 32 x 32 and leaves the 16 x 16 masks as they were."""
    def item(image_id, rects):
        _, target = rect_sample(rects, 16, 16, image_id)
        boxes = target["boxes"].as_subclass(torch.Tensor) / 16
        target["boxes"] = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], -1)
        target[MASKS] = target[MASKS].as_subclass(torch.Tensor)
        return torch.rand(3, 16, 16), target

    batch = [item(0, [(0, 1, 1, 5, 5)]), item(1, [(1, 8, 2, 15, 9), (2, 0, 10, 16, 16)])]
    _, mixed = mix_up(torch.stack([b[0] for b in batch]), [b[1] for b in batch], 0.5)
    assert [len(t[MASKS]) for t in mixed] == [3, 3]
    for t in mixed:
        check_output(t, 16, 16)
        for mask, box in zip(t[MASKS], pixel_boxes(t, 16, 16).tolist()):
            assert max(abs(a - b) for a, b in zip(tight_box(mask), box)) < 1e-4
    images, targets = MultiScaleCollate(scales=[32], mixup_epochs=(0, 1), mixup_prob=1.0)(batch)
    assert images.shape == (2, 3, 32, 32) and targets[0][MASKS].shape == (3, 16, 16)
    assert torch.equal(targets[0][MASKS][0], batch[0][1][MASKS][0])


def test_the_synthetic_set_with_mosaic_gives_aligned_masks(demo_root):
    """The data set read with masks, the train pipeline with Mosaic on every sample: one mask
    per box at the output size, inside its box within 2 px: the affine's box holds the rotated
    shape, nearest sampling puts a mask pixel up to 1 px outside it, the resize 1 px more."""
    dataset = load_dataset(demo_root, "train", masks=True)
    cfg = AugmentConfig(size=(64, 64), mosaic_epochs=(0, 10), mosaic_prob=1.0, stop_epoch=20)
    dataset.transforms = SeededTransforms(train_transforms(cfg, source=dataset), seed=0)
    filled = 0
    for index in range(len(dataset)):
        _, target = dataset[index]
        masks = check_output(target, 64, 64)
        for mask, (x1, y1, x2, y2) in zip(masks, pixel_boxes(target, 64, 64).tolist()):
            if mask.any():
                mx1, my1, mx2, my2 = tight_box(mask)
                assert mx1 >= x1 - 2 and my1 >= y1 - 2 and mx2 <= x2 + 2 and my2 <= y2 + 2
                filled += 1
    assert filled >= 10
