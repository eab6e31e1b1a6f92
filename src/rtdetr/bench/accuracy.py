"""Each benchmarked path's accuracy, measured by that path: COCO box AP50:95 and AP50 on a data
set's val split, beside its latency.

What is evaluated is the object the path's `Predictor` runs (`artefact`), so the number belongs
to what was timed: the eager model (torch), the predictor's fused float32 copy (torch-fused, the
very copy the predictor cached), the bfloat16 copy (torch-fused-bf16: its backbone and encoder
run in bfloat16 by construction, as when timed), and for the runtime paths the loaded
ONNX Runtime / OpenVINO model itself (the same exported or int8 graph, compiled at the same
precision, with the same threads). `rtdetr.eval.validate.evaluate` runs them: PyTorch modules
through the model and `postprocess`, exported graphs through their own `.detect`, as
`rtdetr val` does.

The reference is eager float32 (`REFERENCE`, "torch"); a path whose AP50:95 is more than
`ap_drop` below it is flagged. The default, 0.01 (1 AP point), is the usual bar for calling a
precision change or a quantization lossless: float32 paths differ from eager by float rounding
(outputs within 1e-4), far below it, so a flag says the precision (bf16, int8) cost accuracy.
On a few images one detection moves AP by more than that: the report says how many were used.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from rtdetr.eval.coco_eval import CocoEvaluator
from rtdetr.eval.result import EvalResult
from rtdetr.eval.validate import evaluate
from rtdetr.predict.predictor import Predictor
from rtdetr.runtime.backend import TorchBackend
from rtdetr.runtime.fused import inference_copy

AP_DROP = 0.01  # 1 AP point, absolute; see the module docstring


@dataclass
class Accuracy:
    """One path's box metrics on the val images; `drop` = the reference's AP50:95 minus this
    path's (None for the reference itself or when nothing could be scored); `flagged` when
    the drop exceeds the threshold."""

    ap: float
    ap50: float
    images: int
    drop: float | None = None
    flagged: bool = False


def artefact(predictor: Predictor):
    """What `predictor` runs as its inference, as `evaluate` takes it: the PyTorch module (the
    model, or the cached fused copy for its size) or the exported graph's runtime model."""
    backend = predictor.backend
    if isinstance(backend, TorchBackend):
        if backend.fused:  # the copy `predict_batch` prepares and runs (cached per model and size)
            return inference_copy(backend.model, tuple(predictor.imgsz), backend.decoder_layers)
        return backend.model
    return backend  # OnnxRuntimeModel / OpenVinoModel: the graph as compiled for the path


class ValImages:
    """A data set's val split at the network size, its first `max_images` images (None: all),
    and its evaluator (the whole split's ground truth; only the images evaluated are scored)."""

    def __init__(self, data: str | Path, imgsz: tuple[int, int], max_images: int | None = None,
                 class_names: list[str] | None = None, num_classes: int | None = None, batch: int = 8):
        from rtdetr.data import load_dataset
        from rtdetr.data.collate import collate_fn
        from rtdetr.data.transforms import val_transforms

        if max_images is not None and max_images < 1:
            raise ValueError(f"data_images must be at least 1, got {max_images}")
        dataset = load_dataset(data, "val", transforms=val_transforms(imgsz))
        if class_names is not None and list(class_names) != list(dataset.class_names):
            raise ValueError(f"the model was trained for classes {list(class_names)}, but {data} (val) has "
                             f"{list(dataset.class_names)}")
        if num_classes is not None and num_classes != len(dataset.class_names):
            raise ValueError(f"the model has {num_classes} classes, but {data} (val) has {len(dataset.class_names)}")
        self.data, self.imgsz = str(data), imgsz
        self.evaluator = CocoEvaluator.from_dataset(dataset, iou_types=("bbox",))
        n = len(dataset) if max_images is None else min(max_images, len(dataset))
        # In the split's order; workers 0: the images are few and the paths' threads are set.
        self.loader = DataLoader(Subset(dataset, range(n)), batch_size=batch, collate_fn=collate_fn, num_workers=0)
        self.images = n

    def evaluate(self, model) -> EvalResult:
        """COCO metrics of an artefact (see `artefact`) on these images, on the CPU."""
        return evaluate(model, self.loader, self.evaluator, torch.device("cpu"))


def path_accuracy(predictors: dict[str, Predictor], val: ValImages, reference: str,
                  ap_drop: float = AP_DROP, log=lambda _: None) -> dict[str, Accuracy]:
    """Each path's Accuracy, the drop against `reference` (one of `predictors`) and the flags."""
    if ap_drop < 0:
        raise ValueError(f"ap_drop is an absolute AP drop, at least 0; got {ap_drop}")
    results = {}
    for p, predictor in predictors.items():
        log(f"evaluating {p} on {val.images} val image(s)")
        results[p] = val.evaluate(artefact(predictor))
    ref = results[reference]
    out = {}
    for p, r in results.items():
        scored = not r.empty and not ref.empty
        drop = ref.ap - r.ap if scored and p != reference else None
        out[p] = Accuracy(r.ap, r.ap50, r.num_images, drop, drop is not None and drop > ap_drop)
    return out
