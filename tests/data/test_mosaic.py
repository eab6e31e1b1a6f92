"""DEIM's Dense O2O augmentation: Mosaic (boxes follow the pixels), the three-phase policy, and
the collate's MixUp.

Samples are black images with one square of a known colour per object, so that where an
object went can be read back from the pixels.
"""
from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2 as T

from rtdetr.data import export_voc, export_yolo, load_dataset
from rtdetr.data.collate import MultiScaleCollate, collate_fn, mix_up
from rtdetr.data.mosaic import Mosaic, combine
from rtdetr.data.transforms import AugmentConfig, Compose, train_transforms
from rtdetr.train.seeding import SeededTransforms

PALETTE = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=torch.uint8)


def square_sample(label, height, width, box, image_id=0):
    """Black uint8 image with the square `box` (x1, y1, x2, y2) in the label's colour."""
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = PALETTE[label][:, None, None]
    target = {"boxes": tv_tensors.BoundingBoxes(torch.tensor([box], dtype=torch.float32), format="XYXY",
                                                canvas_size=(height, width)),
              "labels": torch.tensor([label]), "image_id": image_id, "orig_size": torch.tensor([width, height])}
    return tv_tensors.Image(image), target


class ListSource:
    """What Mosaic needs of a data set: len() and load_item(index)."""

    def __init__(self, items):
        self.items = items
        self.loaded = []

    def __len__(self):
        return len(self.items)

    def load_item(self, index):
        self.loaded.append(index)
        image, target = self.items[index]
        return image, dict(target)


# Shorter sides of 320 already (Mosaic's output_size): the resize keeps them as they are, so the
# only resampling is the affine's nearest-neighbour one and every pixel stays black or a palette colour.
ITEMS = [square_sample(0, 320, 480, (40, 60, 200, 180), 0), square_sample(1, 400, 320, (30, 30, 150, 300), 1),
         square_sample(2, 320, 320, (120, 60, 300, 210), 2), square_sample(3, 480, 320, (15, 180, 285, 450), 3)]


def test_combine_places_the_tiles_and_moves_the_boxes_by_hand():
    """Cells of the largest height (480) and width (480); tiles at the top-left of their cells."""
    image, target = combine([ITEMS[0], ITEMS[1], ITEMS[2], ITEMS[3]])
    assert tuple(image.shape) == (3, 960, 960) and target["boxes"].canvas_size == (960, 960)
    expected = torch.tensor([[40, 60, 200, 180],                    # top left: as it was
                             [480 + 30, 30, 480 + 150, 300],        # top right: x + 480
                             [120, 480 + 60, 300, 480 + 210],       # bottom left: y + 480
                             [480 + 15, 480 + 180, 480 + 285, 480 + 450]], dtype=torch.float32)
    assert torch.equal(target["boxes"].as_subclass(torch.Tensor), expected)
    assert target["labels"].tolist() == [0, 1, 2, 3]
    assert target["image_id"] == 0 and target["orig_size"].tolist() == [480, 320]   # the sample's own
    for (x1, y1, x2, y2), label in zip(expected.int().tolist(), range(4)):
        assert (image[:, y1:y2, x1:x2] == PALETTE[label][:, None, None]).all()
    assert image[:, 320:480, 0:480].max() == 0 and image[:, 0:480, 800:960].max() == 0   # fill 0 around tiles


def test_each_image_is_resized_to_a_shorter_side_of_320():
    """Without the affine part (0 degrees, no translation, scale 1) a 100 x 200 sample becomes
    320 x 640 (x 3.2): its box (10, 20, 30, 40) -> (32, 64, 96, 128)."""
    small = square_sample(0, 100, 200, (10, 20, 30, 40))
    mosaic = Mosaic(ListSource([small]), degrees=0, translate=(0, 0), scale=(1, 1))
    torch.manual_seed(0)
    image, target = mosaic(*small)
    assert tuple(image.shape) == (3, 640, 1280)
    torch.testing.assert_close(target["boxes"][0].as_subclass(torch.Tensor), torch.tensor([32.0, 64, 96, 128]))
    torch.testing.assert_close(target["boxes"][3].as_subclass(torch.Tensor), torch.tensor([640 + 32.0, 320 + 64,
                                                                                          640 + 96, 320 + 128]))


