"""`optimize_for_inference` gives the model's own outputs, on the official fixtures.

Each fixture model is built from the deterministic recipe through the official-checkpoint
path (as in tests/nn/test_official_parity.py), optimized, and compared with the unoptimized
model and with the official outputs. Queries are compared as a set (near-tied encoder scores
may swap two queries' order); tolerance 1e-4.

Discrete sampling (`*_dsp`) rounds each sampling location to a cell: folding changes the
float rounding (~1e-7), which can move a location lying right on a cell border to the next
cell. On the r18 dsp fixture this happens to one query of 300 (logits 5e-4 apart, boxes
within 1e-4); the unoptimized model is no more "right" there than the optimized one.
"""
from __future__ import annotations

import copy

import pytest
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

import rtdetr
from rtdetr.models.reparam import fold_norm, fuse_model
from rtdetr.runtime import optimize_for_inference
from rtdetr.runtime.kernels import OneDNNConv, OneDNNLinear, onednn_available
from rtdetr.models.nn.hybrid_encoder import RepVggBlock
from tests.recipe import load_outputs, load_reference, recipe_image, recipe_state_dict

TOL = 1e-4
FLIPS_ALLOWED = 2     # discrete sampling only: queries whose nearest cell may flip (see above)
FLIP_TOL = 1e-2
# v1 and v2, plain / frozen batch norms, discrete sampling, one sampling point, HGNetv2; D-FINE's
# encoder blocks and distribution decoder (with learnable affines), DEIM on RT-DETRv2.
MODELS = ["rtdetr_r18vd", "rtdetrv2_r18vd", "rtdetrv2_r50vd", "rtdetrv2_r18vd_dsp", "rtdetrv2_r18vd_sp1",
          "rtdetrv2_hgnetv2_l", "dfine_hgnetv2_s", "deim_rtv2_r18vd"]


def fixture_model(name: str, tmp_path) -> tuple[rtdetr.RTDETR, torch.Tensor, dict]:
    """(model loaded from an official-layout file of recipe weights, the input, the official outputs)."""
    ref = load_reference(name)
    file = tmp_path / f"{name}.pth"
    torch.save({"ema": {"module": recipe_state_dict(ref["state_dict_manifest"])}}, file)
    model = rtdetr.load_model(name, weights=file)
    x = recipe_image(ref["input"]["recipe_image_seed"], ref["input"]["h"], ref["input"]["w"])
    return model, x, load_outputs(name)


def query_distances(a: dict, b: dict) -> torch.Tensor:
    """Pair the queries of two outputs one to one (min-cost assignment of the L-inf distances
    between their [logits, box] rows) and return the paired distances, largest first, [Q]."""
    ra, rb = (torch.cat([o["pred_logits"][0], o["pred_boxes"][0]], dim=1).double() for o in (a, b))
    dist = torch.cdist(ra, rb, p=float("inf"))
    rows, cols = linear_sum_assignment(dist.numpy())
    return dist[rows, cols].sort(descending=True).values


def assert_close(dist: torch.Tensor, discrete: bool) -> None:
    if discrete:
        assert (dist > TOL).sum() <= FLIPS_ALLOWED and dist[0] < FLIP_TOL, dist[:5].tolist()
    else:
        assert dist[0] < TOL, dist[:5].tolist()


@pytest.mark.parametrize("name", MODELS)
def test_fixture_outputs(name, tmp_path):
    model, x, official = fixture_model(name, tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize_for_inference(model, imgsz=tuple(x.shape[2:]))
    with torch.inference_mode():
        ours, theirs = model(x), fast(x)

    vs_model, vs_official = query_distances(ours, theirs), query_distances(official, theirs)
    print(f"{name}: max abs difference fused vs unfused {vs_model[0]:.2g}, vs official {vs_official[0]:.2g}; "
          f"queries beyond {TOL:g}: {(vs_model > TOL).sum().item()}, {(vs_official > TOL).sum().item()}")
    discrete = model.cfg.decoder.cross_attn_method == "discrete"
    assert_close(vs_model, discrete)
    assert_close(vs_official, discrete)

    # Folded and trimmed: no norms, no RepVGG branches, no training-only parts.
    assert not any(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d, RepVggBlock)) for m in fast.modules())
    assert len(fast.decoder.decoder.layers) == model.decoder.eval_layers
    assert not any("denoising" in k for k in fast.state_dict())
    # The original is untouched.
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert any(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)) for m in model.modules())


