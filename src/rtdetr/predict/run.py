"""The run folder a prediction writes: `runs/predict/exp`, `exp2`, ... (or a folder you name).

It holds:
    <name of each picture>      the annotated picture (`<video stem>.mp4` for a video)
    predictions.json            every detection in COCO results format (what pycocotools'
                                `COCO.loadRes` reads): [{"image_id", "category_id", "bbox", "score"}],
                                plus "segmentation" (compressed RLE) for a segmentation model
    images.json                 {"images": [{"id", "file_name", "width", "height"[, "frame"]}],
                                 "categories": [{"id", "name"}]}: what the ids mean
    failures.txt                one line per input that could not be read (only when some failed)

Image ids are the file names' numbers when every input is an image file named by a distinct
number (COCO's `000000397133.jpg` -> 397133, so the results evaluate against COCO as they are);
otherwise 1, 2, 3... in the order of the run.
"""
from __future__ import annotations

import json
from pathlib import Path

from rtdetr.predict.results import Result
from rtdetr.predict.sources import Failure
from rtdetr.predict.video import VideoWriter, frame_rate


def next_run_dir(project: str | Path = "runs/predict", name: str = "exp") -> Path:
    """The first of `project/name`, `project/name2`, `project/name3`... that does not exist yet."""
    project = Path(project)
    n = 1
    while (path := project / (name if n == 1 else f"{name}{n}")).exists():
        n += 1
    return path


class RunWriter:
    """Collects the results of one run into `save_dir`; `close()` writes the JSON files."""

    def __init__(self, save_dir: Path, names: dict[int, str], category_ids: list[int] | None,
                 save_images: bool = True):
        self.save_dir = Path(save_dir)
        self.save_dir.mkdir(parents=True, exist_ok=True)
        self.names, self.category_ids, self.save_images = names, category_ids, save_images
        self.records: list[dict] = []          # per picture: its images.json entry and detections
        self.failures: list[Failure] = []
        self.images_written = 0
        self.videos_written: list[Path] = []
        self._used_names: set[str] = set()
        self._video: tuple[str, VideoWriter] | None = None

    def add(self, result: Result) -> None:
        h, w = result.orig_shape
        entry = {"file_name": result.path or result.name, "width": w, "height": h}
        if result.frame is not None:
            entry["frame"] = result.frame
        self.records.append({"image": entry, "detections": result.to_coco(0, self.category_ids)})
        if self.save_images:
            self._save_picture(result)

    def add_failure(self, failure: Failure) -> None:
        self.failures.append(failure)

    def _save_picture(self, result: Result) -> None:
        if result.frame is None:
            self._close_video()
            result.save(self.save_dir / self._unique(result.name))
            self.images_written += 1
            return
        if self._video is None or self._video[0] != result.path:
            self._close_video()
            path = self.save_dir / self._unique(Path(result.path).stem + ".mp4")
            self._video = (result.path, VideoWriter(path, frame_rate(Path(result.path))))
            self.videos_written.append(path)
        self._video[1].write(result.plot())

    def _unique(self, name: str) -> str:
        stem, suffix = Path(name).stem, Path(name).suffix
        candidate, n = name, 2
        while candidate in self._used_names:
            candidate, n = f"{stem}_{n}{suffix}", n + 1
        self._used_names.add(candidate)
        return candidate

    def _close_video(self) -> None:
        if self._video is not None:
            self._video[1].close()
            self._video = None

    def close(self) -> None:
        """Finish videos and write predictions.json, images.json and (if any failed) failures.txt."""
        self._close_video()
        ids = image_ids([r["image"] for r in self.records])
        predictions, images = [], []
        for image_id, record in zip(ids, self.records):
            images.append({"id": image_id, **record["image"]})
            predictions.extend({**d, "image_id": image_id} for d in record["detections"])
        categories = [{"id": int(self.category_ids[label]) if self.category_ids else label, "name": name}
                      for label, name in self.names.items()]
        _write_json(self.save_dir / "predictions.json", predictions)
        _write_json(self.save_dir / "images.json", {"images": images, "categories": categories})
        if self.failures:
            (self.save_dir / "failures.txt").write_text("".join(f.message + "\n" for f in self.failures))


def image_ids(entries: list[dict]) -> list[int]:
    """The file names' numbers if every entry is a still image named by a distinct number, else 1..N."""
    stems = [Path(e["file_name"]).stem for e in entries]
    if entries and all("frame" not in e and s.isdigit() for e, s in zip(entries, stems)):
        numbers = [int(s) for s in stems]
        if len(set(numbers)) == len(numbers):
            return numbers
    return list(range(1, len(entries) + 1))


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    tmp.replace(path)