def test_boxes_stay_inside_the_image_and_follow_the_pixels():
    """Over many random affines: every box lies in the output canvas; a box that was not clipped
    (off the border) equals the bounding box of its colour's pixels within 1 px (nearest-neighbour
    sampling places each edge of the rotated square within one pixel of its exact extent)."""
    source = ListSource(ITEMS)
    mosaic = Mosaic(source)
    checked = rotated = 0
    for seed in range(60):
        torch.manual_seed(seed)
        image, target = mosaic(*ITEMS[0])
        height, width = image.shape[-2:]
        boxes = target["boxes"]
        assert isinstance(boxes, tv_tensors.BoundingBoxes) and boxes.canvas_size == (height, width)
        assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= width).all()
        assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= height).all()
        labels = target["labels"].tolist()
        assert len(labels) == 4 and labels[0] == 0             # the sample's own object first
        known = (image == 0).all(0)                               # fill 0 and nearest sampling: no new colours
        for colour in PALETTE:
            known |= (image == colour[:, None, None]).all(0)
        assert known.all()
        for box, label in zip(boxes.tolist(), labels):
            if labels.count(label) != 1 or box[0] <= 0 or box[1] <= 0 or box[2] >= width or box[3] >= height:
                continue
            mask = (image == PALETTE[label][:, None, None]).all(0)
            ys, xs = torch.nonzero(mask, as_tuple=True)
            pixels = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
            assert max(abs(a - b) for a, b in zip(box, pixels)) <= 1.0, (seed, label, box, pixels)
            checked += 1
            rotated += abs((box[2] - box[0]) * (box[3] - box[1]) - mask.sum().item()) > 0.05 * mask.sum().item()
    assert checked >= 60 and rotated >= 20        # enough boxes seen, and the affine did rotate
    assert set(source.loaded) == {0, 1, 2, 3}     # the others are drawn from the whole source


def test_mosaic_without_a_source_says_so():
    with pytest.raises(RuntimeError, match="Mosaic has no source of other samples"):
        Mosaic()(*ITEMS[0])


def test_mosaic_is_a_pure_function_of_seed_epoch_and_image():
    """Under the training seeding a sample's mosaic does not depend on what came before; another
    epoch gives another one."""
    compose = Compose([Mosaic(ListSource(ITEMS))], mosaic_epochs=(0, 9), mosaic_prob=1.0)
    seeded = SeededTransforms(compose, seed=7)
    first = seeded(*ITEMS[2])
    for item in ITEMS:                     # other samples in between
        seeded(*item)
    again = seeded(*ITEMS[2])
    assert torch.equal(first[0], again[0]) and torch.equal(first[1]["boxes"], again[1]["boxes"])
    seeded.set_epoch(1)
    other = seeded(*ITEMS[2])
    assert first[0].shape != other[0].shape or not torch.equal(first[0], other[0])


@pytest.mark.parametrize("fmt", ["coco", "yolo", "voc"])
def test_mosaic_on_the_data_sets(demo_root, tmp_path, fmt):
    """The synthetic set (COCO layout), and the same exported as YOLO and VOC: the pipeline with
    Mosaic on every sample gives valid training samples with the objects of four images."""
    root = {"coco": lambda: demo_root, "yolo": lambda: export_yolo(demo_root, tmp_path / "yolo"),
            "voc": lambda: export_voc(demo_root, tmp_path / "voc")}[fmt]()
    dataset = load_dataset(root, "train")
    cfg = AugmentConfig(size=(64, 64), mosaic_epochs=(0, 10), mosaic_prob=1.0, stop_epoch=20)
    dataset.transforms = SeededTransforms(train_transforms(cfg, source=dataset), seed=0)
    counts = []
    for index in range(len(dataset)):
        image, target = dataset[index]
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        cx, cy, w, h = target["boxes"].unbind(-1)
        assert (w > 0).all() and (cx - w / 2 >= -1e-5).all() and (cx + w / 2 <= 1 + 1e-5).all()
        assert (cy - h / 2 >= -1e-5).all() and (cy + h / 2 <= 1 + 1e-5).all()
        counts.append(len(target["labels"]))
    singles = [len(dataset.get_target(i)["labels"]) for i in range(len(dataset))]
    assert sum(counts) > sum(singles)      # four images' objects, less those the affine pushed out


# ---------------------------------------------------------------- the three-phase policy

def marker(base):
    class Marked(base):
        """Records that it ran, and does nothing else."""

        def forward(self, image, target):
            return image, {**target, "ran": target.get("ran", ()) + (base.__name__,)}
    return Marked


class MarkMosaic(Mosaic):
    def forward(self, image, target):
        return image, {**target, "ran": target.get("ran", ()) + ("Mosaic",)}


def test_phases_switch_at_the_policy_epochs():
    """[e0, e1, e2] = [2, 4, 6]: before 2 nothing; [2, 4) Mosaic on about half of the samples, which
    then skip zoom-out and IoU crop; [4, 6) the plain strong ops; from 6 on nothing. Flip always."""
    ops = [MarkMosaic(), marker(T.RandomPhotometricDistort)(), marker(T.RandomZoomOut)(),
           marker(T.RandomIoUCrop)(), marker(T.RandomHorizontalFlip)()]
    compose = Compose(ops, stop_epoch=6, mosaic_epochs=(2, 4), mosaic_prob=0.5)
    plain = ("RandomPhotometricDistort", "RandomZoomOut", "RandomIoUCrop", "RandomHorizontalFlip")
    mosaic = ("Mosaic", "RandomPhotometricDistort", "RandomHorizontalFlip")
    image, target = ITEMS[0]
    torch.manual_seed(0)
    for epoch in range(8):
        compose.set_epoch(epoch)
        seen = [compose(image, target)[1]["ran"] for _ in range(200)]
        if epoch < 2 or epoch >= 6:
            assert set(seen) == {("RandomHorizontalFlip",)}, epoch
        elif epoch < 4:
            assert set(seen) == {plain, mosaic}, epoch
            # p = 0.5 over 200 draws: 0.35..0.65 is more than 4 standard deviations (0.035) wide
            assert 0.35 <= seen.count(mosaic) / 200 <= 0.65
        else:
            assert set(seen) == {plain}, epoch