@pytest.mark.parametrize("channels_last, onednn", [(False, False), (True, False), (False, True)])
def test_settings_are_exact(channels_last, onednn, tmp_path):
    """Each layout / kernel choice on its own (the default, both on, is covered above)."""
    model, x, official = fixture_model("rtdetrv2_r18vd", tmp_path)
    fast = optimize_for_inference(model, imgsz=640, channels_last=channels_last, onednn=onednn)
    with torch.inference_mode():
        assert query_distances(official, fast(x))[0] < TOL


def test_decoder_exit_and_batches():
    """A shortened decoder equals `model(x, num_decoder_layers=n)`; batches give per-image results.

    Compared per image as sets of queries: the random demo model's encoder scores are near-tied,
    and on some CPUs (measured: AVX2 kernels, `ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`)
    the folded copy's last-bit differences swap two queries' places in the top-k; compared by
    index that reads as 3e-3 (a logit) and 0.75 (a box), as a set the copies agree within 1e-6.
    """
    torch.manual_seed(0)
    model = rtdetr.create_model("demo").eval()
    x = torch.rand(2, 3, 256, 320)
    fast = optimize_for_inference(model, imgsz=(256, 320), decoder_layers=1)
    with torch.inference_mode():
        ours, theirs, single = model(x, num_decoder_layers=1), fast(x), fast(x[1:])
    assert all(theirs[k].shape == ours[k].shape for k in ("pred_logits", "pred_boxes"))
    image = lambda out, i: {k: v[i:i + 1] for k, v in out.items()}  # noqa: E731
    for i in range(2):
        assert query_distances(image(ours, i), image(theirs, i))[0] < TOL
    assert query_distances(image(theirs, 1), single)[0] < TOL
    assert len(fast.decoder.decoder.layers) == 1


def test_copies_and_state_dict(tmp_path):
    """oneDNN's packed weights stay out of copies and state dicts; a copy repacks and agrees."""
    model = rtdetr.create_model("demo").eval()
    fast = optimize_for_inference(model, imgsz=256)
    if onednn_available():  # the fast CPU kernels are really in use (a renamed op would silently drop them)
        assert any(isinstance(m, OneDNNConv) for m in fast.modules())
        assert any(isinstance(m, OneDNNLinear) for m in fast.modules())
    x = torch.rand(1, 3, 256, 256)
    with torch.inference_mode():
        before = fast(x)
        again = copy.deepcopy(fast)(x)
    torch.save(fast.state_dict(), tmp_path / "fast.pt")
    assert all(torch.equal(before[k], again[k]) for k in before)


def test_fold_norm_and_repvgg_are_exact():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, 2, 1, groups=2, bias=True)
    for norm in (nn.BatchNorm2d(16), FrozenBatchNorm2d(16)):
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.uniform_(-1, 1)
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        x = torch.randn(2, 8, 9, 11)
        with torch.no_grad():
            assert torch.allclose(fold_norm(conv, norm.eval())(x), norm(conv(x)), atol=1e-5)

    block = RepVggBlock(8, 8).eval()
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    x = torch.randn(1, 8, 10, 12)
    with torch.no_grad():
        expected = block(x)
        # On its own, and through the walker (bottom-up: the branches are folded first).
        assert torch.allclose(block.fuse()(x), expected, atol=1e-5)
        walked = fuse_model(nn.Sequential(copy.deepcopy(block)))
        assert type(walked[0].conv) is nn.Conv2d and walked[0].conv.kernel_size == (3, 3)
        assert torch.allclose(walked(x), expected, atol=1e-5)


def test_fuse_model_refuses_a_norm_it_cannot_fold():
    """A batch norm outside any block with `fuse()` would silently stay: the walker says so."""
    with pytest.raises(RuntimeError, match="batch norms left unfolded.*1"):
        fuse_model(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))


def test_clear_errors():
    model = rtdetr.create_model("demo").eval()
    with pytest.raises(ValueError, match="multiple of 32"):
        optimize_for_inference(model, imgsz=(250, 320))
    with pytest.raises(ValueError, match="decoder_layers must be in"):
        optimize_for_inference(model, imgsz=256, decoder_layers=99)
    fast = optimize_for_inference(model, imgsz=256)
    with pytest.raises(ValueError, match=r"takes \[B, 3, 256, 256\].*imgsz=\(H, W\)"):
        fast(torch.rand(1, 3, 320, 256))
    with pytest.raises(RuntimeError, match="inference only"):
        fast.train()
    with pytest.raises(TypeError, match="RTDETR"):
        optimize_for_inference(nn.Linear(2, 2))
