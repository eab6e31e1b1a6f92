"""RT-DETRv4 distillation in the trainer: a tiny teacher trains end to end on the CPU, the model
left behind is an undistilled one, GAM's weight follows its rule from the logged shares and
survives resume, the AIFI share is the official quantity, and official projector keys load."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rtdetr
from rtdetr.core.errors import CheckpointError
from rtdetr.data import make_synthetic_dataset
from rtdetr.models.weights import save_checkpoint
from rtdetr.train.config import TrainConfig
from rtdetr.train.distill import PROJECTOR, make_projector
from rtdetr.train.gam import GAMSettings, gam_update
from rtdetr.train.step import StepMixin
from rtdetr.train.trainer import Trainer, train
from rtdetr.train.teachers import Teacher
from tests.recipe import load_reference, recipe_state_dict

# A band far above the demo's AIFI share, so that GAM acts every epoch.
SMALL = dict(model="demo", imgsz=128, batch=4, workers=0, seed=0, exist_ok=True, lr=4e-4, warmup_steps=2,
             distill_weight=2.0, gam_rho=50.0, gam_delta=1.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("shapes"), seed=1, num_train=12, num_val=4,
                                  image_size=(128, 128))


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A randomly initialised detector of ours (another architecture width than the student's)."""
    torch.manual_seed(7)
    net = rtdetr.create_model("rtdetrv2_r18vd", num_classes=3).eval()
    return save_checkpoint(net, tmp_path_factory.mktemp("teacher") / "teacher.pt", ["a", "b", "c"])


