"""Prediction: pictures in, `Result`s out.

    import rtdetr
    det = rtdetr.load_model("rtdetrv2_r18vd")
    results = det.predict("photos/", conf=0.5, save=True)              # -> runs/predict/exp
    for r in det.predict("street.mp4", stream=True):                   # a generator, frame by frame
        print(r.boxes.xyxy, r.scores, r.class_names)

Each picture goes through the official pre-processing (a plain bilinear resize to the network
size, aspect ratio not kept, pixels / 255, RGB), the model, and the official post-processing
(top `max_det` over queries x classes); detections scoring below `conf` are dropped and the
boxes are scaled back, per axis, to the picture's own pixels. A segmentation model's mask
logits (1/4 of the network input) are upsampled to the picture's pixels for the kept detections
only and thresholded: `Result.masks`. With `tile=`, a large picture is predicted by overlapping
tiles plus one full-picture pass, merged (`rtdetr.predict.tiling`).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from time import perf_counter

import torch
from tqdm import tqdm

from rtdetr.core.coco_names import COCO_CATEGORY_IDS, COCO_NAMES
from rtdetr.runtime.backend import TorchBackend, as_backend
from rtdetr.core.errors import ImageReadError
from rtdetr.core.images import preprocess
from rtdetr.core.sizes import check_imgsz
from rtdetr.core.memory import reuse_large_allocations
from rtdetr.models.postprocess import paste_masks
from rtdetr.predict.results import Boxes, Masks, Result
from rtdetr.predict.run import RunWriter, next_run_dir
from rtdetr.predict.sources import Failure, Frame, Source, count_pictures, expand, iter_frames
from rtdetr.predict.tiling import check_tiling, predict_tiled
from rtdetr.predict.video import is_video


class PredictWarning(UserWarning):
    """Something in a prediction run went wrong without stopping it (e.g. unreadable files in a folder)."""


class Predictions(list):
    """The list of `Result`s of one run, plus `failures` (inputs that could not be read) and
    `save_dir` (the run folder, when saving)."""

    failures: list[Failure]
    save_dir: Path | None


class Predictor:
    """A model with its prediction settings; call it on sources.

    model:  a `Detector` (from `rtdetr.load_model`), an `RTDETR` nn.Module, or an exported model
    conf:   keep detections scoring at least this (0 keeps all `max_det`, as for COCO evaluation)
    imgsz:  network input size, an int (square) or (height, width); multiples of 32 (default: an
            exported graph's fixed size, or the size the checkpoint was trained at, else 640)
    batch:  pictures per forward pass
    decoder_layers: decoder layers to run (fewer is faster; default: the model's own)
    max_det: detections considered per picture before `conf` (the official 300)
    device: where to run (default: where the model is); half: float16 autocast on CUDA
    optimize: run an inference-only copy made by `rtdetr.runtime.optimize_for_inference` (folded
            norms, fixed-size buffers, trimmed decoder, oneDNN kernels on CPU: about 0.65x the
            time, outputs equal within 1e-4); made once per model, size and decoder exit, and
            remade when the model's weights change. False runs the model itself.
    exif:   turn photos upright by their EXIF orientation
    class_names: override the model's (default: its own, or COCO's 80 for an 80-class model)
    category_ids: label -> category id for the COCO JSON (default: COCO's ids with COCO's names)
    mask_threshold: (segmentation models) a pixel belongs to a mask when its probability is above this
    mask_crop: (segmentation models) clear each mask's pixels outside its box (the default: masks are
            learnt inside their boxes, `rtdetr.train.mask_losses`; False shows the raw map)
    tile:   predict pictures larger than this (pixels) by overlapping tile x tile crops, each at the
            network size, plus one full-picture pass, merged by per-class NMS (`rtdetr.predict.tiling`:
            small objects in large pictures); tiles go `batch` per forward pass. None: one pass.
    overlap: the fraction of a tile its neighbours share, in [0, 0.9) (default 0.2)
    """

    def __init__(self, model, *, conf: float = 0.5, imgsz: int | tuple[int, int] | None = None, batch: int = 1,
                 decoder_layers: int | None = None, max_det: int = 300, device: str | torch.device | None = None,
                 half: bool = False, exif: bool = True, class_names: list[str] | None = None,
                 category_ids: list[int] | None = None, optimize: bool = True,
                 mask_threshold: float = 0.5, mask_crop: bool = True, tile: int | None = None,
                 overlap: float = 0.2):
        if isinstance(model, (str, Path)):
            raise TypeError(f"Predictor takes a model, not {str(model)!r}: rtdetr.load_model({str(model)!r}).predict(...)")
        self.device = torch.device(device) if device is not None else _device_of(model)
        self.model = model.to(self.device).eval()
        if self.device.type == "cpu":
            reuse_large_allocations()  # see rtdetr.core.memory: up to 1.4x faster on large activations
        self.conf, self.max_det, self.exif = float(conf), int(max_det), exif
        if not 0 < mask_threshold < 1:
            raise ValueError(f"mask_threshold is a probability in (0, 1), got {mask_threshold}")
        self.mask_threshold, self.mask_crop = float(mask_threshold), bool(mask_crop)
        # Default: the size an exported or optimised model was built for, else 640.
        self.imgsz = check_imgsz(imgsz if imgsz is not None else (default_imgsz(model) or 640))
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        self.batch = int(batch)
        if tile is not None:
            check_tiling(tile, overlap)
        self.tile, self.overlap = (int(tile) if tile is not None else None), float(overlap)
        self.decoder_layers = check_decoder_layers(model, decoder_layers)
        self.half = half and self.device.type == "cuda"
        if half and not self.half:
            warnings.warn(f"half precision needs a CUDA device; running in float32 on {self.device}", PredictWarning)
        self.backend = as_backend(model, fused=optimize, decoder_layers=self.decoder_layers, half=self.half)
        names = class_names_of(model, class_names)
        self.names: dict[int, str] = dict(enumerate(names))
        if category_ids is None:  # the model's own data set ids, else COCO's for COCO's classes
            category_ids = getattr(model, "category_ids", None) or (COCO_CATEGORY_IDS if names == COCO_NAMES else None)
        self.category_ids = category_ids
        if self.category_ids is not None and len(self.category_ids) != len(names):
            raise ValueError(f"category_ids has {len(self.category_ids)} entries for {len(names)} classes")
        self.failures: list[Failure] = []
        self.save_dir: Path | None = None

    def __call__(self, source: Source, *, stream: bool = False, save: bool = False, save_images: bool = True,
                 out: str | Path | None = None, project: str | Path = "runs/predict", name: str = "exp",
                 progress: bool | None = None) -> Predictions | Iterator[Result]:
        """Predict on `source` (see `rtdetr.predict.sources`): a list of `Result`s, or a generator with stream=True.

        save:     write a run folder (`out`, or the next free `project/name`, `name2`, ...) with
                  annotated pictures (unless save_images=False), predictions.json, images.json and failures.txt
        progress: a progress bar (default: for folders, globs, lists and videos)
        A single file or picture that cannot be read raises `ImageReadError`; in a collection it is
        skipped, listed in `.failures` and reported in one warning at the end.
        """
        items, strict = expand(source)        # a bad source fails here, even with stream=True
        run = self._run(items, strict, save, save_images, out, project, name, progress)
        if stream:
            return run
        results = Predictions(run)
        results.failures, results.save_dir = self.failures, self.save_dir
        return results

    def _run(self, items, strict, save, save_images, out, project, name, progress) -> Iterator[Result]:
        self.failures = []
        writer = None
        if save:
            writer = RunWriter(Path(out) if out is not None else next_run_dir(project, name),
                               self.names, self.category_ids, save_images)
        self.save_dir = writer.save_dir if writer else None
        show = progress if progress is not None else not strict or items[0].is_video
        bar = tqdm(total=count_pictures(items) if show else None, disable=not show, unit="img", desc="predict")
        batch: list[Frame] = []
        try:
            for x in iter_frames(items, self.exif):
                if isinstance(x, Failure):
                    if strict:
                        raise ImageReadError(x.message)
                    self.failures.append(x)
                    if writer:
                        writer.add_failure(x)
                    if not is_video(Path(x.path)):
                        bar.update(1)
                    continue
                batch.append(x)
                if len(batch) == self.batch:
                    yield from self._emit(batch, writer, bar)
                    batch = []
            if batch:
                yield from self._emit(batch, writer, bar)
        finally:
            bar.close()
            if writer:
                writer.close()
        if self.failures:
            lines = "\n".join(f"  {f.message}" for f in self.failures)
            warnings.warn(f"{len(self.failures)} input(s) could not be read and were skipped:\n{lines}",
                          PredictWarning, stacklevel=3)

    def _emit(self, frames: list[Frame], writer: RunWriter | None, bar: tqdm) -> Iterator[Result]:
        for result in self.predict_batch(frames):
            if writer:
                writer.add(result)
            bar.update(1)
            yield result

    def predict_batch(self, frames: list[Frame]) -> list[Result]:
        """The Results of `frames` (pictures [H, W, 3] uint8 RGB of any sizes): one forward pass,
        or with `tile` each picture by its tiles (`batch` per forward pass) and a full pass."""
        if self.tile is not None:
            return [predict_tiled(f, self._predict_frames, self.tile, self.overlap, self.batch, max_det=self.max_det)
                    for f in frames]
        return self._predict_frames(frames)

    def _predict_frames(self, frames: list[Frame]) -> list[Result]:
        """One forward pass over `frames`."""
        if isinstance(self.backend, TorchBackend):
            # The fused copy is made (or found) before the clock starts: making it is set-up, not inference.
            self.backend.prepare(self.imgsz)
        t0 = perf_counter()
        x = torch.stack([preprocess(f.image, self.imgsz) for f in frames]).to(self.device)
        t1 = self._sync()
        sizes_wh = torch.tensor([[f.image.shape[1], f.image.shape[0]] for f in frames], device=self.device)
        dets = self.backend.detect(x, sizes_wh, num_top=self.max_det)  # the network and the post-processing
        t2 = self._sync()
        results = [self._result(f, d) for f, d in zip(frames, dets)]
        t3 = self._sync()
        speed = {k: 1000 * v / len(frames) for k, v in
                 (("preprocess", t1 - t0), ("inference", t2 - t1), ("postprocess", t3 - t2))}
        for r in results:
            r.speed = speed
        return results

    def _result(self, frame: Frame, det: dict[str, torch.Tensor]) -> Result:
        """One picture's Result from its detections ('masks': logits [k, h/4, w/4] of a
        segmentation model, pasted here for the detections kept)."""
        keep = det["scores"] >= self.conf
        h, w = frame.image.shape[:2]
        masks = None
        if "masks" in det:
            threshold = math.log(self.mask_threshold / (1 - self.mask_threshold))  # probability -> logit
            boxes = det["boxes"][keep] if self.mask_crop else None
            masks = Masks(paste_masks(det["masks"][keep], (h, w), threshold, boxes).cpu(), (h, w))
        return Result(boxes=Boxes(det["boxes"][keep].cpu(), (h, w)), scores=det["scores"][keep].cpu(),
                      labels=det["labels"][keep].cpu(), names=self.names, orig_img=frame.image,
                      path=frame.path, frame=frame.frame, index=frame.index, category_ids=self.category_ids,
                      masks=masks)

    def _sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return perf_counter()


def predict(model, source: Source, *, conf: float = 0.5, imgsz: int | tuple[int, int] | None = None, batch: int = 1,
            decoder_layers: int | None = None, max_det: int = 300, device: str | torch.device | None = None,
            half: bool = False, exif: bool = True, class_names: list[str] | None = None,
            category_ids: list[int] | None = None, optimize: bool = True, mask_threshold: float = 0.5,
            mask_crop: bool = True, tile: int | None = None, overlap: float = 0.2, stream: bool = False,
            save: bool = False, save_images: bool = True, out: str | Path | None = None,
            project: str | Path = "runs/predict", name: str = "exp",
            progress: bool | None = None) -> Predictions | Iterator[Result]:
    """Predict with `model` on `source` in one call; the arguments are `Predictor`'s and `Predictor.__call__`'s."""
    predictor = Predictor(model, conf=conf, imgsz=imgsz, batch=batch, decoder_layers=decoder_layers,
                          max_det=max_det, device=device, half=half, exif=exif, class_names=class_names,
                          category_ids=category_ids, optimize=optimize, mask_threshold=mask_threshold,
                          mask_crop=mask_crop, tile=tile, overlap=overlap)
    return predictor(source, stream=stream, save=save, save_images=save_images, out=out, project=project,
                     name=name, progress=progress)




def check_decoder_layers(model, n: int | None) -> int | None:
    total = getattr(getattr(model, "decoder", None), "num_layers", None)
    if n is not None and (n < 1 or (total is not None and n > total)):
        raise ValueError(f"decoder_layers must be in 1..{total}, got {n}")
    return n


def class_names_of(model, class_names: list[str] | None = None) -> list[str]:
    """The names of the model's classes: given ones, the model's own, COCO's for 80 classes, else 'class<i>'."""
    num_classes = int(getattr(model, "num_classes"))
    names = class_names if class_names is not None else getattr(model, "class_names", None)
    if names is None:
        names = COCO_NAMES if num_classes == 80 else [f"class{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a model with {num_classes} classes")
    return list(names)


def _device_of(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def default_imgsz(model) -> tuple[int, int] | None:
    """The size a model is run at when none is given: a `Detector`'s `default_imgsz` (an exported
    graph's fixed size, or the size its checkpoint was trained at), an exported graph's fixed
    size, else None."""
    return getattr(model, "default_imgsz", None) or getattr(model, "imgsz", None)
