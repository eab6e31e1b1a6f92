"""Prediction for users: `predict(model, source)` / `Predictor`, `Result`, and the `rtdetr predict` command.

Files, one concept each: images.py (reading one picture), video.py (video files), sources.py
(what a source expands to), results.py (`Result`, `Boxes`), draw.py (annotated pictures),
run.py (the run folder), predictor.py (the pipeline), cli.py (the command).
"""
from rtdetr.core.images import ImageReadError, read_image
from rtdetr.predict.predictor import Predictions, Predictor, PredictWarning, predict
from rtdetr.predict.results import Boxes, Result
from rtdetr.predict.sources import Failure, SourceError

__all__ = ["Boxes", "Failure", "ImageReadError", "Predictions", "Predictor", "PredictWarning", "Result",
           "SourceError", "predict", "read_image"]
