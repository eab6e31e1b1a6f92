"""Distillation teachers (rtdetr.train.teachers): each spec form against the model it wraps, called
directly on the input computed here by hand (normalise, then avg-pool or bilinear-resize).

Tolerance: the teacher and the reference run the same weights through the same operations on the
same input, so they agree to float32 rounding of a reordered reduction at most; 1e-6 absolute on
features of magnitude ~1 (a bf16 path would differ by ~1e-2, a wrong resize or layout by ~1e-1).
"""
from __future__ import annotations

import sys
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rtdetr.models import zoo
from rtdetr.models.weights import save_checkpoint
from rtdetr.train.teachers import TeacherError, load_teacher

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
TOL = dict(atol=1e-6, rtol=0)


def normalise(x, mean_std=IMAGENET):
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in mean_std)
    return (x - mean) / std


def token_map(tokens, prefix, h, w):
    """[B, prefix + h*w, D] (row-major patches) -> [B, D, h, w]."""
    return tokens[:, prefix:].reshape(tokens.shape[0], h, w, -1).permute(0, 3, 1, 2)


def one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text and text
    return text


def images(h=64, w=96):
    return torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0))


# -- Hugging Face folders

def _hf_model(kind):
    import transformers
    torch.manual_seed(0)
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=16,
                  image_size=64)
    if kind == "dinov3":
        model = transformers.DINOv3ViTModel(transformers.DINOv3ViTConfig(num_register_tokens=4, **common))
    elif kind == "dinov2reg":
        model = transformers.Dinov2WithRegistersModel(
            transformers.Dinov2WithRegistersConfig(num_register_tokens=4, **common))
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(**common))
    return model.eval(), 1 + (4 if kind != "dinov2" else 0)  # CLS + registers lead the tokens


@pytest.fixture(scope="module", params=["dinov2", "dinov3", "dinov2reg"])
def hf(request, tmp_path_factory):
    model, prefix = _hf_model(request.param)
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(folder)
    return model, prefix, folder, load_teacher(folder)


def test_hf_teacher_is_the_model_on_the_pooled_input(hf):
    model, prefix, folder, teacher = hf
    x = images()  # 64x96; grid (2, 3) at patch 16 wants 32x48: an integer factor 2, so a 2x2 average
    out = teacher(x, (2, 3))
    ref = token_map(model(pixel_values=F.avg_pool2d(normalise(x), 2)).last_hidden_state, prefix, 2, 3)
    assert teacher.dim == 32 and str(folder) in teacher.name
    assert out.shape == (2, 32, 2, 3) and out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out, ref, **TOL)


