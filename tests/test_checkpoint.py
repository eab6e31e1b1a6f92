"""Checkpoint loading: official layouts, own checkpoints, named downloads, errors, the CLI.

Weights come from the fixture recipe (`tests/recipe.py`) keyed by the official names, so
an official-layout file can be built without the real release files. Every network access
goes to a local HTTP server on 127.0.0.1.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import pickle
import re
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

import rtdetr
from rtdetr import CheckpointError
from rtdetr.core import hub
from rtdetr.models import zoo
from rtdetr.cli.app import main
from tests.recipe import load_reference, recipe_image, recipe_state_dict

ARCH = "rtdetrv2_r18vd"
X = recipe_image(0, 128, 160)  # small input: keeps every forward pass fast
BIG = 1 << 20


# ---------------------------------------------------------------- helpers


def manifest(name: str) -> dict[str, list[int]]:
    return load_reference(name)["state_dict_manifest"]


@functools.lru_cache(maxsize=None)
def _recipe(name: str) -> dict[str, torch.Tensor]:
    return recipe_state_dict(manifest(name))


def recipe(name: str) -> dict[str, torch.Tensor]:
    """A fresh (shallow) copy of the recipe state dict of `name`, official key names."""
    return dict(_recipe(name))


def official_full(name: str) -> dict[str, torch.Tensor]:
    """Everything an official `state_dict()` holds: the recipe weights plus the entries the
    model computes itself, the latter filled with garbage the loader must ignore."""
    sd = recipe(name)
    for key, shape in manifest(name).items():
        if key in sd:
            continue
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(12345)
        elif key == "decoder.valid_mask":
            sd[key] = torch.zeros(shape, dtype=torch.bool)  # "nothing valid": would wreck outputs if used
        elif key == "decoder.anchors":
            sd[key] = torch.zeros(shape)
        elif key.endswith("cross_attn.num_points_scale"):
            sd[key] = torch.zeros(shape)
        else:
            raise AssertionError(f"manifest entry not covered by the recipe: {key}")
    return sd


V1_TO_OURS = [  # written out here, independently of rtdetr.models.weights
    (r"^encoder\.input_proj\.(\d+)\.0\.", r"encoder.input_proj.\1.conv."),
    (r"^encoder\.input_proj\.(\d+)\.1\.", r"encoder.input_proj.\1.norm."),
    (r"^decoder\.enc_output\.0\.", "decoder.enc_output.proj."),
    (r"^decoder\.enc_output\.1\.", "decoder.enc_output.norm."),
]


def direct_model(name: str, official_sd: dict[str, torch.Tensor]) -> rtdetr.RTDETR:
    """`official_sd` loaded straight into a fresh model with `load_state_dict` (the reference)."""
    sd = {}
    for key, value in official_sd.items():
        for pattern, repl in V1_TO_OURS:
            key = re.sub(pattern, repl, key)
        sd[key] = value
    net = rtdetr.create_model(name).eval()
    missing, unexpected = net.load_state_dict(sd, strict=False)
    assert unexpected == []
    assert all(k.endswith("num_batches_tracked") for k in missing), missing
    return net


def forward(net: torch.nn.Module, **kwargs) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return net(X, **kwargs)


def assert_same_outputs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() == {"pred_logits", "pred_boxes"}
    for k in a:
        assert torch.equal(a[k], b[k]), k


def error_message(excinfo, path, *parts: str) -> str:
    """The CheckpointError's message, checked to be one line naming `path` and each of `parts`."""
    assert isinstance(excinfo.value, CheckpointError)
    msg = str(excinfo.value)
    assert "\n" not in msg and "\r" not in msg, msg
    assert str(path) in msg, msg
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


