"""The HTTP service: `create_app(detector)` builds a FastAPI app around a `Detector`.

    POST /v1/detect   a picture (multipart field `image`, or the raw body as image/* or
                      application/octet-stream) -> {"model", "image", "detections", "time_ms"}
    GET  /v1/model    the model, its runtime and the service's limits
    GET  /healthz     {"status": "ok"}
    GET  /            the browser page (serve/static/index.html); /docs, /openapi.json: FastAPI's

Pictures are decoded off the event loop and queued for the micro-batcher
(`rtdetr.serve.batcher`), which runs the predictor (`Detector`'s `rtdetr.predict.Predictor`,
one per network size) on one thread. A batch runs at the loosest `conf` and largest `max_det`
of its requests; each request then keeps its own: the detections are sorted by score, so the
first `max_det` of a larger top-k are the top `max_det`, and a higher `conf` drops a tail.
Every refused request is a 4xx `{"error": "<one line>"}`; a model error is a 500 of that form
and fails only its batch.
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from time import perf_counter
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from rtdetr.core.errors import first_line
from rtdetr.predict.predictor import Predictor
from rtdetr.predict.results import Masks, Result
from rtdetr.predict.sources import Frame
from rtdetr.serve.batcher import Job, MicroBatcher
from rtdetr.serve.uploads import RAW_TYPES, ContentLengthLimit, decode_upload, parse_classes, parse_imgsz

STATIC = Path(__file__).with_name("static")
log = logging.getLogger("rtdetr.serve")

Conf = Annotated[float | None, Query(ge=0, le=1, description="keep detections scoring at least this")]
ImgSz = Annotated[str | None, Query(description="network input size: 640 or H,W (multiples of 32)")]
Classes = Annotated[str | None, Query(description="keep these classes: names or ids, comma-separated")]
MaxDet = Annotated[int | None, Query(ge=1, le=1000, description="detections considered per picture")]


class Service:
    """The model side of the app: one `Predictor` per network size, run by the batcher's thread."""

    def __init__(self, detector, *, imgsz=None, default_conf: float, default_max_det: int, exif: bool):
        self.detector = detector
        # The default-size predictor is made here, so a model that cannot run fails at start-up.
        self.default = Predictor(detector, conf=default_conf, imgsz=imgsz, max_det=default_max_det, exif=exif)
        self.predictors: dict[tuple[int, int], Predictor] = {self.default.imgsz: self.default}
        self.names = self.default.names
        self.conf, self.max_det = float(default_conf), int(default_max_det)  # the predictors' own change per batch
        self.fixed_imgsz = detector.imgsz if detector.is_exported else None
        cfg = getattr(detector.model, "cfg", None)
        self.info = {
            "name": getattr(cfg, "name", None) or Path(detector.source or "model").name,
            "task": detector.task,
            "imgsz": list(self.default.imgsz),
            "classes": list(self.names.values()),
        }

    def run(self, jobs: list[Job]) -> list[Result]:
        """One model call for jobs of one size (in the batcher's thread: one call at a time)."""
        size = jobs[0].imgsz
        predictor = self.predictors.get(size)
        if predictor is None:
            predictor = self.predictors[size] = Predictor(self.detector, imgsz=size, exif=self.default.exif)
        predictor.conf = min(j.conf for j in jobs)          # the loosest request of the batch...
        predictor.max_det = max(j.max_det for j in jobs)    # ...each keeps its own afterwards
        return predictor.predict_batch([Frame(j.image, None, i) for i, j in enumerate(jobs)])

    def detections(self, result: Result, conf: float, max_det: int, classes: set[int] | None) -> list[dict]:
        """One request's detections from its batch's `Result` (sorted by score: see the module docstring)."""
        keep = [i for i in range(min(max_det, len(result)))
                if float(result.scores[i]) >= conf and (classes is None or int(result.labels[i]) in classes)]
        out = [{"box": [float(v) for v in result.boxes.xyxy[i].tolist()], "score": float(result.scores[i]),
                "label": int(result.labels[i]), "class_name": self.names[int(result.labels[i])]} for i in keep]
        if result.masks is not None:
            rles = Masks(result.masks.data[keep], result.orig_shape).rle if keep else []
            for d, rle in zip(out, rles, strict=True):
                d["mask"] = {"size": list(rle["size"]), "counts": rle["counts"]}
        return out


