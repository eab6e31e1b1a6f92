"""The pipeline: the speed dial, batches, the run folder, and a real (randomly initialised) RT-DETR."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import rtdetr
from rtdetr.runtime.fused import inference_copy, optimize_for_inference
from rtdetr.predict import Predictor, PredictWarning, predict
from rtdetr.predict.predictor import preprocess
from rtdetr.predict.run import image_ids, next_run_dir
from tests.predict.conftest import assert_box, moving_square_frames, picture, save_picture, write_video


def test_speed_dial(detector):
    img = picture(200, 100, (20, 20, 80, 80))
    predict(detector, img, imgsz=(64, 128), decoder_layers=2)
    assert detector.calls[-1]["shape"] == (1, 3, 64, 128) and detector.calls[-1]["layers"] == 2
    predict(detector, img)
    assert detector.calls[-1]["shape"] == (1, 3, 640, 640) and detector.calls[-1]["layers"] is None


@pytest.mark.parametrize("imgsz", [100, (640, 100), 0, (1, 2, 3)])
def test_imgsz_must_be_multiples_of_32(detector, imgsz):
    with pytest.raises(ValueError, match="multiple of 32"):
        Predictor(detector, imgsz=imgsz)


def test_decoder_layers_checked_early(detector):
    with pytest.raises(ValueError, match=r"decoder_layers must be in 1..3, got 4"):
        Predictor(detector, decoder_layers=4)


def test_batches(tmp_path, detector):
    for i in range(5):
        save_picture(tmp_path / f"{i}.png", picture(64 + 32 * i, 64, (8, 8, 40, 40)))
    results = predict(detector, tmp_path, imgsz=64, batch=2)
    assert [c["shape"][0] for c in detector.calls] == [2, 2, 1]
    assert [r.orig_shape for r in results] == [(64, 64 + 32 * i) for i in range(5)]
    for r in results:
        assert_box(r.boxes.xyxy[0], (8, 8, 40, 40), tol=2 * r.orig_shape[1] / 64)


def test_preprocess_is_the_official_plain_resize():
    img = (np.arange(48 * 80 * 3) % 251).astype(np.uint8).reshape(48, 80, 3)
    x = preprocess(img, (32, 64))
    expected = np.asarray(Image.fromarray(img).resize((64, 32), Image.BILINEAR), np.float32) / 255
    assert x.shape == (3, 32, 64) and x.dtype == torch.float32
    assert torch.equal(x, torch.from_numpy(expected).permute(2, 0, 1))


def test_run_folder(tmp_path, detector):
    for name in ("000000000139.jpg", "000000397133.png"):
        save_picture(tmp_path / "in" / name, picture(200, 150, (40, 30, 120, 90)))
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    project = tmp_path / "runs"
    with pytest.warns(PredictWarning):
        results = predict(detector, tmp_path / "in", imgsz=160, save=True, project=project)
    run = project / "exp"
    assert results.save_dir == run
    assert sorted(p.name for p in run.iterdir()) == \
        ["000000000139.jpg", "000000397133.png", "failures.txt", "images.json", "predictions.json"]
    assert (run / "failures.txt").read_text() == results.failures[0].message + "\n"
    preds = json.loads((run / "predictions.json").read_text())
    meta = json.loads((run / "images.json").read_text())
    # every file is named by a number (COCO's habit): those are the image ids
    assert [i["id"] for i in meta["images"]] == [139, 397133]
    assert meta["images"][0] == {"id": 139, "file_name": str(tmp_path / "in" / "000000000139.jpg"),
                                 "width": 200, "height": 150}
    assert meta["categories"][0] == {"id": 1, "name": "person"} and len(meta["categories"]) == 80
    assert [(p["image_id"], p["category_id"]) for p in preds] == [(139, 1), (397133, 1)]
    assert_box(preds[0]["bbox"], (40, 30, 80, 60), tol=3)
    annotated = np.asarray(Image.open(run / "000000397133.png"))
    assert (annotated == results[1].plot()).all()
    predict(detector, tmp_path / "in" / "000000000139.jpg", imgsz=160, save=True, project=project)
    assert next_run_dir(project) == project / "exp3" and (project / "exp2" / "predictions.json").exists()


def test_run_folder_for_a_video_and_in_memory_pictures(tmp_path, detector):
    frames, _ = moving_square_frames(3)
    video = write_video(tmp_path / "clip.mp4", frames)
    out = tmp_path / "out"
    predict(detector, [video, frames[0], frames[1]], imgsz=128, save=True, out=out)
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4", "image3.jpg", "image4.jpg", "images.json",
                                                      "predictions.json"]
    meta = json.loads((out / "images.json").read_text())
    assert [(i["id"], i.get("frame")) for i in meta["images"]] == [(1, 0), (2, 1), (3, 2), (4, None), (5, None)]
    assert len(json.loads((out / "predictions.json").read_text())) == 5
    import av
    with av.open(str(out / "clip.mp4")) as c:
        annotated = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(annotated) == 3 and annotated[0].shape == (96, 128, 3)


def test_save_images_off_still_writes_json(tmp_path, detector):
    out = tmp_path / "out"
    predict(detector, picture(64, 64, (8, 8, 40, 40)), imgsz=64, save=True, save_images=False, out=out)
    assert sorted(p.name for p in out.iterdir()) == ["images.json", "predictions.json"]


def test_image_ids():
    assert image_ids([{"file_name": "a/000000000139.jpg"}, {"file_name": "2.png"}]) == [139, 2]
    assert image_ids([{"file_name": "1.jpg"}, {"file_name": "cat.jpg"}]) == [1, 2]
    assert image_ids([{"file_name": "1.jpg"}, {"file_name": "b/001.jpg"}]) == [1, 2]     # numbers repeat
    assert image_ids([{"file_name": "5.mp4", "frame": 0}]) == [1]


@pytest.fixture(scope="module")
def random_rtdetr():
    torch.manual_seed(0)
    return rtdetr.load_model("rtdetrv2_r18vd", weights=None)


def test_a_real_rtdetr_end_to_end(tmp_path, random_rtdetr):
    """Plumbing through the real model (random weights: boxes are meaningless, shapes are not)."""
    save_picture(tmp_path / "a.jpg", picture(300, 200, (40, 30, 120, 90)))
    save_picture(tmp_path / "b.png", picture(150, 250, (10, 10, 50, 50)))
    results = predict(random_rtdetr, tmp_path, imgsz=128, batch=2, conf=0.0, max_det=20, decoder_layers=1,
                      save=True, out=tmp_path / "run")
    assert [r.orig_shape for r in results] == [(200, 300), (250, 150)]
    for r in results:
        assert len(r) == 20 and r.boxes.xyxy.shape == (20, 4) and r.scores.shape == (20,)
        assert bool((r.scores[:-1] >= r.scores[1:]).all())
        assert r.labels.dtype == torch.int64 and all(n in rtdetr.core.coco_names.COCO_NAMES for n in r.class_names)
        assert r.speed["inference"] > 0
    assert len(json.loads((tmp_path / "run" / "predictions.json").read_text())) == 40


def test_same_detections_as_postprocess_by_hand(random_rtdetr):
    """conf=0: exactly rtdetr.postprocess on the plainly resized picture, boxes in the picture's pixels."""
    img = (np.random.default_rng(0).random((200, 300, 3)) * 255).astype(np.uint8)
    (r,) = predict(random_rtdetr, img, imgsz=128, conf=0.0, optimize=False)
    with torch.no_grad():
        out = random_rtdetr(preprocess(img, (128, 128))[None])
    (expected,) = rtdetr.postprocess(out, torch.tensor([[300, 200]]))
    assert torch.allclose(r.boxes.xyxy, expected["boxes"], atol=1e-4)
    assert torch.allclose(r.scores, expected["scores"], atol=1e-6)
    assert torch.equal(r.labels, expected["labels"])


