"""The built-in demo data set: coloured shapes on noisy, textured backgrounds, in COCO layout.

    root/annotations/instances_train.json, root/annotations/instances_val.json
    root/train/train_00000.png ..., root/val/val_00000.png ...

Each class is one (shape, colour) pair: by default a red rectangle, a green ellipse and a blue
triangle, saturated colours on grey-ish backgrounds, so a small detector learns them in minutes
on a CPU. Images hold `objects_per_image` shapes of varied sizes and aspect ratios (none
covering more than a quarter of another's box); a fraction `empty_fraction` of the images
hold none (negatives).

Every annotation has an exact `segmentation`: compressed RLE (str counts) of the pixels of its
shape that are visible in the image, i.e. those it was drawn on less those a shape drawn later
covers. It is the drawn shape, before the noise and, with image_format="jpg", before the JPEG
compression (whose pixels stray a little around the edges). `bbox` and `area` are the shape's
whole box (the same with or without occlusion), as before masks were written.

Everything is drawn from `numpy.random.default_rng([seed, split, index])`: the same arguments
give byte-identical annotation files and identical pixels, and an image does not change when
the number of images does.

    root = make_synthetic_dataset("demo")                       # the default demo set
    other = make_synthetic_dataset("other", seed=1, shapes=("cross", "diamond", "ellipse"),
                                   category_ids=[3, 17, 42], image_size=((200, 300), (240, 400)))
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from rtdetr.core.masks import encode_rle

SHAPES = ("rectangle", "ellipse", "triangle", "diamond", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 230), "yellow": (235, 215, 40),
    "magenta": (205, 50, 205), "cyan": (40, 205, 215), "orange": (245, 140, 30), "black": (20, 20, 20),
}
SPLITS = {"train": 0, "val": 1}  # split -> its number in the random seed
MAX_OVERLAP = 0.25  # largest share of a shape's box that another shape may cover
PLACEMENT_TRIES = 20


def synthetic_classes(num_classes: int, shapes=None, colours=None) -> list[tuple[str, str]]:
    """The (shape, colour name) of each class: shapes and colours cycled, every pair distinct."""
    shapes = tuple(shapes or SHAPES)
    colours = tuple(colours or COLOURS)
    unknown = [s for s in shapes if s not in SHAPES] + [c for c in colours if c not in COLOURS]
    if unknown:
        raise ValueError(f"unknown shapes or colours {unknown}; shapes: {SHAPES}, colours: {tuple(COLOURS)}")
    classes = [(shapes[k % len(shapes)], colours[k % len(colours)]) for k in range(num_classes)]
    if len(set(classes)) != num_classes:
        raise ValueError(f"{num_classes} classes need more distinct (shape, colour) pairs than "
                         f"{len(shapes)} shapes and {len(colours)} colours give")
    return classes


# ---------------------------------------------------------------- drawing


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A grey-ish texture: a base colour, smooth blotches and a gradient; float [H, W, 3] in 0..255."""
    base = rng.uniform(80, 170) + rng.uniform(-15, 15, size=3)
    coarse = rng.normal(0, 18, size=(max(2, height // 40), max(2, width // 40), 3))
    blotches = np.stack([np.asarray(Image.fromarray(coarse[:, :, c].astype(np.float32))
                                    .resize((width, height), Image.BILINEAR)) for c in range(3)], axis=2)
    ramp = np.linspace(-1, 1, width)[None, :, None] * rng.uniform(-20, 20)
    return base + blotches + ramp


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill: tuple) -> None:
    """Draw `shape` filling the pixels x0..x1, y0..y1 (inclusive) of `box`."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if shape == "rectangle":
        draw.rectangle(box, fill=fill)
    elif shape == "ellipse":
        draw.ellipse(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(x0, y1), (x1, y1), (cx, y0)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    elif shape == "cross":
        t = max(1.0, min(x1 - x0, y1 - y0) / 6)
        draw.rectangle((x0, cy - t, x1, cy + t), fill=fill)
        draw.rectangle((cx - t, y0, cx + t, y1), fill=fill)


def overlap(a: tuple, b: tuple) -> float:
    """Intersection of two XYXY boxes over the smaller one's area (1 when one holds the other)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return max(0, w) * max(0, h) / smaller


def place_boxes(rng: np.random.Generator, count: int, height: int, width: int,
                object_size: tuple[float, float]) -> list[tuple[int, int, int, int]]:
    """Up to `count` XYXY pixel boxes (x1, y1 exclusive) inside the image, overlapping little."""
    boxes: list[tuple[int, int, int, int]] = []
    side = min(height, width)
    for _ in range(count):
        for _ in range(PLACEMENT_TRIES):
            size = rng.uniform(*object_size) * side
            aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
            w = int(np.clip(size * np.sqrt(aspect), 4, width))
            h = int(np.clip(size / np.sqrt(aspect), 4, height))
            x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            box = (x, y, x + w, y + h)
            if all(overlap(box, other) <= MAX_OVERLAP for other in boxes):
                boxes.append(box)
                break
    return boxes


def shape_mask(shape: str, box: tuple[int, int, int, int], height: int, width: int) -> np.ndarray:
    """The pixels `draw_shape` fills for `shape` in `box` (inclusive, as there), bool [H, W]:
    the same drawing on a one-channel image (Pillow fills the same pixels in any mode)."""
    layer = Image.new("L", (width, height), 0)
    draw_shape(ImageDraw.Draw(layer), shape, box, 255)
    return np.asarray(layer) > 0


def make_image(rng: np.random.Generator, height: int, width: int, classes: list[tuple[str, str]], count: int,
               object_size: tuple[float, float]) -> tuple[Image.Image, list[tuple[int, tuple, np.ndarray]]]:
    """One image and its objects as (class index, XYXY pixel box, visible pixels bool [H, W])."""
    canvas = Image.fromarray(np.clip(background(rng, height, width), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    objects = []
    for box in place_boxes(rng, count, height, width, object_size):
        k = int(rng.integers(len(classes)))
        shape, colour = classes[k]
        fill = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in COLOURS[colour])
        inclusive = (box[0], box[1], box[2] - 1, box[3] - 1)
        draw_shape(draw, shape, inclusive, fill)
        drawn = shape_mask(shape, inclusive, height, width)
        for _, _, earlier in objects:  # the new shape is drawn over the earlier ones
            earlier &= ~drawn
        objects.append((k, box, drawn))
    noisy = np.asarray(canvas, dtype=np.float64) + rng.normal(0, 6, size=(height, width, 3))
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8)), objects


# ---------------------------------------------------------------- writing a split


def _size_range(image_size) -> tuple[tuple[int, int], tuple[int, int]]:
    """(h, w) or ((h_min, h_max), (w_min, w_max)) -> the latter."""
    def as_range(v) -> tuple[int, int]:
        return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))

    h, w = image_size
    return as_range(h), as_range(w)