def test_the_train_pipeline_puts_mosaic_first_only_with_the_policy():
    with_policy = train_transforms(AugmentConfig(mosaic_epochs=(4, 64), stop_epoch=120))
    assert isinstance(with_policy.ops[0], Mosaic) and with_policy.mosaic_epochs == (4, 64)
    assert isinstance(with_policy.ops[1], T.RandomPhotometricDistort)
    assert not any(isinstance(op, Mosaic) for op in train_transforms(AugmentConfig()).ops)


# ---------------------------------------------------------------- MixUp

def test_mix_up_blends_as_stated_and_concatenates_targets():
    """Constant images 0, 1, 2 and beta 0.45: image i -> 0.45 * i + 0.55 * image (i-1) (image 0
    with image 2): 1.1, 0.45, 1.45."""
    images = torch.stack([torch.full((3, 4, 4), float(i)) for i in range(3)])
    targets = [{"boxes": torch.full((i + 1, 4), 0.1 * i), "labels": torch.full((i + 1,), i), "image_id": i}
               for i in range(3)]
    mixed, out = mix_up(images, targets, 0.45)
    for i, value in enumerate([1.1, 0.45, 1.45]):
        torch.testing.assert_close(mixed[i], torch.full((3, 4, 4), value))  # float32 rounding only
    assert [t["labels"].tolist() for t in out] == [[0, 2, 2, 2], [1, 1, 0], [2, 2, 2, 1, 1]]
    assert torch.equal(out[1]["boxes"], torch.cat([targets[1]["boxes"], targets[0]["boxes"]]))
    assert [t["image_id"] for t in out] == [0, 1, 2]
    assert [len(t["labels"]) for t in targets] == [1, 2, 3]       # the inputs are left as they were


def fake_items(image_ids):
    """Collate input: item i is a constant image of value 1 + image_id, with one box."""
    return [(torch.full((3, 8, 8), 1.0 + i), {"image_id": i, "boxes": torch.rand(1, 4), "labels": torch.tensor([i])})
            for i in image_ids]


def test_collate_mixes_in_its_epochs_with_its_probability():
    """mixup_epochs (2, 4), p 0.5: never in epochs 1 and 4; in 2 and 3 about half of the batches,
    each with the beta the collate reports, in [0.45, 0.55], as read back from the pixels."""
    collate = MultiScaleCollate(scales=None, mixup_epochs=(2, 4), mixup_prob=0.5, seed=3)
    for epoch in (1, 4):
        collate.set_epoch(epoch)
        for b in range(20):
            batch = fake_items([2 * b, 2 * b + 1])
            assert torch.equal(collate(batch)[0], collate_fn(batch)[0])
    collate.set_epoch(2)
    mixed = 0
    for b in range(200):
        batch = fake_items([2 * b, 2 * b + 1])
        images, targets = collate(batch)
        beta = collate.mixup_beta([t for _, t in batch])
        if beta is None:
            assert torch.equal(images, collate_fn(batch)[0]) and len(targets[0]["labels"]) == 1
            continue
        mixed += 1
        own, other = 1.0 + 2 * b, 2.0 + 2 * b         # image 0 is mixed with image 1 (the last)
        read = (images[0, 0, 0, 0].item() - other) / (own - other)
        # pixel values up to ~400 in float32 (spacing 3e-5), divided by own - other = -1
        assert 0.45 <= beta <= 0.55 and read == pytest.approx(beta, abs=1e-4)
        assert targets[0]["labels"].tolist() == [2 * b, 2 * b + 1]
    assert 70 <= mixed <= 130  # p = 0.5 of 200: 100 +- 7 (one standard deviation)


def test_mixup_leaves_the_multi_scale_pick_as_it_was():
    """The mixing draws from its own seed: the size of every batch is what it is without MixUp
    (so runs and resumes of the existing recipes see the same batches)."""
    scales = (32, 48, 64)
    with_mixup = MultiScaleCollate(scales, mixup_epochs=(0, 5), mixup_prob=1.0, seed=1)
    without = MultiScaleCollate(scales, seed=1)
    for b in range(30):
        targets = [{"image_id": 2 * b}, {"image_id": 2 * b + 1}]
        assert with_mixup.pick_size(targets) == without.pick_size(targets)
        assert with_mixup.mixup_beta(targets) == with_mixup.mixup_beta(targets)   # a pure function
