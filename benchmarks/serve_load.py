"""Load on `rtdetr serve`: latency and throughput at several concurrencies, without and with
micro-batching, against the same pictures through the predictor in-process.

    .venv/bin/python benchmarks/serve_load.py                              # demo model, 320, 200 requests
    .venv/bin/python benchmarks/serve_load.py --max-batch 1 8 --concurrency 1 4 16 --requests 200

For each --max-batch it starts `rtdetr serve` on 127.0.0.1 as a subprocess (the demo
architecture with random weights, saved as a checkpoint: latency does not depend on the
weights), warms it up, then sends --requests JPEG uploads at each --concurrency from a thread
pool of keep-alive httpx clients. Per run: p50 / p95 / p99 latency, requests/s, errors, the mean
batch the server ran (from /v1/model), and the server's RSS (VmRSS) at its start and at the end.
The baseline decodes and predicts the same pictures in this process (`Detector.predict`, batch 1
and each --max-batch). An overall --time-limit stops sending (the rows say how many were sent).
The load generator shares the CPU with the server, as a client on the same machine does.
Prints a table and writes JSON (default benchmarks/results/serve_load.json).
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

import rtdetr


def pictures(n: int, w: int = 640, h: int = 480, seed: int = 0) -> list[bytes]:
    """n JPEGs of coloured rectangles on noise, all different (so no cache can help)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        for _ in range(4):
            x1, y1 = rng.integers(0, w - 80), rng.integers(0, h - 80)
            img[y1:y1 + rng.integers(40, 200), x1:x1 + rng.integers(40, 200)] = rng.integers(0, 256, 3)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(ckpt: Path, imgsz: int, max_batch: int, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}   # the server's torch threads
    proc = subprocess.Popen([sys.executable, "-m", "rtdetr.cli", "serve", "--weights", str(ckpt),
                             "--imgsz", str(imgsz), "--max-batch", str(max_batch), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"rtdetr serve exited: {proc.stderr.read()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("rtdetr serve did not start in 60 s")


def batches(url: str) -> dict[int, int]:
    return {int(k): v for k, v in httpx.get(f"{url}/v1/model").json()["batches"].items()}


def load(url: str, data: list[bytes], requests: int, concurrency: int, deadline: float) -> dict:
    """`requests` uploads from `concurrency` threads, each with its own keep-alive client."""
    local = threading.local()
    latencies, errors = [], []
    lock = threading.Lock()

    def one(i: int) -> None:
        if time.monotonic() > deadline:
            return
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60)
        t0 = time.perf_counter()
        try:
            r = local.client.post(f"{url}/v1/detect", content=data[i % len(data)], headers={"content-type": "image/jpeg"})
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        with lock:
            (latencies if ok else errors).append(time.perf_counter() - t0)

    before = batches(url)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(requests)))
    seconds = time.perf_counter() - t0
    after = batches(url)
    ran = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    ms = np.asarray(latencies) * 1000
    pct = {f"p{q}_ms": float(np.percentile(ms, q)) if len(ms) else float("nan") for q in (50, 95, 99)}
    return {"concurrency": concurrency, "sent": len(latencies) + len(errors), "ok": len(latencies),
            "errors": len(errors), "seconds": seconds, "rps": len(latencies) / seconds, **pct,
            "mean_batch": sum(k * v for k, v in ran.items()) / max(1, sum(ran.values()))}


def baseline(ckpt: Path, data: list[bytes], imgsz: int, batch: int, requests: int) -> dict:
    """The same pictures decoded and predicted in-process, `batch` per forward pass."""
    det = rtdetr.load_model(ckpt)
    det.predict([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in data[:batch]], imgsz=imgsz, batch=batch,
                progress=False)
    t0 = time.perf_counter()
    frames = [np.asarray(Image.open(io.BytesIO(data[i % len(data)])).convert("RGB")) for i in range(requests)]
    det.predict(frames, imgsz=imgsz, batch=batch, conf=0.5, progress=False)
    seconds = time.perf_counter() - t0
    return {"batch": batch, "pictures": requests, "seconds": seconds, "images_per_s": requests / seconds,
            "ms_per_picture": 1000 * seconds / requests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--max-batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=200, help="per concurrency level")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="the server's torch threads")
    parser.add_argument("--time-limit", type=float, default=180, help="seconds for all the load runs together")
    parser.add_argument("--baseline-pictures", type=int, default=64, help="pictures per in-process baseline")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve_load.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = pictures(16)
    load_before = os.getloadavg()   # other processes on the machine: in the JSON, with the one after
    deadline = time.monotonic() + args.time_limit
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        ckpt = rtdetr.load_model("demo", weights=None).save(Path(tmp) / "demo.pt")
        # All servers up at once (an idle one takes no CPU); the runs alternate between them per
        # concurrency, so that other load on a shared machine affects each alike.
        servers = {k: start_server(ckpt, args.imgsz, k, args.threads) for k in args.max_batch}
        runs, rss_start = [], {}
        try:
            for k, (proc, url) in servers.items():
                httpx.post(f"{url}/v1/detect", content=data[0], headers={"content-type": "image/jpeg"},
                           timeout=120)   # the first request makes the fused copy
                load(url, data, 2 * k, k, float("inf"))   # and the first batch of each size its kernels
                rss_start[k] = rss_mb(proc.pid)
            for i, c in enumerate(args.concurrency):
                order = args.max_batch[i % len(args.max_batch):] + args.max_batch[:i % len(args.max_batch)]
                for k in order:
                    proc, url = servers[k]
                    row = {"max_batch": k, **load(url, data, args.requests, c, deadline)}
                    row["rss_start_mb"], row["rss_end_mb"] = rss_start[k], rss_mb(proc.pid)
                    runs.append(row)
                    print(f"  max_batch {k}, concurrency {c}: {row['rps']:.1f} req/s", file=sys.stderr)
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(30)
        runs.sort(key=lambda r: (r["max_batch"], r["concurrency"]))
        base = [baseline(ckpt, data, args.imgsz, b, args.baseline_pictures) for b in sorted({1, *args.max_batch})]

    print(f"rtdetr serve, demo model (random weights) at {args.imgsz}x{args.imgsz}, 640x480 JPEGs; "
          f"{cpu_name()}, {os.cpu_count()} cores, server {args.threads} torch threads, torch {torch.__version__}; "
          f"load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"{'max_batch':>9} {'conc':>5} {'sent':>5} {'err':>4} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'p99 ms':>8} {'batch':>6} {'RSS MB start/end':>17}")
    for r in runs:
        print(f"{r['max_batch']:>9} {r['concurrency']:>5} {r['sent']:>5} {r['errors']:>4} {r['rps']:>7.1f} "
              f"{r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['mean_batch']:>6.2f} "
              f"{r['rss_start_mb']:>8.0f}/{r['rss_end_mb']:<8.0f}")
    print("in-process baseline (decode + Detector.predict):")
    for b in base:
        print(f"  batch {b['batch']:>2}: {b['images_per_s']:.1f} images/s ({b['ms_per_picture']:.1f} ms per picture)")
    meta = {"cpu": cpu_name(), "cores": os.cpu_count(), "server_threads": args.threads, "imgsz": args.imgsz,
            "requests": args.requests, "picture": "640x480 JPEG", "model": "demo (random weights)",
            "torch": torch.__version__, "python": platform.python_version(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "load_average_1_5_15_before": load_before, "load_average_1_5_15_after": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "serve": runs, "in_process": base}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