def write_split(root: Path, split: str, num_images: int, seed: int, classes: list[tuple[str, str]],
                category_ids: list[int], class_names: list[str], image_size, objects_per_image: tuple[int, int],
                empty_fraction: float, object_size: tuple[float, float], image_format: str) -> None:
    """Draw and write one split's images and its annotations/instances_<split>.json."""
    (root / split).mkdir(parents=True, exist_ok=True)
    (h_lo, h_hi), (w_lo, w_hi) = _size_range(image_size)
    empty = set(np.random.default_rng([seed, SPLITS[split], 1 << 20])
                .permutation(num_images)[:round(empty_fraction * num_images)].tolist())
    images, annotations = [], []
    for index in range(num_images):
        rng = np.random.default_rng([seed, SPLITS[split], index])
        height, width = int(rng.integers(h_lo, h_hi + 1)), int(rng.integers(w_lo, w_hi + 1))
        count = 0 if index in empty else int(rng.integers(objects_per_image[0], objects_per_image[1] + 1))
        image, objects = make_image(rng, height, width, classes, count, object_size)
        file_name = f"{split}_{index:05d}.{image_format}"
        image.save(root / split / file_name, **({"quality": 95} if image_format == "jpg" else {}))
        images.append({"id": index + 1, "file_name": file_name, "width": width, "height": height})
        for k, (x0, y0, x1, y1), visible in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1,
                                "category_id": category_ids[k], "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
                                "segmentation": encode_rle(visible)[0]})
    categories = [{"id": cid, "name": name, "supercategory": "shape"}
                  for cid, name in sorted(zip(category_ids, class_names))]
    coco = {"info": {"description": "rtdetr synthetic shapes", "seed": seed}, "licenses": [],
            "images": images, "annotations": annotations, "categories": categories}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco, indent=1) + "\n")


def make_synthetic_dataset(root: str | Path, seed: int = 0, num_train: int = 200, num_val: int = 50,
                           image_size=(320, 320), num_classes: int = 3,
                           objects_per_image: tuple[int, int] = (1, 6), empty_fraction: float = 0.1,
                           object_size: tuple[float, float] = (0.1, 0.4), shapes=None, colours=None,
                           category_ids: list[int] | None = None, image_format: str = "png") -> Path:
    """Write the synthetic shapes data set in COCO layout under `root`; returns `root` as a Path.

    image_size: (h, w), or ((h_min, h_max), (w_min, w_max)) for sizes drawn per image.
    objects_per_image: (min, max) shapes in a non-empty image (fewer when they do not fit).
    empty_fraction: the share of images with no shapes at all.
    object_size: (min, max) size of a shape, as a fraction of the image's shorter side.
    shapes, colours: names from SHAPES and COLOURS, cycled to make the classes.
    category_ids: the classes' ids in the json (any distinct integers); default 1..num_classes.
    image_format: "png" (lossless) or "jpg".
    Class names are "<colour>_<shape>", e.g. "red_rectangle".
    """
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', not {image_format!r}")
    classes = synthetic_classes(num_classes, shapes, colours)
    category_ids = list(category_ids) if category_ids is not None else list(range(1, num_classes + 1))
    if len(category_ids) != num_classes or len(set(category_ids)) != num_classes:
        raise ValueError(f"category_ids must be {num_classes} distinct integers, got {category_ids}")
    class_names = [f"{colour}_{shape}" for shape, colour in classes]
    root = Path(root)
    for split, count in (("train", num_train), ("val", num_val)):
        write_split(root, split, count, seed, classes, category_ids, class_names, image_size,
                    objects_per_image, empty_fraction, object_size, image_format)
    return root
