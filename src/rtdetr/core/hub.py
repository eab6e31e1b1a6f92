"""Download named weight files once into a local cache folder.

`download(url)` returns the cached file when it is already there; otherwise it streams the
file into `<name>.part` (resuming an interrupted download with an HTTP Range request),
checks its size and optional sha256, and renames it into place atomically.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

from tqdm import tqdm

__all__ = ["WeightsDownloadError", "cache_dir", "download"]

CHUNK = 1 << 20  # bytes read per step
TIMEOUT = 30.0  # seconds without data before a request fails

# Errors that mean "the network let us down" (as opposed to, say, a full local disk).
_NETWORK_ERRORS = (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException)


class WeightsDownloadError(RuntimeError):
    """A weight file could not be downloaded (offline, HTTP error, truncated or corrupt)."""


def cache_dir() -> Path:
    """`$RTDETR_CACHE`, else `$XDG_CACHE_HOME/rtdetr`, else `~/.cache/rtdetr`."""
    if os.environ.get("RTDETR_CACHE"):
        return Path(os.environ["RTDETR_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "rtdetr"


def download(
    url: str,
    filename: str | None = None,
    *,
    cache: Path | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> Path:
    """Return the local path of `url`'s file, downloading it into the cache if needed.

    `filename` defaults to the last component of the URL path; `cache` defaults to
    `cache_dir()`. When `sha256` is given, a cached file must match it (else it is fetched
    again) and so must a fresh download. Raises `WeightsDownloadError` on any failure.
    """
    name = filename or Path(unquote(urlparse(url).path)).name
    if not name:
        raise ValueError(f"cannot infer a file name from {url!r}; pass filename=")
    target = Path(cache if cache is not None else cache_dir()).expanduser() / name
    if target.is_file() and (sha256 is None or _sha256(target) == sha256.lower()):
        return target

    def fail(reason: str) -> WeightsDownloadError:
        reason = " ".join(reason.split())  # keep the message on one line
        return WeightsDownloadError(
            f"could not download {name} from {url} ({reason}); download it by hand and "
            f"put it at {target}, or pass weights=PATH"
        )

    part = target.with_name(name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        expected = _fetch(url, part, name, progress)
    except urllib.error.HTTPError as e:
        raise fail(f"HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise fail(str(e.reason)) from e
    except _NETWORK_ERRORS as e:
        raise fail(str(e) or type(e).__name__) from e

    size = part.stat().st_size
    if expected is not None and size != expected:  # keep the .part: the next call resumes it
        raise fail(f"incomplete download: got {size} of {expected} bytes; retry to resume")
    if sha256 is not None:
        digest = _sha256(part)
        if digest != sha256.lower():
            part.unlink()
            raise fail(f"sha256 mismatch: expected {sha256.lower()}, got {digest}")
    os.replace(part, target)
    return target


def _fetch(url: str, part: Path, name: str, progress: bool) -> int | None:
    """Stream `url` into `part`, resuming from its current size; return the expected size."""
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "rtdetr"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # range not satisfiable: the .part is unusable
            e.close()
            part.unlink()
            return _fetch(url, part, name, progress)
        raise
    with resp:
        if resp.status == 206:
            m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != start:  # not the range we asked for
                part.unlink()
                return _fetch(url, part, name, progress)
        else:  # 200: the server sends the whole file, so start from scratch
            start = 0
        length = resp.headers.get("Content-Length")
        expected = start + int(length) if length is not None else None
        with open(part, "ab" if start else "wb") as f, tqdm(
            total=expected, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
            desc=name, disable=not progress,
        ) as bar:
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
    return expected


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