def test_default_path_runs_the_inference_copy(random_rtdetr):
    """By default the predictor runs `optimize_for_inference(model, imgsz)` (its agreement with the
    model itself is tested on the official fixtures in tests/deploy/test_fuse.py): the detections
    are those of that copy, bit for bit, and the copy is made once, then reused."""
    img = (np.random.default_rng(1).random((200, 300, 3)) * 255).astype(np.uint8)
    (r,) = predict(random_rtdetr, img, imgsz=160, conf=0.0, decoder_layers=2)
    fast = optimize_for_inference(random_rtdetr, (160, 160), decoder_layers=2)
    with torch.inference_mode():
        (expected,) = rtdetr.postprocess(fast(preprocess(img, (160, 160))[None]), torch.tensor([[300, 200]]))
    assert torch.equal(r.scores, expected["scores"]) and torch.equal(r.labels, expected["labels"])
    assert torch.equal(r.boxes.xyxy, expected["boxes"])
    first = inference_copy(random_rtdetr, (160, 160), 2)
    predict(random_rtdetr, img, imgsz=160, decoder_layers=2)
    assert inference_copy(random_rtdetr, (160, 160), 2) is first
    assert inference_copy(random_rtdetr, (160, 160), 1) is not first


def test_inference_copy_follows_weight_changes(random_rtdetr):
    """Changing a weight in place (as an optimizer step or load_state_dict does) remakes the copy."""
    x = torch.rand(1, 3, 160, 160)
    before = inference_copy(random_rtdetr, (160, 160))
    with torch.no_grad():
        random_rtdetr.decoder.dec_score_head[-1].bias.add_(1.0)
    after = inference_copy(random_rtdetr, (160, 160))
    assert after is not before
    with torch.inference_mode():
        shift = after(x)["pred_logits"] - before(x)["pred_logits"]
    assert torch.allclose(shift, torch.ones_like(shift), atol=1e-4)


def test_a_name_instead_of_a_model_says_how_to_load_it():
    with pytest.raises(TypeError, match=r"rtdetr\.load_model\('rtdetrv2_r18vd'\)\.predict"):
        predict("rtdetrv2_r18vd", picture(64, 64, (8, 8, 40, 40)), imgsz=64)
