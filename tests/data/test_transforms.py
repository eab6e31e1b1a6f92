"""The train / val augmentation pipelines, the stop-epoch policy and the multi-scale collate.

Samples are built here: black images with colour-coded squares, the colour telling the
label, so that after augmentation the label of each box can be read back from the pixels.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn.functional import interpolate
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2 as T

from rtdetr.data.collate import MultiScaleCollate, collate_fn, train_collate
from rtdetr.data.transforms import (
    DEFAULT_SCALES,
    AugmentConfig,
    Compose,
    RandomIoUCrop,
    ToNormalizedCxcywh,
    train_transforms,
    val_transforms,
)

# label -> RGB colour of its squares; all different once divided by their largest channel
PALETTE = torch.tensor([
    [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255],
], dtype=torch.float32)

# a pipeline whose only random op left is the flip, and one with nothing random
NO_STRONG = dict(photometric=False, zoom_out=False, iou_crop=False)


# ---------------------------------------------------------------- synthetic samples

def make_sample(squares, height=96, width=128, image_id=0):
    """Black image [3, height, width] uint8 with one filled square per (label, x1, y1, x2, y2)."""
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    for label, x1, y1, x2, y2 in squares:
        image[:, y1:y2, x1:x2] = PALETTE[label].to(torch.uint8)[:, None, None]
    boxes = torch.tensor([s[1:] for s in squares], dtype=torch.float32).reshape(-1, 4)
    labels = torch.tensor([s[0] for s in squares], dtype=torch.int64)
    target = {
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
        "labels": labels,
        "image_id": image_id,
        "orig_size": torch.tensor([width, height]),
        "iscrowd": torch.zeros(len(squares), dtype=torch.int64),
    }
    return tv_tensors.Image(image), target


def random_sample(generator, image_id=0, height=96, width=128, cell=32):
    """Squares of 10..20 px in 4 random cells of a 32-px grid: at least 12 px of black between them."""
    cells = [(r, c) for r in range(height // cell) for c in range(width // cell)]
    squares = []
    for k in torch.randperm(len(cells), generator=generator)[:4].tolist():
        r, c = cells[k]
        size = int(torch.randint(10, 21, (1,), generator=generator))
        x1 = c * cell + int(torch.randint(0, cell - size + 1, (1,), generator=generator))
        y1 = r * cell + int(torch.randint(0, cell - size + 1, (1,), generator=generator))
        label = int(torch.randint(0, len(PALETTE), (1,), generator=generator))
        squares.append((label, x1, y1, x1 + size, y1 + size))
    return make_sample(squares, height, width, image_id)


def samples(n, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [random_sample(generator, image_id=i) for i in range(n)]


def empty_sample(image_id=0):
    return make_sample([], image_id=image_id)


def run(transforms, sample):
    """Apply to a copy of the target (the ops must not depend on the caller keeping it)."""
    image, target = sample
    return transforms(image, dict(target))


def assert_valid_output(image, target, size):
    """Float image [3, h, w] in [0, 1]; boxes float32 [n, 4] normalised cxcywh inside the image."""
    assert image.dtype == torch.float32 and tuple(image.shape) == (3, *size)
    assert 0.0 <= image.min() and image.max() <= 1.0
    boxes = target["boxes"]
    assert type(boxes) is torch.Tensor and boxes.dtype == torch.float32 and boxes.shape[1:] == (4,)
    n = len(boxes)
    assert target["labels"].shape == (n,) and target["iscrowd"].shape == (n,)
    cx, cy, w, h = boxes.unbind(-1)
    eps = 1e-5
    assert (w > 0).all() and (h > 0).all()
    assert (cx - w / 2 >= -eps).all() and (cx + w / 2 <= 1 + eps).all()
    assert (cy - h / 2 >= -eps).all() and (cy + h / 2 <= 1 + eps).all()


def label_at(image, cx, cy):
    """The palette label whose colour is at normalised (cx, cy), or None on a dark pixel."""
    _, height, width = image.shape
    pixel = image[:, int(cy * height), int(cx * width)]
    if pixel.max() < 0.25:
        return None
    chroma = pixel / pixel.max()
    return int(((PALETTE / 255 - chroma) ** 2).sum(-1).argmin())


# ---------------------------------------------------------------- train pipeline

@pytest.mark.parametrize("photometric", [False, True])
def test_train_boxes_stay_valid_and_labels_follow_their_squares(photometric):
    size = (128, 128)
    cfg = AugmentConfig(size=size, photometric=photometric, stop_epoch=None)
    transforms = train_transforms(cfg)
    val = val_transforms(size)
    torch.manual_seed(0)
    changed = checked = 0
    for sample in samples(40):
        image, target = run(transforms, sample)
        assert_valid_output(image, target, size)
        if len(target["boxes"]) != len(sample[1]["boxes"]) or not torch.allclose(
                target["boxes"], run(val, sample)[1]["boxes"]):
            changed += 1
        if photometric:  # colours are no longer the palette's
            continue
        for (cx, cy, w, h), label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            if w * size[1] >= 3 and h * size[0] >= 3:
                assert label_at(image, cx, cy) == label
                checked += 1
    assert changed >= 10  # zoom-out / IoU crop did move boxes
    assert photometric or checked >= 60


def test_flip_moves_the_box_as_computed_by_hand():
    # 80 x 40 image, red square x 10..30, y 5..25, resized to 40 x 20 (half)
    sample = make_sample([(0, 10, 5, 30, 25)], height=40, width=80)
    transforms = train_transforms(AugmentConfig(size=(20, 40), **NO_STRONG, flip=True))
    kept = torch.tensor([[20 / 80, 15 / 40, 20 / 80, 20 / 40]])
    flipped = torch.tensor([[(80 - 20) / 80, 15 / 40, 20 / 80, 20 / 40]])  # x -> 80 - x
    seen = set()
    torch.manual_seed(0)
    for _ in range(20):
        image, target = run(transforms, sample)
        is_flipped = torch.allclose(target["boxes"], flipped)
        assert is_flipped or torch.allclose(target["boxes"], kept)
        cx, cy = target["boxes"][0, :2].tolist()
        assert label_at(image, cx, cy) == 0
        assert label_at(image, 1 - cx, cy) is None  # the other side is black
        seen.add(is_flipped)
    assert seen == {False, True}


def test_iou_crop_runs_with_probability_p():
    image, target = random_sample(torch.Generator().manual_seed(1))
    never = RandomIoUCrop(p=0.0)
    for _ in range(5):
        out_image, out_target = never(image, target)
        assert out_image is image and out_target is target
    always = RandomIoUCrop(p=1.0)
    torch.manual_seed(0)
    sizes = {tuple(always(image, dict(target))[0].shape) for _ in range(10)}
    assert len(sizes) > 1  # it crops
    assert AugmentConfig().iou_crop_p == 0.8


@pytest.mark.parametrize("switch", ["photometric", "zoom_out", "iou_crop", "flip"])
def test_each_random_op_can_be_switched_off(switch):
    op_class = {
        "photometric": T.RandomPhotometricDistort, "zoom_out": T.RandomZoomOut,
        "iou_crop": T.RandomIoUCrop, "flip": T.RandomHorizontalFlip,
    }[switch]
    on = train_transforms(AugmentConfig())
    off = train_transforms(AugmentConfig(**{switch: False}))
    assert sum(isinstance(op, op_class) for op in on.ops) == 1
    assert not any(isinstance(op, op_class) for op in off.ops)
    assert len(off.ops) == len(on.ops) - 1


def test_all_random_ops_off_is_the_val_pipeline():
    size = (48, 64)
    transforms = train_transforms(AugmentConfig(size=size, **NO_STRONG, flip=False))
    assert [type(op) for op in transforms.ops] == [
        T.SanitizeBoundingBoxes, T.Resize, T.SanitizeBoundingBoxes, T.ToDtype, ToNormalizedCxcywh]
    val = val_transforms(size)
    for sample in samples(4):
        image, target = run(transforms, sample)
        val_image, val_target = run(val, sample)
        assert torch.equal(image, val_image)
        assert torch.equal(target["boxes"], val_target["boxes"])


def test_train_pipeline_is_deterministic_under_a_seed():
    transforms = train_transforms(AugmentConfig(size=(64, 64)))
    batch = samples(6)

    def outputs(seed):
        torch.manual_seed(seed)
        return [run(transforms, sample) for sample in batch]

    first, again, other = outputs(3), outputs(3), outputs(4)
    for (a_image, a_target), (b_image, b_target) in zip(first, again):
        assert torch.equal(a_image, b_image) and torch.equal(a_target["boxes"], b_target["boxes"])
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first, other))


def test_sanitize_drops_labels_and_iscrowd_with_their_boxes():
    # a 0.5-px-wide box must go, with its label 4 and its iscrowd 1
    image, target = make_sample([(1, 10, 10, 30, 30), (4, 50, 10, 50, 30)])
    target["boxes"][1, 2] = 50.5
    target["iscrowd"] = torch.tensor([0, 1])
    out = train_transforms(AugmentConfig(size=(96, 128), **NO_STRONG, flip=False))(image, target)[1]
    assert out["labels"].tolist() == [1] and out["iscrowd"].tolist() == [0]
    assert out["image_id"] == 0 and out["orig_size"].tolist() == [128, 96]


# ---------------------------------------------------------------- val pipeline

def test_val_is_an_exact_resize():
    # 80 x 40 image, red square x 10..30, y 5..25, resized to 100 x 60 (w x 1.25, h x 1.5)
    sample = make_sample([(0, 10, 5, 30, 25)], height=40, width=80)
    image, target = run(val_transforms((60, 100)), sample)
    assert image.dtype == torch.float32 and tuple(image.shape) == (3, 60, 100)
    # resized box in pixels: x 12.5..37.5, y 7.5..37.5 -> cx 25, cy 22.5, w 25, h 30
    expected = torch.tensor([[25 / 100, 22.5 / 60, 25 / 100, 30 / 60]])
    torch.testing.assert_close(target["boxes"], expected)
    assert torch.equal(image[:, 22, 25], torch.tensor([1.0, 0.0, 0.0]))  # inside: red, scaled to 1
    assert torch.equal(image[:, 50, 80], torch.zeros(3))  # outside: black
    assert target["labels"].tolist() == [0]


# ---------------------------------------------------------------- stop-epoch policy

def test_stop_epoch_skips_the_strong_ops():
    size = (64, 64)
    transforms = train_transforms(AugmentConfig(size=size, flip=False, stop_epoch=3))
    val = val_transforms(size)
    strong = (T.RandomPhotometricDistort, T.RandomZoomOut, T.RandomIoUCrop)
    batch = samples(8)
    torch.manual_seed(0)

    transforms.set_epoch(2)
    assert transforms.strong_ops_on()
    assert sum(isinstance(op, strong) for op in transforms.active_ops()) == 3
    before = [run(transforms, sample)[0] for sample in batch]
    assert any(not torch.equal(image, run(val, sample)[0]) for image, sample in zip(before, batch))

    for epoch in (3, 10):
        transforms.set_epoch(epoch)
        assert not transforms.strong_ops_on()
        assert not any(isinstance(op, strong) for op in transforms.active_ops())
        for sample in batch:  # without flip, what is left is the val pipeline
            image, target = run(transforms, sample)
            val_image, val_target = run(val, sample)
            assert torch.equal(image, val_image) and torch.equal(target["boxes"], val_target["boxes"])


def test_no_stop_epoch_never_stops():
    transforms = train_transforms(AugmentConfig(stop_epoch=None))
    transforms.set_epoch(10_000)
    assert transforms.strong_ops_on()


class ListDataset(Dataset):
    """Ready-made samples, transformed on access (as a detection data set does)."""

    def __init__(self, items, transforms):
        self.items = items
        self.transforms = transforms

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        image, target = self.items[index]
        return self.transforms(image, dict(target))


@pytest.mark.parametrize("persistent_workers", [False, True])
def test_set_epoch_reaches_dataloader_workers(persistent_workers):
    size, stop_epoch = (64, 64), 3
    cfg = AugmentConfig(size=size, flip=False, stop_epoch=stop_epoch, scales=(32, 48))
    items = samples(8)
    dataset = ListDataset(items, train_transforms(cfg))
    collate = train_collate(cfg, seed=5)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate,
                        persistent_workers=persistent_workers,
                        generator=torch.Generator().manual_seed(0))
    val = [run(val_transforms(size), item) for item in items]

    # before the stop epoch: strong ops and multi-scale, the size the main process would pick
    dataset.transforms.set_epoch(stop_epoch - 1)
    collate.set_epoch(stop_epoch - 1)
    changed, heights = 0, set()
    for step, (images, targets) in enumerate(loader):
        h, w = collate.pick_size(targets)
        assert images.shape == (2, 3, h, w) and h in (32, 48)
        heights.add(h)
        for k, target in enumerate(targets):
            changed += not torch.equal(target["boxes"], val[2 * step + k][1]["boxes"])
    assert changed >= 4 and heights == {32, 48}

    # from the stop epoch on: exactly the val pipeline, base size
    dataset.transforms.set_epoch(stop_epoch)
    collate.set_epoch(stop_epoch)
    for step, (images, targets) in enumerate(loader):
        expected = torch.stack([val[2 * step + k][0] for k in range(2)])
        assert torch.equal(images, expected)
        for k, target in enumerate(targets):
            assert torch.equal(target["boxes"], val[2 * step + k][1]["boxes"])


class MarkStrong(T.RandomZoomOut):
    """A 'strong op' that only records that it ran."""

    def forward(self, image, target):
        return image, {**target, "strong": True}


def test_compose_stop_policy_with_custom_strong_ops():
    compose = Compose([MarkStrong(), ToNormalizedCxcywh()], stop_epoch=2, strong_ops=(MarkStrong,))
    image, target = empty_sample()
    assert compose.epoch == 0 and run(compose, (image, target))[1].get("strong")
    compose.set_epoch(2)
    assert "strong" not in run(compose, (image, target))[1]


# ---------------------------------------------------------------- collate

def fake_batch(image_ids, size=(32, 32)):
    """Collate input: [(float image [3, h, w], target)] with the given image ids."""
    return [(torch.rand(3, *size), {"image_id": i, "boxes": torch.rand(2, 4)}) for i in image_ids]


def test_collate_stacks_images_and_lists_targets():
    batch = fake_batch([1, 2, 3])
    images, targets = collate_fn(batch)
    assert images.shape == (3, 3, 32, 32) and type(images) is torch.Tensor
    assert torch.equal(images[1], batch[1][0])
    assert [t["image_id"] for t in targets] == [1, 2, 3] and targets[0] is batch[0][1]


def test_multi_scale_picks_from_the_scales_with_nearest_interpolation():
    collate = train_collate(AugmentConfig(), seed=0)
    assert collate.scales == list(DEFAULT_SCALES) and collate.stop_epoch == 71
    assert collate.mode == "nearest"  # the official F.interpolate(images, size=sz): default mode
    picks = [collate.pick_size([{"image_id": 2 * i}, {"image_id": 2 * i + 1}])[0] for i in range(300)]
    assert set(picks) <= set(DEFAULT_SCALES) and len(set(picks)) >= 10
    assert picks.count(640) > picks.count(480)  # 640 is listed three times

    batch = fake_batch([7, 8])
    images, targets = collate(batch)
    size = collate.pick_size(targets)
    assert images.shape == (2, 3, *size)
    raw = torch.stack([image for image, _ in batch])
    assert torch.equal(images, interpolate(raw, size=size, mode="nearest"))
    assert torch.equal(targets[0]["boxes"], batch[0][1]["boxes"])  # boxes are normalised: unchanged


def test_multi_scale_is_off_from_the_stop_epoch_and_without_scales():
    collate = MultiScaleCollate(scales=(64, 96), stop_epoch=5)
    batch = fake_batch([1, 2])
    collate.set_epoch(4)
    assert collate(batch)[0].shape[-1] in (64, 96)
    collate.set_epoch(5)
    assert collate.pick_size([t for _, t in batch]) is None
    assert collate(batch)[0].shape == (2, 3, 32, 32)
    no_scales = train_collate(dataclasses.replace(AugmentConfig(), scales=None))
    assert no_scales.pick_size([{"image_id": 1}]) is None


def test_multi_scale_is_deterministic_in_seed_epoch_and_batch():
    def picks(seed, epoch):
        collate = MultiScaleCollate(scales=DEFAULT_SCALES, seed=seed)
        collate.set_epoch(epoch)
        return [collate.pick_size([{"image_id": i}, {"image_id": i + 100}]) for i in range(50)]

    assert picks(0, 0) == picks(0, 0)
    assert picks(0, 0) != picks(1, 0)
    assert picks(0, 0) != picks(0, 1)
    collate = MultiScaleCollate(scales=DEFAULT_SCALES)  # no hidden state: same batch, same size
    assert len({collate.pick_size([{"image_id": 3}]) for _ in range(5)}) == 1


def test_multi_scale_takes_height_width_pairs():
    collate = MultiScaleCollate(scales=[(32, 48)])
    assert collate(fake_batch([1]))[0].shape == (1, 3, 32, 48)


# ---------------------------------------------------------------- empty targets

def test_empty_targets_pass_through_every_op():
    cfg = AugmentConfig(size=(64, 64), iou_crop_p=1.0)
    transforms = train_transforms(cfg)
    torch.manual_seed(0)
    image, target = empty_sample()
    for op in transforms.ops:  # op by op, each on the output of the previous one
        image, target = op(image, target)
        assert len(target["boxes"]) == 0 and len(target["labels"]) == 0
    assert_valid_output(image, target, (64, 64))

    for _ in range(10):  # the whole pipelines
        assert_valid_output(*run(transforms, empty_sample()), (64, 64))
    assert_valid_output(*run(val_transforms((64, 64)), empty_sample()), (64, 64))

    items = [run(transforms, empty_sample(image_id=i)) for i in range(2)]
    images, targets = train_collate(cfg)(items)
    assert images.shape[0] == 2 and all(t["boxes"].shape == (0, 4) for t in targets)
