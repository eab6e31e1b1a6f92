"""Prediction: `Predictor` / `predict(model, source)` (what `Detector.predict` and `rtdetr predict`
run), `Result`.

Files, one concept each: video.py (video files), sources.py (what a source expands to),
results.py (`Result`, `Boxes`, `Masks`), draw.py (annotated pictures), run.py (the run folder),
predictor.py (the pipeline), track.py (tracking through videos: `track`); pictures are read by
`rtdetr.core.images`.
"""
from rtdetr.core.images import ImageReadError, read_image
from rtdetr.predict.predictor import Predictions, Predictor, PredictWarning, predict
from rtdetr.predict.results import Boxes, Masks, Result
from rtdetr.predict.sources import Failure, SourceError

__all__ = ["Boxes", "Failure", "ImageReadError", "Masks", "Predictions", "Predictor", "PredictWarning", "Result",
           "SourceError", "predict", "read_image"]