def solver_extras() -> dict:
    """The non-weight entries of an official training checkpoint (solver state)."""
    p = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.AdamW([p], lr=1e-4)
    p.grad = torch.ones(4)
    opt.step()
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[1000], gamma=0.1)
    sched_state = sched.state_dict()
    assert isinstance(sched_state["milestones"], collections.Counter)
    return {
        "date": "2024-07-24T10:31:05.123456",
        "last_epoch": 119,
        "optimizer": opt.state_dict(),
        "lr_scheduler": sched_state,
        "lr_warmup_scheduler": {"last_step": 2000, "warmup_duration": 2000},
    }


@pytest.fixture(scope="module", autouse=True)
def _light():
    """One intra-op thread: on a small shared machine, spinning OpenMP threads that lose their
    core to other processes slow a forward pass by 30x. Recipes are freed at the end."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    _recipe.cache_clear()


@pytest.fixture
def save(tmp_path):
    """save(obj, name) -> path: torch.save into tmp_path. Large files are removed afterwards."""
    def _save(obj, name: str = "ckpt.pth", **kwargs) -> Path:
        path = tmp_path / name
        torch.save(obj, path, **kwargs)
        return path

    yield _save
    for p in tmp_path.rglob("*"):
        if p.is_file() and p.stat().st_size > BIG:
            p.unlink()


@pytest.fixture(scope="module")
def v2_reference() -> dict[str, torch.Tensor]:
    """Outputs of rtdetrv2_r18vd with the recipe weights loaded directly."""
    return forward(direct_model(ARCH, recipe(ARCH)))


@pytest.fixture(scope="module")
def official_file(tmp_path_factory):
    """An official release-style file (`{'ema': {'module': sd}}`) of rtdetrv2_r18vd, named as published."""
    folder = tmp_path_factory.mktemp("release")
    path = folder / zoo.get_entry(ARCH).weights.filename
    torch.save({"ema": {"module": official_full(ARCH), "updates": 87000, "warmups": 2000}}, path)
    yield path
    path.unlink()


# ---------------------------------------------------------------- 1. official layouts


LAYOUTS = {
    "ema": lambda sd: {"ema": {"module": sd, "updates": 87000, "warmups": 2000}},
    "model+solver": lambda sd: {"model": sd, **solver_extras()},
    "bare": lambda sd: sd,
    "ddp": lambda sd: {f"module.{k}": v for k, v in sd.items()},
    "ddp-in-ema": lambda sd: {"ema": {"module": {f"module.{k}": v for k, v in sd.items()}}},
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_official_v2_layouts_match_direct_load(layout, save, v2_reference):
    path = save(LAYOUTS[layout](official_full(ARCH)))
    net = rtdetr.load_model(ARCH, weights=path)
    assert not net.training
    assert net.num_classes == 80 and net.class_names is None
    assert_same_outputs(forward(net), v2_reference)


def test_solver_state_with_counter_loads_under_weights_only(save):
    # The Counter inside the MultiStepLR state is the one non-tensor global in official solver files.
    path = save({"model": official_full(ARCH), **solver_extras()})
    ckpt = rtdetr.models.weights.read_checkpoint(path)
    assert isinstance(ckpt["lr_scheduler"]["milestones"], collections.Counter)
    assert ckpt["last_epoch"] == 119


def test_deployed_fused_convs_are_ignored(save, v2_reference):
    # A deployed official model also holds the fused RepVGG conv of each bottleneck.
    sd = official_full(ARCH)
    for block in ("fpn_blocks.0", "pan_blocks.1"):
        for i in range(3):
            sd[f"encoder.{block}.bottlenecks.{i}.conv.weight"] = torch.full((128, 128, 3, 3), 9.0)
            sd[f"encoder.{block}.bottlenecks.{i}.conv.bias"] = torch.full((128,), 9.0)
    net = rtdetr.load_model(ARCH, weights=save({"ema": {"module": sd}}))
    assert_same_outputs(forward(net), v2_reference)


@pytest.mark.parametrize("layout", ["ema", "bare"])
def test_official_v1_names_match_direct_load(layout, save):
    name = "rtdetr_r18vd"
    sd = official_full(name)
    assert "encoder.input_proj.0.0.weight" in sd and "decoder.enc_output.0.weight" in sd  # v1 names
    path = save(LAYOUTS[layout](sd))
    net = rtdetr.load_model(name, weights=path)
    assert_same_outputs(forward(net), forward(direct_model(name, recipe(name))))


# ---------------------------------------------------------------- 2. EMA first


def test_ema_weights_preferred_over_model(save, v2_reference):
    ema = official_full(ARCH)
    other = {k: (v * 0.5 if v.is_floating_point() else v) for k, v in ema.items()}
    path = save({"model": other, "ema": {"module": ema, "updates": 10}, **solver_extras()})
    net = rtdetr.load_model(ARCH, weights=path)
    key = "decoder.enc_score_head.weight"
    assert torch.equal(net.state_dict()[key], ema[key])
    assert not torch.equal(net.state_dict()[key], other[key])
    assert_same_outputs(forward(net), v2_reference)


# ---------------------------------------------------------------- 3. mismatches


def test_missing_key(save):
    sd = official_full(ARCH)
    del sd["decoder.dec_bbox_head.2.layers.2.bias"]
    path = save(sd)
    with pytest.raises(CheckpointError) as e:
        rtdetr.load_model(ARCH, weights=path)
    msg = error_message(e, path, f"architecture {ARCH}", "1 missing keys: decoder.dec_bbox_head.2.layers.2.bias")
    assert "unexpected" not in msg and "shape" not in msg


def test_many_missing_keys_list_the_first_three(save):
    sd = {k: v for k, v in official_full(ARCH).items() if not k.startswith("decoder.dec_score_head.")}
    path = save(sd)
    with pytest.raises(CheckpointError) as e:
        rtdetr.load_model(ARCH, weights=path)
    error_message(e, path, f"architecture {ARCH}", "6 missing keys: decoder.dec_score_head.0.weight, "
                  "decoder.dec_score_head.0.bias, decoder.dec_score_head.1.weight (+3 more)")


def test_missing_num_batches_tracked_is_fine(save, v2_reference):
    sd = {k: v for k, v in official_full(ARCH).items() if not k.endswith("num_batches_tracked")}
    assert_same_outputs(forward(rtdetr.load_model(ARCH, weights=save(sd))), v2_reference)


def test_unexpected_key(save):
    sd = official_full(ARCH)
    sd["decoder.extra_head.weight"] = torch.zeros(3, 3)
    path = save({"ema": {"module": sd}})
    with pytest.raises(CheckpointError) as e:
        rtdetr.load_model(ARCH, weights=path)
    msg = error_message(e, path, f"architecture {ARCH}", "1 unexpected keys: decoder.extra_head.weight")
    assert "missing" not in msg


def test_wrong_shape(save):
    sd = official_full(ARCH)
    sd["encoder.input_proj.0.conv.weight"] = torch.zeros(256, 64, 1, 1)
    path = save(sd)
    with pytest.raises(CheckpointError) as e:
        rtdetr.load_model(ARCH, weights=path)
    msg = error_message(e, path, f"architecture {ARCH}", "shape mismatch",
                        "encoder.input_proj.0.conv.weight [256, 64, 1, 1] vs [256, 128, 1, 1]")
    assert "missing" not in msg and "unexpected" not in msg


def test_r34_file_as_r18(save):
    path = save({"ema": {"module": official_full("rtdetrv2_r34vd")}}, "rtdetrv2_r34vd.pth")
    with pytest.raises(CheckpointError) as e:
        rtdetr.load_model(ARCH, weights=path)
    msg = error_message(e, path, f"architecture {ARCH}", "unexpected keys: backbone.res_layers.0.blocks.2.")
    assert "missing" not in msg


def test_r18_file_as_r34(save):
    path = save({"ema": {"module": official_full(ARCH)}})
    with pytest.raises(CheckpointError) as e:
        rtdetr.load_model("rtdetrv2_r34vd", weights=path)
    msg = error_message(e, path, "architecture rtdetrv2_r34vd", "missing keys: backbone.res_layers.0.blocks.2.")
    assert "unexpected" not in msg


def test_sp1_file_as_r18(save):
    # Same keys, same class count: only the sampling-point layers differ (1 point per level, not 4).
    path = save({"ema": {"module": official_full("rtdetrv2_r18vd_sp1")}}, "sp1.pth")
    with pytest.raises(CheckpointError) as e:
        rtdetr.load_model(ARCH, weights=path)
    msg = error_message(e, path, f"architecture {ARCH}", "shape mismatch",
                        "decoder.decoder.layers.0.cross_attn.sampling_offsets.weight [48, 256] vs [192, 256]")
    assert "missing" not in msg and "unexpected" not in msg
    net = rtdetr.load_model("rtdetrv2_r18vd_sp1", weights=path)  # its own architecture takes it
    assert net.cfg.decoder.num_points == (1, 1, 1)


# ---------------------------------------------------------------- 4. unreadable files


def _zip_of_text(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "not a checkpoint")


UNREADABLE = {
    "empty": lambda p: p.write_bytes(b""),
    "text": lambda p: p.write_text("hello world\n"),
    "text-sentence": lambda p: p.write_text("this is not a checkpoint\n"),
    "html-error-page": lambda p: p.write_text("<html><body>404 Not Found</body></html>\n"),
    "git-lfs-pointer": lambda p: p.write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 80000000\n"),
    "zip-of-text": _zip_of_text,
    "raw-pickle-list": lambda p: p.write_bytes(pickle.dumps([1, 2, 3])),
}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", UNREADABLE)
def test_unreadable_file(kind, tmp_path):
    path = tmp_path / f"{kind}.pth"
    UNREADABLE[kind](path)
    with pytest.raises(CheckpointError) as e:
        rtdetr.load_model(ARCH, weights=path)
    error_message(e, path)


def test_nonexistent_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError) as e:
        rtdetr.load_model(ARCH, weights=path)
    error_message(e, path, "no such file")
    with pytest.raises(CheckpointError) as e:  # as an own checkpoint
        rtdetr.load_model(path)
    error_message(e, path, "no such file")


def test_empty_file_says_empty(tmp_path):
    path = tmp_path / "empty.pth"
    path.touch()
    with pytest.raises(CheckpointError) as e:
        rtdetr.load_model(ARCH, weights=path)
    error_message(e, path, "empty")


def test_truncated_checkpoint(official_file, tmp_path):
    data = official_file.read_bytes()
    path = tmp_path / "half.pth"
    path.write_bytes(data[: len(data) // 2])
    try:
        with pytest.raises(CheckpointError) as e:
            rtdetr.load_model(ARCH, weights=path)
        error_message(e, path, "not a readable PyTorch checkpoint")
    finally:
        path.unlink()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_every_truncation_of_a_small_checkpoint(legacy, tmp_path):
    # Each prefix of a real (small) checkpoint, in the zip and in the legacy pickle format.
    src = tmp_path / "small.pt"
    torch.save({"model": {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(2)}, "epoch": 3},
               src, _use_new_zipfile_serialization=not legacy)
    data = src.read_bytes()
    path = tmp_path / "cut.pt"
    escaped = {}
    for n in range(1, len(data)):
        path.write_bytes(data[:n])
        try:
            rtdetr.models.weights.read_checkpoint(path)
        except CheckpointError as e:
            msg = str(e)
            assert "\n" not in msg and str(path) in msg, msg
        except Exception as e:  # noqa: BLE001 - collect what escapes, report it all at once
            escaped.setdefault(f"{type(e).__module__}.{type(e).__qualname__}", n)
        else:
            escaped.setdefault("no error", n)
    assert escaped == {}, f"exception -> first prefix length (of {len(data)} bytes) raising it: {escaped}"


def test_pickle_of_a_list(save):
    path = save([torch.zeros(2), torch.ones(2)], "list.pth")
    with pytest.raises(CheckpointError) as e:
        rtdetr.load_model(ARCH, weights=path)
    error_message(e, path, "list")


def test_dict_without_weights(save):
    path = save({"foo": 1}, "foo.pth")
    with pytest.raises(CheckpointError) as e:
        rtdetr.load_model(ARCH, weights=path)
    error_message(e, path, "no model weights", "foo")


# ---------------------------------------------------------------- 5. num_classes from the file


def test_num_classes_inferred_from_file(save):
    src = rtdetr.create_model(ARCH, num_classes=3).eval()
    path = save(src.state_dict(), "three.pth")
    net = rtdetr.load_model(ARCH, weights=path)
    assert net.num_classes == 3 and net.cfg.num_classes == 3
    out = forward(net)
    assert out["pred_logits"].shape == (1, 300, 3)
    assert_same_outputs(out, forward(src))

    with pytest.raises(CheckpointError) as e:  # asking for another class count is a mismatch
        rtdetr.load_model(ARCH, weights=path, num_classes=80)
    error_message(e, path, f"architecture {ARCH}", "shape mismatch", "[3, 256] vs [80, 256]")


# ---------------------------------------------------------------- 6. own checkpoints


NAMES = ["cat", "dog", "bird"]


@pytest.fixture
def own(tmp_path, save):  # `save` for its cleanup of large files
    net = rtdetr.create_model(ARCH, num_classes=3).eval()
    path = rtdetr.save_checkpoint(net, tmp_path / "sub" / "own.pth", class_names=NAMES, epoch=7)
    assert path == tmp_path / "sub" / "own.pth"
    assert not (tmp_path / "sub" / "own.pth.tmp").exists()
    return net, path


def test_own_checkpoint_round_trip(own):
    net, path = own
    for arg in (path, str(path)):
        loaded = rtdetr.load_model(arg)
        assert not loaded.training
        assert loaded.cfg == net.cfg
        assert loaded.class_names == NAMES
        assert_same_outputs(forward(loaded), forward(net))


def test_own_checkpoint_decoder_layers_override(own):
    net, path = own
    loaded = rtdetr.load_model(path, decoder_layers=1)
    assert loaded.decoder.eval_layers == 1 and loaded.cfg.decoder.eval_layers == 1
    assert loaded.decoder.num_layers == 3
    assert_same_outputs(forward(loaded), forward(net, num_decoder_layers=1))
    assert not torch.equal(forward(loaded)["pred_logits"], forward(net)["pred_logits"])


def test_own_checkpoint_as_weights_of_a_name(own):
    net, path = own
    loaded = rtdetr.load_model(ARCH, weights=path)
    assert loaded.num_classes == 3 and loaded.class_names == NAMES
    assert_same_outputs(forward(loaded), forward(net))


def test_own_checkpoint_with_wrong_number_of_names_warns(tmp_path, save):
    net = rtdetr.create_model(ARCH, num_classes=3)
    path = rtdetr.save_checkpoint(net, tmp_path / "own.pth", class_names=["a", "b"])
    with pytest.warns(UserWarning, match="2 class names for 3 classes"):
        loaded = rtdetr.load_model(path)
    assert loaded.class_names is None


def test_official_file_alone_is_recognised_by_its_published_name(official_file, tmp_path):
    det = rtdetr.load_model(official_file)
    assert det.cfg.name == ARCH and det.class_names is None
    renamed = tmp_path / "mine.pth"
    renamed.write_bytes(official_file.read_bytes())
    with pytest.raises(CheckpointError) as e:
        rtdetr.load_model(renamed)
    error_message(e, renamed, "load_model(NAME, weights=")


# ---------------------------------------------------------------- 7. named weights download


class FileServer:
    """Serves the files of `folder` on 127.0.0.1; records every requested path."""

    def __init__(self, folder: Path):
        self.requests: list[str] = []
        srv = self

        class Handler(SimpleHTTPRequestHandler):
            timeout = 5

            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def log_message(self, *args):
                pass

            def do_GET(self):
                srv.requests.append(self.path)
                super().do_GET()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)


@pytest.fixture
def release_server(official_file, monkeypatch):
    """Serves `official_file`; the zoo entry of ARCH points at it; nothing else is reachable."""
    monkeypatch.setattr(hub, "TIMEOUT", 5.0)
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    s = FileServer(official_file.parent)
    entry = zoo.get_entry(ARCH)
    url = f"{s.base}/{official_file.name}"
    monkeypatch.setitem(zoo.ZOO, ARCH, dataclasses.replace(entry, weights=dataclasses.replace(entry.weights, url=url)))
    s.thread.start()
    try:
        yield s
    finally:
        s.httpd.shutdown()
        s.httpd.server_close()
        s.thread.join(timeout=5)


def test_named_weights_download_once(release_server, official_file, tmp_path, monkeypatch, save, v2_reference,
                                     capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("RTDETR_CACHE", str(cache))
    net = rtdetr.load_model(ARCH)  # weights="official"
    cached = cache / official_file.name
    assert cached.is_file() and cached.stat().st_size == official_file.stat().st_size
    assert release_server.requests == [f"/{official_file.name}"]
    assert_same_outputs(forward(net), v2_reference)

    again = rtdetr.load_model(ARCH, weights=ARCH)  # by name: same file, from the cache
    assert len(release_server.requests) == 1
    assert_same_outputs(forward(again), v2_reference)

    capsys.readouterr()
    assert main(["download", ARCH]) == 0
    assert capsys.readouterr().out.strip() == f"{ARCH}: {cached}"
    assert len(release_server.requests) == 1


def test_named_weights_download_failure_in_cli(release_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RTDETR_CACHE", str(tmp_path / "cache"))
    entry = zoo.get_entry(ARCH)
    url = f"{release_server.base}/missing.pth"
    monkeypatch.setitem(zoo.ZOO, ARCH, dataclasses.replace(entry, weights=dataclasses.replace(entry.weights, url=url)))
    assert main(["check", ARCH, "--imgsz", "128", "128"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith("rtdetr: error: could not download missing.pth") and "HTTP 404" in err


# ---------------------------------------------------------------- 8. the CLI


@pytest.mark.parametrize("content", [b"garbage bytes, not a checkpoint", b""], ids=["garbage", "empty"])
def test_cli_check_bad_file(content, tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(content)
    assert main(["check", ARCH, "--weights", str(bad), "--imgsz", "64", "64"]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("rtdetr: error: ") and str(bad) in err
    assert captured.out == ""


def test_cli_check_missing_file(tmp_path, capsys):
    missing = tmp_path / "missing.pth"
    assert main(["check", ARCH, "--weights", str(missing), "--imgsz", "64", "64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rtdetr: error: ") and str(missing) in err


def test_cli_check_good_file(official_file, capsys):
    assert main(["check", ARCH, "--weights", str(official_file), "--imgsz", "128", "160"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    out = captured.out.strip()
    assert out.startswith(f"{ARCH}: ") and "80 classes" in out and "3/3 decoder layers" in out
    assert out.endswith("pred_logits [1, 300, 80], pred_boxes [1, 300, 4] at 128x160")


def test_cli_check_own_checkpoint(own, capsys):
    _, path = own
    assert main(["check", str(path), "--decoder-layers", "2", "--imgsz", "128", "128"]) == 0
    out = capsys.readouterr().out
    assert "3 classes" in out and "2/3 decoder layers" in out and "pred_logits [1, 300, 3]" in out
