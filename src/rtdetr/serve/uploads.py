"""What a request carries, checked before the model sees it: the body's size, the picture's size
and its decoding (the same decoding as `rtdetr predict`: `rtdetr.core.images.decode_image`,
EXIF orientation applied), and the query / form parameters.

Every problem is an `HTTPException` whose detail is one line; the app turns it into
`{"error": detail}` with that status.
"""
from __future__ import annotations

import io

import numpy as np
from fastapi import HTTPException
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from rtdetr.core.errors import ImageReadError, first_line
from rtdetr.core.images import decode_image
from rtdetr.core.sizes import check_imgsz

# Raw request bodies of these types are taken as the picture's bytes.
RAW_TYPES = ("image/", "application/octet-stream")


class ContentLengthLimit:
    """Refuses a request whose Content-Length is over `max_bytes` before reading a byte of its body.

    The route's own `max_body_size` (Starlette's limiter) counts the bytes of a body sent
    without Content-Length as they arrive; for a declared length over the limit that limiter
    answers in plain text, so this check comes first and answers in the service's JSON.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, message: str):
        self.app, self.max_bytes, self.message = app, max_bytes, message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = Headers(scope=scope).get("content-length", "")
            if length.isdigit() and int(length) > self.max_bytes:
                await JSONResponse({"error": self.message}, status_code=413)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def decode_upload(data: bytes, max_pixels: int, exif: bool = True) -> np.ndarray:
    """The picture in `data` as [H, W, 3] uint8 RGB, upright; refused (413) when its header says it
    has more than `max_pixels` pixels, before any pixel is decoded (Pillow reads sizes lazily)."""
    if not data:
        raise HTTPException(400, "empty body: send the picture as the multipart field 'image' "
                                 "or as the raw request body")
    try:
        with Image.open(io.BytesIO(data)) as img:    # the header only
            w, h = img.size
    except UnidentifiedImageError:
        raise HTTPException(415, "not an image, or in a format Pillow cannot read") from None
    except Exception as e:  # a header Pillow knows but cannot parse
        raise HTTPException(400, f"truncated or corrupt image ({first_line(e)})") from None
    if w * h > max_pixels:
        raise HTTPException(413, f"picture of {w}x{h} = {w * h / 1e6:.1f} megapixels is over this "
                                 f"service's limit of {max_pixels / 1e6:g} megapixels")
    try:
        return decode_image(io.BytesIO(data), exif)
    except ImageReadError as e:
        raise HTTPException(400, str(e)) from None
    except Image.DecompressionBombError as e:
        raise HTTPException(413, f"too large to decode safely ({first_line(e)})") from None
    except Exception as e:  # Pillow signals broken data with OSError, SyntaxError, EOFError, ValueError...
        raise HTTPException(400, f"truncated or corrupt image ({first_line(e)})") from None


def parse_imgsz(text: str | None, fixed: tuple[int, int] | None) -> tuple[int, int] | None:
    """'640' or 'H,W' as (h, w), multiples of 32; None for the service's default size.
    An exported graph of one size (`fixed`) takes only that size."""
    if text is None or text == "":
        return None
    try:
        hw = check_imgsz(text)
    except ValueError as e:  # its line names imgsz and suggests the nearest sizes
        raise HTTPException(422, str(e)) from None
    if fixed is not None and hw != tuple(fixed):
        raise HTTPException(422, f"imgsz: this model is an exported graph of size {fixed[0]},{fixed[1]} only, "
                                 f"got {hw[0]},{hw[1]}")
    return hw


def parse_classes(text: str | None, names: dict[int, str]) -> set[int] | None:
    """'person,2,dog' (class names or label numbers) as a set of labels; None keeps every class."""
    if text is None or text.strip() == "":
        return None
    by_name = {n.lower(): i for i, n in names.items()}
    labels = set()
    for item in (t.strip() for t in text.split(",")):
        if item.isdigit() and int(item) in names:
            labels.add(int(item))
        elif item.lower() in by_name:
            labels.add(by_name[item.lower()])
        elif item:
            what = f"class id {item} (ids are 0..{len(names) - 1})" if item.isdigit() else f"class {item!r}"
            raise HTTPException(422, f"classes: unknown {what}; known: {', '.join(names.values())}")
    return labels
