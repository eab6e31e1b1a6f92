"""Split names: `train`, `val`, `test`, `trainval`, and the spellings data sets use for them.

Roboflow names its validation split `valid`, COCO adds the year (`val2017`); all of them
mean `val` here.
"""
from __future__ import annotations

import re

ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
    "trainval": ("trainval",),
}
CANONICAL = {alias: name for name, aliases in ALIASES.items() for alias in aliases}


def canonical_split(split: str) -> str:
    """`valid` -> `val`, `train2017` -> `train`; other names are returned lower-cased."""
    base = split.lower().rstrip("0123456789")
    return CANONICAL.get(base, split.lower())


def split_names(split: str) -> tuple[str, ...]:
    """The folder/file spellings of a split, e.g. `val` -> (`val`, `valid`, `validation`)."""
    return ALIASES.get(canonical_split(split), (split,))


def split_of(stem: str) -> str | None:
    """The canonical split a file name mentions: `instances_val2017` -> `val`; None if none."""
    for token in re.split(r"[_\-.\s]+", stem.lower()):
        base = token.rstrip("0123456789")
        if base in CANONICAL:
            return CANONICAL[base]
    return None