def rows(run_dir) -> list[dict]:
    with open(run_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_distilled_run_trains_and_leaves_an_undistilled_model(data, teacher_file, tmp_path):
    result = train(data=str(data), epochs=2, project=str(tmp_path), name="d", teacher=str(teacher_file), **SMALL)
    epochs = rows(result.run_dir)
    # Each epoch's next weight is GAM's rule applied to that epoch's logged share, and is used next.
    gam = GAMSettings(50.0, 1.0, 20.0, None)  # demo's recipe: RT-DETRv4-S's default weight, no stage 2
    assert float(epochs[0]["distill_weight"]) == 2.0
    for i, row in enumerate(epochs):
        share = float(row["distill_share"])
        assert 0 < share < 49  # below the band: raised
        expected, why = gam_update(float(row["distill_weight"]), share, i, gam)
        assert why == "raised" and float(row["distill_weight_next"]) == pytest.approx(expected, rel=1e-5)
    assert float(epochs[1]["distill_weight"]) == pytest.approx(float(epochs[0]["distill_weight_next"]), rel=1e-5)
    with open(result.run_dir / "steps.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 6
    last = torch.load(result.run_dir / "weights" / "last.pt", weights_only=True)
    # The projector (256 -> the r18 teacher's 256... here the demo student's width -> 256) trained
    # along, in the run's extra modules; its optimiser state exists.
    student_dim = rtdetr.create_model("demo").encoder.hidden_dim
    assert last["extra_modules"][f"{PROJECTOR}.0.weight"].shape == (256, student_dim)
    # The model left behind: the keys and shapes of an undistilled model, in last.pt and best.pt.
    plain = {k: v.shape for k, v in rtdetr.create_model("demo", num_classes=3).state_dict().items()}
    best = torch.load(result.run_dir / "weights" / "best.pt", weights_only=True)
    for sd in (last["model"], best["model"]):
        assert {k: v.shape for k, v in sd.items()} == plain
    assert last["extra_losses"]["0"]["weight"] == pytest.approx(float(epochs[-1]["distill_weight_next"]), rel=1e-5)
    # Validation and prediction need no teacher: the checkpoint loads and predicts on its own.
    det = rtdetr.load_model(result.run_dir / "weights" / "best.pt")
    assert len(det.predict(torch.rand(3, 128, 128))) == 1


def test_resume_is_exact_with_distillation(data, teacher_file, tmp_path):
    kw = dict(data=str(data), epochs=2, project=str(tmp_path), teacher=str(teacher_file), **SMALL)
    whole = train(name="whole", **kw)
    train(name="parts", max_steps=2, save_period_steps=1, **kw)  # stopped inside epoch 0
    train(name="parts", max_steps=4, resume=True, **kw)          # inside epoch 1
    parts = train(name="parts", resume=True, **kw)
    a = torch.load(whole.run_dir / "weights" / "last.pt", weights_only=True)
    b = torch.load(parts.run_dir / "weights" / "last.pt", weights_only=True)
    assert a["extra_losses"] == b["extra_losses"]  # lambda, its history, the shares
    for part in ("model", "extra_modules"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert [r["distill_weight"] for r in rows(whole.run_dir)] == [r["distill_weight"] for r in rows(parts.run_dir)]


def test_resume_without_the_teacher_is_one_line(data, teacher_file, tmp_path):
    kw = dict(data=str(data), epochs=2, project=str(tmp_path), name="r", **SMALL)
    train(max_steps=1, teacher=str(teacher_file), **kw)
    with pytest.raises(CheckpointError) as e:  # the projector of last.pt has no place in an undistilled run
        train(resume=True, **kw)
    assert "\n" not in str(e.value) and "last.pt" in str(e.value) and "--teacher" in str(e.value)


class _Net(StepMixin):
    def __init__(self, model, extra):
        self.model, self.extra_modules, self.device = model, torch.nn.ModuleDict(extra), torch.device("cpu")


def test_aifi_share_is_the_official_quantity_and_distillation_reaches_aifi_and_backbone():
    torch.manual_seed(0)
    model = rtdetr.create_model("demo").train()
    projector = make_projector(model.encoder.hidden_dim, 8)
    x = torch.rand(2, 3, 128, 128)
    out = model(x, targets=[{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}] * 2)
    target = torch.randn(2, 8, 4, 4)
    from rtdetr.train.distill import cosine_distill_loss
    cosine_distill_loss(out["aifi"], target, projector).backward(retain_graph=True)
    # Only the distillation term: gradients in the backbone, the input projections and AIFI, and
    # none in CCFF or the decoder (F5 feeds them, but the term is on F5 itself).
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(grads[n] is not None and grads[n].abs().sum() > 0 for n in grads if n.startswith("encoder.encoder."))
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("backbone."))
    assert all(g is None for n, g in grads.items() if n.startswith("decoder.") or "fpn" in n or "pan" in n)
    # Add a detection-like gradient everywhere, then compare with the official definition: the L1
    # norm of the parameters named encoder.encoder* over that of every gradient (projector included).
    (out["pred_logits"].sum() + out["pred_boxes"].sum()).backward()
    share = _Net(model, {PROJECTOR: projector}).grad_norms()["grad_share/aifi"]
    named = list(model.named_parameters()) + [(f"p.{n}", p) for n, p in projector.named_parameters()]
    enc = sum(p.grad.abs().sum().item() for n, p in named if p.grad is not None and n.startswith("encoder.encoder"))
    total = sum(p.grad.abs().sum().item() for n, p in named if p.grad is not None)
    # The test's per-tensor float32 sums (cascade summation, ~1e-7 relative) against float64 sums.
    assert share == pytest.approx(100 * enc / total, rel=1e-5)


class _Wide(Teacher):
    """A 768-channel teacher, the width of RT-DETRv4's DINOv3 ViT-B/16."""

    def __init__(self):
        super().__init__(768, "wide random features")

    def features(self, images, grid):
        return torch.ones(images.shape[0], 768, *grid)


def test_official_rtv4_projector_keys_load(data, tmp_path):
    sd = recipe_state_dict(load_reference("rtv4_hgnetv2_s")["state_dict_manifest"])
    file = tmp_path / "rtv4_s.pth"
    torch.save({"ema": {"module": sd}}, file)
    trainer = Trainer(TrainConfig.from_kwargs(data=str(data), model="rtv4_hgnetv2_s", weights=str(file), imgsz=128,
                                              batch=2, workers=0, project=str(tmp_path), name="v4", teacher=_Wide()))
    trainer.setup()
    projector = trainer.extra_modules[PROJECTOR]
    assert torch.equal(projector[0].weight, sd["encoder.feature_projector.0.weight"])
    assert torch.equal(projector[0].bias, sd["encoder.feature_projector.0.bias"])
    assert not any("feature_projector" in k for k in trainer.model.state_dict())
    # RT-DETRv4-S's own distillation settings came from its recipe.
    d = trainer.distillation
    assert (d.weight, d.gam.rho, d.gam.delta, d.gam.default_weight) == (5.0, 11.0, 1.0, 20.0)


ROOT = Path(__file__).resolve().parents[2]


def test_two_processes_keep_one_lambda(data, teacher_file, tmp_path):
    """Under torchrun (2 gloo processes), every process computes the same share and lambda, and the
    projector, which DDP does not wrap, steps alike everywhere."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "train" / "ddp_distill_worker.py"), str(data), str(tmp_path), str(teacher_file)]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert len(a["distillation"]["history"]) == 2
    assert a["distillation"] == b["distillation"]
    assert a["distillation"]["weight"] != SMALL["distill_weight"]  # GAM moved it
    assert all(torch.equal(a["projector"][k], b["projector"][k]) for k in a["projector"])


def test_cli_tune_distill_prints_the_share_per_weight(data, teacher_file, tmp_path, capsys):
    from rtdetr.cli.app import main
    common = ["--data", str(data), "--model", "demo", "--imgsz", "128", "--batch", "4", "--workers", "0",
              "--epochs", "1", "--teacher", str(teacher_file), "--project", str(tmp_path)]
    assert main(["tune-distill", *common, "--grid", "0.5", "50"]) == 0
    out = capsys.readouterr().out
    report = __import__("json").loads((tmp_path / "tune_distill.json").read_text())
    low, high = report["runs"]
    assert (low["weight"], high["weight"]) == (0.5, 50.0)
    # The distillation gradient reaches AIFI: a 100x weight raises AIFI's share of the gradient.
    assert 0 < low["share"] < high["share"]
    assert report["rho"] == report["best"]["share"] and report["delta"] == pytest.approx(0.1 * report["rho"])
    assert f"--gam-rho {report['rho']:.3g}" in out and out.count("tune_distill_w") == 2
    # `rtdetr train` takes the same options; a teacher that is not there is one line, exit code 2.
    assert main(["train", *common, "--gam-rho", "5", "--gam-delta", "0.5", "--distill-weight", "3",
                 "--max-steps", "1", "--name", "cli"]) == 0
    with open(tmp_path / "cli" / "args.yaml") as f:
        args = f.read()
    assert "gam_rho: 5.0\n" in args and "distill_weight: 3.0\n" in args and f"teacher: {teacher_file}" in args
    capsys.readouterr()
    assert main(["train", *common, "--teacher", str(tmp_path / "missing.pt"), "--name", "bad"]) == 2
    err = capsys.readouterr().err
    assert "missing.pt" in err and len(err.strip().splitlines()) == 1