def test_resize_pools_by_an_integer_factor_else_bilinear(hf):
    model, prefix, _, teacher = hf
    x = images()

    def ref(inp, h, w):
        return token_map(model(pixel_values=inp).last_hidden_state, prefix, h, w)

    bilinear = F.interpolate(normalise(x), size=(32, 48), mode="bilinear", antialias=True, align_corners=False)
    pooled = teacher(x, (2, 3))
    assert (pooled - ref(bilinear, 2, 3)).abs().max() > 1e-3  # the two resizes differ: the check can tell
    # k = 1: the batch goes in as it is (grid 4x6 at patch 16 = 64x96).
    torch.testing.assert_close(teacher(x, (4, 6)), ref(normalise(x), 4, 6), **TOL)
    # 64 = 4 * 16 but 96 = 3 * 32: no single integer factor, so bilinear with antialiasing.
    target = F.interpolate(normalise(x), size=(16, 32), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(teacher(x, (1, 2)), ref(target, 1, 2), **TOL)


def test_teacher_is_frozen_and_float32_under_autocast(hf):
    _, _, _, teacher = hf
    x = images().requires_grad_(True)
    ref = teacher(x.detach(), (2, 3))
    teacher.train()
    assert not any(m.training for m in teacher.modules())
    assert all(not p.requires_grad for p in teacher.parameters()) and any(True for _ in teacher.parameters())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = teacher(x.bfloat16(), (2, 3))
    assert out.dtype == torch.float32 and not out.requires_grad
    # bf16 input holds fewer bits than the reference's, so compare against the same rounded input.
    torch.testing.assert_close(out, teacher(x.detach().bfloat16().float(), (2, 3)), **TOL)
    assert (out - ref).abs().max() < 0.1  # the same features, up to the input's bf16 rounding


def test_known_name_loads_its_cache_folder(hf, monkeypatch, tmp_path):
    model, prefix, folder, _ = hf
    monkeypatch.setenv("RTDETR_CACHE", str(tmp_path))
    model.save_pretrained(tmp_path / "teachers" / "dinov2-small")
    teacher = load_teacher("dinov2_vits14")
    assert "dinov2_vits14" in teacher.name and str(tmp_path) in teacher.name
    x = images()
    ref = token_map(model(pixel_values=F.avg_pool2d(normalise(x), 2)).last_hidden_state, prefix, 2, 3)
    torch.testing.assert_close(teacher(x, (2, 3)), ref, **TOL)


# -- timm

def test_timm_teacher_loads_a_local_file_without_downloading(tmp_path, monkeypatch):
    import timm
    import timm.models._builder as builder

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")
    for fn in ("download_cached_file", "load_state_dict_from_hf", "load_state_dict_from_url"):
        monkeypatch.setattr(builder, fn, no_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, dynamic_img_size=True).eval()
    file = tmp_path / "vit_tiny.pth"
    torch.save(model.state_dict(), file)  # with its 1000-class head: timm's filter drops it
    teacher = load_teacher(f"timm:vit_tiny_patch16_224:{file}")
    x = images()
    # This timm config's weights (augreg) are normalised with mean = std = 0.5, which the teacher reads from it.
    pooled = F.avg_pool2d(normalise(x, ((0.5,) * 3, (0.5,) * 3)), 2)
    with torch.no_grad():
        ref = token_map(model.forward_features(pooled), 1, 2, 3)
    assert teacher.dim == 192
    torch.testing.assert_close(teacher(x, (2, 3)), ref, **TOL)


# -- TorchScript

class Tokens(nn.Module):
    """A patch-8 ViT stem: CLS + row-major patch tokens [B, 1 + N, 8]."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 8, 8)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.num_prefix_tokens = 1
        self.patch_size = 8

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(x.shape[0], -1, -1), t], 1)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_tokens_and_maps(tmp_path):
    torch.manual_seed(0)
    stem = Tokens().eval()
    torch.jit.script(stem).save(tmp_path / "tokens.pt")
    teacher = load_teacher(tmp_path / "tokens.pt")
    x = images()  # grid (2, 3) at patch 8 wants 16x24: factor 4
    with torch.no_grad():
        ref = stem.embed(F.avg_pool2d(normalise(x), 4))  # the conv map is what the tokens must lay out to
    assert teacher.dim == 8
    torch.testing.assert_close(teacher(x, (2, 3)), ref, **TOL)

    conv = nn.Conv2d(3, 5, 16, 16).eval()  # returns a map; no attributes: patch 16, no prefix
    torch.jit.script(conv).save(tmp_path / "map.pt")
    teacher = load_teacher(tmp_path / "map.pt")
    with torch.no_grad():
        ref = conv(F.avg_pool2d(normalise(x), 2))
    assert teacher.dim == 5
    torch.testing.assert_close(teacher(x, (2, 3)), ref, **TOL)

    fixed = nn.AdaptiveAvgPool2d((4, 4))  # a 4x4 map whatever the grid: bilinearly resized to the grid
    torch.jit.script(fixed).save(tmp_path / "fixed.pt")
    teacher = load_teacher(tmp_path / "fixed.pt", device="cpu")
    ref = F.interpolate(fixed(F.avg_pool2d(normalise(x), 2)), size=(2, 3), mode="bilinear", align_corners=False)
    torch.testing.assert_close(teacher(x, (2, 3)), ref, **TOL)


# -- our detectors

@pytest.fixture(scope="module")
def demo():
    torch.manual_seed(0)
    return zoo.create_model("demo").eval()


def aifi_output(net, x):
    """F5 captured by a hook on the last AIFI encoder during a plain forward."""
    seen = []
    handle = net.encoder.encoder[-1].register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        net(x)
    handle.remove()
    b, (h, w) = x.shape[0], (x.shape[-2] // 32, x.shape[-1] // 32)
    return seen[0].reshape(b, h, w, -1).permute(0, 3, 1, 2)  # tokens [B, h*w, C] -> [B, C, h, w]


def test_detector_checkpoint_teacher_is_its_aifi_output(demo, tmp_path):
    save_checkpoint(demo, tmp_path / "demo.pt", class_names=["a", "b", "c"])
    teacher = load_teacher(tmp_path / "demo.pt")
    x = images(64, 96)
    assert teacher.dim == 128
    torch.testing.assert_close(teacher(x, (2, 3)), aifi_output(demo, x), **TOL)


def test_detector_module_teacher_leaves_the_module_alone(demo):
    demo.train()
    teacher = load_teacher(demo)
    assert demo.training and all(p.requires_grad for p in demo.backbone.res_layers.parameters())
    demo.eval()
    x = images(64, 96)
    torch.testing.assert_close(teacher(x, (2, 3)), aifi_output(demo, x), **TOL)


def test_zoo_name_needs_its_cached_release_file(demo, monkeypatch, tmp_path):
    monkeypatch.setenv("RTDETR_CACHE", str(tmp_path))
    with pytest.raises(TeacherError) as e:
        load_teacher("rtdetrv2_r18vd")
    text = one_line(e)
    assert str(tmp_path / "rtdetrv2_r18vd_120e_coco_rerun_48.1.pth") in text and zoo.get_entry(
        "rtdetrv2_r18vd").weights.url in text
    # A released model of the demo architecture: its file, once in the cache, is the teacher.
    url = "https://example.invalid/demo_release.pth"
    monkeypatch.setitem(zoo.ZOO, "demo_release", zoo.ZooEntry(replace(zoo.DEMO_MODEL, name="demo_release"),
                                                               zoo.Weights(url, 0.0)))
    with pytest.raises(TeacherError, match="demo_release.pth"):
        load_teacher("demo_release")
    save_checkpoint(demo, tmp_path / "demo_release.pth")
    x = images(64, 96)
    torch.testing.assert_close(load_teacher("demo_release")(x, (2, 3)), aifi_output(demo, x), **TOL)


# -- what cannot be a teacher

def test_missing_known_folder_says_where_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("RTDETR_CACHE", str(tmp_path))
    with pytest.raises(TeacherError) as e:
        load_teacher("dinov3_vitb16")
    text = one_line(e)
    assert str(tmp_path / "teachers" / "dinov3-vitb16-pretrain-lvd1689m") in text
    assert "https://huggingface.co/facebook/dinov3-vitb16-pretrain-lvd1689m" in text
    assert "licence" in text and "--teacher PATH" in text


@pytest.mark.parametrize("spec, says", [
    ("timm:vit_tiny_patch16_224:/no/such/vit.pth", "/no/such/vit.pth: no such file"),
    ("timm:vit_tiny_patch16_224", "timm:<arch>:<weights file>"),
    ("no-such-teacher", "timm:<arch>:<weights file>"),
    ("demo", "no released weights"),
])
def test_bad_specs_fail_in_one_line(spec, says):
    with pytest.raises(TeacherError) as e:
        load_teacher(spec)
    assert says in one_line(e)


def test_bad_files_and_modules_fail_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    for spec, says in ((tmp_path / "empty", "config.json"), (tmp_path / "junk.pt", "junk.pt"),
                       (tmp_path / "other.pt", "other.pt"), (nn.Linear(2, 2), "Linear")):
        with pytest.raises(TeacherError) as e:
            load_teacher(spec)
        assert says in one_line(e)


@pytest.mark.parametrize("package, spec", [("transformers", "hf"), ("timm", "timm")])
def test_missing_package_says_how_to_install_it(package, spec, monkeypatch, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "vit.pth").write_bytes(b"")
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if it were not installed
    with pytest.raises(ImportError) as e:
        load_teacher(tmp_path if spec == "hf" else f"timm:vit_tiny_patch16_224:{tmp_path / 'vit.pth'}")
    assert f"pip install {package}" in one_line(e) and "rtdetr[distill]" in str(e.value)
