"""`rtdetr serve`: an HTTP detection service around a `Detector` (needs `pip install 'rtdetr[serve]'`).

    import rtdetr, uvicorn
    from rtdetr.serve import create_app
    uvicorn.run(create_app(rtdetr.load_model("best.pt"), max_batch=8), port=8000)

Files: app.py (the endpoints and the per-request filtering), batcher.py (micro-batching on one
model thread), uploads.py (body and picture limits, decoding, parameters); static/ holds the
browser page served at `/`.
"""
from rtdetr.serve.app import create_app

__all__ = ["create_app"]
