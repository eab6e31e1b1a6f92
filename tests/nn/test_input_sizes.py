"""Any input size (multiples of 32, rectangular included): anchors, valid masks and position
embeddings follow the input, checked against values computed by hand from their definitions;
and `fix_size`, which makes them buffers for one size."""
from __future__ import annotations

import copy
import math

import pytest
import torch

import rtdetr
from rtdetr.models.weights import load_weights, normalise_keys
from rtdetr.models.nn.deformable_attention import sample_discrete
from rtdetr.models.nn.position import generate_anchors, sincos_position_embedding
from tests.nn.test_official_parity import match_queries
from tests.recipe import OFFICIAL, load_reference, recipe_image, recipe_state_dict


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_anchors_of_a_rectangular_input_by_hand():
    h_img, w_img = 480, 800
    shapes = [(h_img // s, w_img // s) for s in (8, 16, 32)]  # (60, 100), (30, 50), (15, 25)
    anchors, valid = generate_anchors(shapes)
    assert anchors.shape == (1, 6000 + 1500 + 375, 4)

    # Cell (row 5, col 7) of level 0 and (row 14, col 3) of level 2.
    a = anchors[0, 5 * 100 + 7].tolist()
    assert a == pytest.approx([logit(7.5 / 100), logit(5.5 / 60), logit(0.05), logit(0.05)], abs=1e-5)
    b = anchors[0, 6000 + 1500 + 14 * 25 + 3].tolist()
    assert b[0] == pytest.approx(logit(3.5 / 25), abs=1e-5) and b[2] == pytest.approx(logit(0.2), abs=1e-5)
    assert b[1] == pytest.approx(logit(14.5 / 15), abs=1e-5)
    # Row 0 of level 0: cy = 0.5 / 60 < 0.01, so the cell is invalid and stored as +inf.
    assert anchors[0, 7].tolist() == [math.inf] * 4

    # A cell is valid when its centre lies in (0.01, 0.99) on both axes (sizes always do here).
    expected_valid = sum(
        sum(1 for i in range(h) if 0.01 < (i + 0.5) / h < 0.99) * sum(1 for j in range(w) if 0.01 < (j + 0.5) / w < 0.99)
        for h, w in shapes)
    assert int(valid.sum()) == expected_valid
    assert torch.isinf(anchors[~valid.expand_as(anchors)]).all()


def test_position_embedding_of_a_rectangular_map_by_hand():
    h, w, dim = 15, 25, 256
    pe = sincos_position_embedding(w, h, dim)
    assert pe.shape == (1, h * w, dim)
    quarter = dim // 4
    for token in (0, 7, 14, 15, 200, h * w - 1):
        # The grid runs w-major: token t carries grid position (t // h, t % h).
        gw, gh = token // h, token % h
        omega = [1 / 10000 ** (k / quarter) for k in range(quarter)]
        expected = ([math.sin(gw * o) for o in omega] + [math.cos(gw * o) for o in omega]
                    + [math.sin(gh * o) for o in omega] + [math.cos(gh * o) for o in omega])
        assert pe[0, token].tolist() == pytest.approx(expected, abs=1e-5)



def test_consistent_position_embedding_by_hand():
    """The "consistent" layout: token (row r, column c) carries a = r, b = c on any map; on a square
    map it is the official embedding exactly, on a rectangular one it is not."""
    h, w, dim = 6, 10, 16
    pe = sincos_position_embedding(w, h, dim, layout="consistent")
    quarter = dim // 4
    omega = [1 / 10000 ** (k / quarter) for k in range(quarter)]
    for r, c in ((0, 0), (2, 3), (5, 9), (1, 8)):
        expected = ([math.sin(r * o) for o in omega] + [math.cos(r * o) for o in omega]
                    + [math.sin(c * o) for o in omega] + [math.cos(c * o) for o in omega])
        assert pe[0, r * w + c].tolist() == pytest.approx(expected, abs=1e-5)
    assert torch.equal(sincos_position_embedding(8, 8, dim), sincos_position_embedding(8, 8, dim, layout="consistent"))
    assert not torch.equal(sincos_position_embedding(w, h, dim), pe)
    with pytest.raises(ValueError, match="layout"):
        sincos_position_embedding(w, h, dim, layout="transposed")

def test_discrete_sampling_clamps_each_axis_to_its_own_size():
    value = torch.arange(4 * 16, dtype=torch.float32).reshape(1, 1, 4, 16)  # cell (y, x) holds 16y + x
    loc = torch.tensor([[[[0.9, 0.1], [0.99, 0.99], [-0.5, 2.0], [0.5, 0.5]]]])  # (x, y) normalised
    out = sample_discrete(value, loc)[0, 0, 0].tolist()
    # x: int(0.9*16+.5)=14, y: int(0.1*4+.5)=0 -> 14; (15, 3) -> 63 with x clamped to 15, not 3;
    # out of range low/high -> (0, 3) -> 48; centre -> (8, 2) -> 40.
    assert out == [14.0, 63.0, 48.0, 40.0]


@pytest.fixture(scope="module")
def r18():
    ref = load_reference("rtdetrv2_r18vd")
    model = rtdetr.create_model("rtdetrv2_r18vd").eval()
    load_weights(model, normalise_keys(recipe_state_dict(ref["state_dict_manifest"])), "recipe", "rtdetrv2_r18vd")
    return model


@pytest.mark.parametrize("hw", [(480, 800), (800, 480), (320, 320), (256, 608)])
def test_any_multiple_of_32_runs(r18, hw):
    x = torch.rand(1, 3, *hw)
    with torch.no_grad():
        out = r18(x)
    assert out["pred_logits"].shape == (1, 300, 80) and out["pred_boxes"].shape == (1, 300, 4)
    assert torch.isfinite(out["pred_logits"]).all() and ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()


def test_size_cache_does_not_leak_between_sizes(r18):
    """After other sizes have run, 640x640 still gives the official outputs exactly as before."""
    x = recipe_image(0, 640, 640)
    with torch.no_grad():
        r18(torch.rand(1, 3, 480, 800))
        r18(torch.rand(2, 3, 800, 480))
        out = r18(x)
    expected = torch.load(OFFICIAL / "rtdetrv2_r18vd.outputs.pt")
    assert torch.allclose(out["pred_boxes"], expected["pred_boxes"], atol=1e-4)
    assert torch.allclose(out["pred_logits"], expected["pred_logits"], atol=1e-4)


def test_batch_equals_single_images(r18):
    """An image's outputs do not depend on its batch: within 1e-4 as a set of queries (measured
    3.6e-6 at most over 40 seeds). Compared by index they can differ a lot: the batched GEMMs
    round differently in the last bit, which swaps near-tied queries in the top-k (seen on 3 of
    40 random inputs, up to 0.39 on one logit)."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 320, 480)
    with torch.no_grad():
        both = r18(x)
        one = r18(x[1:])
    row = lambda out, i: torch.cat([out["pred_logits"][i], out["pred_boxes"][i]], 1)  # noqa: E731
    assert match_queries(row(both, 1), row(one, 0)) < 1e-4


def test_sizes_that_are_not_multiples_of_32_are_refused(r18):
    with pytest.raises(ValueError, match="multiples of 32"):
        r18(torch.rand(1, 3, 500, 640))


def test_fix_size_makes_buffers_for_one_size(r18):
    """`fix_size(hw)`: the same outputs as the per-size caches (bit for bit: the same functions
    compute the same values), a state dict with the same keys, other sizes refused in one line;
    `fix_size(None)` takes any size again."""
    model = copy.deepcopy(r18)
    keys = set(model.state_dict())
    assert model.fix_size((640, 640)) is model
    assert set(model.state_dict()) == keys  # non-persistent buffers
    assert model.decoder.anchors.shape == (1, 80 * 80 + 40 * 40 + 20 * 20, 4)
    assert model.decoder.valid_mask.dtype == torch.float32
    assert model.encoder.encoder[0].pos_embed.shape == (1, 20 * 20, 256)
    x = recipe_image(0, 640, 640)
    with torch.no_grad():
        fixed, cached = model(x), r18(x)
    assert all(torch.equal(fixed[k], cached[k]) for k in ("pred_logits", "pred_boxes"))

    with pytest.raises(ValueError, match=r"fixed to 640x640 inputs by fix_size, got a 10x10 map at stride 32; "
                                         r".*imgsz=\(H, W\)") as e:
        model(torch.rand(1, 3, 320, 320))
    assert "\n" not in str(e.value)
    with torch.no_grad():
        feats = r18.encoder(r18.backbone(torch.rand(1, 3, 320, 320)))
    with pytest.raises(ValueError, match=r"fixed to 640x640 inputs by fix_size, got feature maps \[\(40, 40\)"):
        model.decoder(feats)

    model.fix_size(None)
    assert model.decoder.anchors is None and model.encoder.encoder[0].pos_embed is None
    with torch.no_grad():
        assert model(torch.rand(1, 3, 320, 320))["pred_boxes"].shape == (1, 300, 4)
    with pytest.raises(ValueError, match="input too small"):
        model.fix_size((64, 64))
