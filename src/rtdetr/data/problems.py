"""Bad input in a data set: one-line errors for what cannot be fixed, one summary warning for what was.

Unfixable problems (no annotation file, invalid JSON/YAML, no images at all, a split that is
not there) raise `DatasetError`, a `ValueError` whose message is one line naming the file.

Fixable problems (a box partly outside its image, a box of zero size, an unknown category,
a malformed line, a missing image file, with masks an object without a segmentation, ...) are
counted per kind and per file while a split loads; at the end `Problems.report` issues ONE
`DatasetWarning` with one line per kind, printed as it is (without Python's file:line prefix
and the library's source line under it), e.g.

    rtdetr: data/labels/train: 4 annotation problems fixed while loading split 'train':
      3 boxes partly outside the image, clipped (2 files: a.txt, b.txt)
      1 box with zero or negative size, dropped (1 file: c.txt)
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

# kind -> (singular, plural, what was done). The order is the report's order.
KINDS: dict[str, tuple[str, str, str]] = {
    "clipped": ("box partly outside the image", "boxes partly outside the image", "clipped"),
    "outside": ("box entirely outside the image", "boxes entirely outside the image", "dropped"),
    "empty": ("box with zero or negative size", "boxes with zero or negative size", "dropped"),
    "unknown_category": ("box with an unknown category", "boxes with an unknown category", "dropped"),
    "malformed": ("malformed annotation", "malformed annotations", "dropped"),
    "unreadable_annotations": ("missing or unparsable annotation file",
                               "missing or unparsable annotation files", "image dropped"),
    "missing_image": ("missing image file", "missing image files", "image dropped"),
    "unreadable_image": ("unreadable image file", "unreadable image files", "image dropped"),
    "size_mismatch": ("image whose size differs from its annotation's",
                      "images whose size differs from their annotation's", "the image's size used"),
    "duplicate_image": ("duplicate image entry", "duplicate image entries", "dropped"),
    "no_mask": ("object without a segmentation", "objects without a segmentation", "its box used as its mask"),
    "bad_mask": ("malformed segmentation", "malformed segmentations", "its box used as its mask"),
}
FILES_LISTED = 3


PACKAGE_DIR = str(Path(__file__).parent)


def warn(message: str) -> None:
    """Issue a DatasetWarning attributed to the first caller outside this package (the user's line)."""
    frame, level = sys._getframe(1), 2  # stacklevel 2: the caller of warn()
    while frame is not None and frame.f_code.co_filename.startswith(PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DatasetWarning, stacklevel=level)


def _format_dataset_warning(message, category, filename, lineno, line=None) -> str:
    """How Python prints a warning, with DatasetWarning's summary printed as it is: the summary
    already names the data set file, while the default format would prefix the library's own
    file and line and echo that source line (`  train_set = load_dataset(...)`) under it, which
    tells a user nothing. Other warnings keep the format that was in place."""
    if isinstance(category, type) and issubclass(category, DatasetWarning):
        return f"{message}\n"
    return _format_other_warning(message, category, filename, lineno, line)


# Only the printing changes: DatasetWarning still goes through the warnings machinery, so
# filters, `pytest.warns`, `warnings.catch_warnings(record=True)` and `logging.captureWarnings`
# see it as before. A reload of this module replaces its formatter instead of wrapping it twice.
_format_other_warning = getattr(warnings.formatwarning, "wraps_format", warnings.formatwarning)
_format_dataset_warning.wraps_format = _format_other_warning
warnings.formatwarning = _format_dataset_warning


class DatasetError(ValueError):
    """A data set that cannot be used; the message is one line naming the file and the problem."""


class DatasetWarning(UserWarning):
    """Annotation problems that were fixed (clipped or dropped) while a data set loaded."""


class Problems:
    """Counts of fixable problems met while loading one split, reported as one warning.

    `where` names the data set (a path) in the report; `split` the split being loaded.
    """

    def __init__(self, where: str | Path, split: str):
        self.where = str(where)
        self.split = split
        self.counts: dict[str, int] = {}
        self.files: dict[str, list[str]] = {}

    def add(self, kind: str, file: str | Path, count: int = 1) -> None:
        """Record `count` problems of `kind` (a key of KINDS) in `file` (a name shown to the user)."""
        if kind not in KINDS:
            raise KeyError(f"unknown problem kind {kind!r}")
        if count <= 0:
            return
        self.counts[kind] = self.counts.get(kind, 0) + count
        files = self.files.setdefault(kind, [])
        name = str(file)
        if not files or files[-1] != name:  # files are met one after another: no set needed
            files.append(name)

    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """The report: a header line and one line per kind (empty string when nothing happened)."""
        if not self.counts:
            return ""
        total = self.total()
        lines = [f"rtdetr: {self.where}: {total} annotation problem{'s' if total > 1 else ''} fixed "
                 f"while loading split {self.split!r}:"]
        for kind, (one, many, action) in KINDS.items():
            count = self.counts.get(kind)
            if not count:
                continue
            files = list(dict.fromkeys(self.files[kind]))
            shown = ", ".join(files[:FILES_LISTED]) + (", ..." if len(files) > FILES_LISTED else "")
            noun = "file" if len(files) == 1 else "files"
            lines.append(f"  {count} {one if count == 1 else many}, {action} "
                         f"({len(files)} {noun}: {shown})")
        return "\n".join(lines)

    def report(self) -> None:
        """Issue the summary as one DatasetWarning, if there is anything to say."""
        if self.counts:
            warn(self.summary())