def create_app(detector, *, max_batch: int = 8, batch_wait_ms: float = 5, max_upload_mb: float = 20,
               max_megapixels: float = 40, default_conf: float = 0.5, default_max_det: int = 300,
               imgsz: int | tuple[int, int] | None = None, exif: bool = True) -> FastAPI:
    """A FastAPI app serving `detector` (a `rtdetr.api.Detector`); run it with uvicorn.

    max_batch / batch_wait_ms: pictures run together in one model call, and how long the oldest
        waiting one waits for company (0: run what is waiting at once)
    max_upload_mb: request bodies over this are refused (413), from Content-Length before
        reading, else while reading
    max_megapixels: pictures with more pixels are refused (413), from their header
    default_conf, default_max_det, imgsz: what a request that does not say gets
        (imgsz: default the model's own size, else 640)
    exif: turn photos upright by their EXIF orientation, as `rtdetr predict` does
    """
    service = Service(detector, imgsz=imgsz, default_conf=default_conf, default_max_det=default_max_det, exif=exif)
    batcher = MicroBatcher(service.run, max_batch=max_batch, wait_s=batch_wait_ms / 1000)
    max_bytes, max_pixels = int(max_upload_mb * 2**20), int(max_megapixels * 1e6)
    too_large = f"request body over this service's limit of {max_upload_mb:g} MB"

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="rtdetr", summary="Real-time DETR object detection", lifespan=lifespan)
    app.state.service, app.state.batcher = service, batcher
    app.add_middleware(ContentLengthLimit, max_bytes=max_bytes, message=too_large)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        # Starlette's own limiter (a body without Content-Length) says only "Content Too Large".
        message = too_large if exc.status_code == 413 and exc.detail == "Content Too Large" else str(exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = [f"{e['loc'][-1]}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()]
        return JSONResponse({"error": "; ".join(problems)}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):   # a bug of ours: still one JSON line
        return JSONResponse({"error": f"internal error: {first_line(exc)}"}, status_code=500)

    @app.post("/v1/detect", max_body_size=max_bytes)
    async def detect(request: Request, conf: Conf = None, imgsz: ImgSz = None, classes: Classes = None,
                     max_det: MaxDet = None,
                     image: Annotated[UploadFile | None, File(description="the picture")] = None,
                     form_conf: Annotated[float | None, Form(alias="conf", ge=0, le=1)] = None,
                     form_imgsz: Annotated[str | None, Form(alias="imgsz")] = None,
                     form_classes: Annotated[str | None, Form(alias="classes")] = None,
                     form_max_det: Annotated[int | None, Form(alias="max_det", ge=1, le=1000)] = None):
        """Detections on one picture: the multipart field `image`, or the raw body (image/* or
        application/octet-stream). Parameters in the query or as form fields."""
        start = perf_counter()
        data = await _picture_bytes(request, image)
        size = parse_imgsz(_given(imgsz, form_imgsz), service.fixed_imgsz) or service.default.imgsz
        wanted = parse_classes(_given(classes, form_classes), service.names)
        conf_ = _given(conf, form_conf, service.conf)
        max_det_ = _given(max_det, form_max_det, service.max_det)
        picture = await asyncio.to_thread(decode_upload, data, max_pixels, exif)   # off the event loop
        try:
            out = await batcher.submit(Job(picture, size, conf_, max_det_))
        except Exception as e:
            log.error("model error on a batch: %s", first_line(e))
            raise HTTPException(500, f"model error: {first_line(e)}") from None
        h, w = picture.shape[:2]
        return {"model": service.info, "image": {"width": w, "height": h},
                "detections": service.detections(out.result, conf_, max_det_, wanted),
                "time_ms": {"inference": out.inference_ms, "total": 1000 * (perf_counter() - start)}}

    @app.get("/v1/model")
    async def model_info():
        """The model (name, task, default input size, class names), how it runs, and the limits."""
        backend = service.default.backend
        return {**service.info, "runtime": getattr(backend, "runtime", "torch"),
                "precision": getattr(backend, "precision", None), "max_batch": batcher.max_batch,
                "batch_wait_ms": batcher.wait_s * 1000, "default_conf": service.conf,
                "default_max_det": service.max_det, "max_upload_mb": max_upload_mb,
                "max_megapixels": max_megapixels,
                "batches": {str(k): v for k, v in sorted(batcher.batch_sizes.items())}}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    async def page():
        index = STATIC / "index.html"
        if not index.is_file():
            raise HTTPException(404, "no browser page in this installation (rtdetr/serve/static/index.html)")
        return FileResponse(index)

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


async def _picture_bytes(request: Request, image: UploadFile | None) -> bytes:
    """The uploaded picture's bytes: the multipart field, or the raw body of an image type."""
    if image is not None:
        return await image.read()
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        raise HTTPException(400, "multipart upload without the field 'image'")
    if kind and not kind.startswith(RAW_TYPES):
        raise HTTPException(415, f"Content-Type {kind} is not a picture: send the multipart field 'image' "
                                 "(curl -F image=@x.jpg) or the bytes as image/* or application/octet-stream")
    return await request.body()


def _given(*values):
    """The first value that is not None (query before form field before default)."""
    return next((v for v in values if v is not None), None)
