"""The deterministic weight recipe and input image behind the official reference fixtures.

See `tests/fixtures/README.md`. Weights are derived from the *official* key names, so a
model that maps the official checkpoint layout correctly reproduces the fixture outputs.
"""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import torch

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL = FIXTURES / "official"
OFFICIAL_V4 = FIXTURES / "official_v4"  # D-FINE, DEIM, RT-DETRv4
RECIPE_LEAVES = ("weight", "bias", "running_mean", "running_var", "in_proj_weight", "in_proj_bias")


def recipe_tensor(key: str, shape: list[int]) -> torch.Tensor:
    """The value the recipe gives the official state-dict entry `key` of `shape`."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    u = torch.rand(shape, generator=g, dtype=torch.float64)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "running_var":
        t = 0.5 + u
    elif leaf in ("running_mean", "bias", "in_proj_bias"):
        t = (u - 0.5) * 0.2
    elif len(shape) == 1:
        t = 0.8 + 0.4 * u
    else:
        fan_in = math.prod(shape[1:])
        t = (u - 0.5) * 2 * math.sqrt(3 / fan_in)
    return t.float()


def fixture_dir(name: str) -> Path:
    """The folder holding fixture `name` (RT-DETR's, else the D-FINE family's)."""
    return OFFICIAL if (OFFICIAL / f"{name}.json").is_file() else OFFICIAL_V4


def load_reference(name: str) -> dict:
    """The fixture's json (config, input, stats, state_dict_manifest)."""
    return json.loads((fixture_dir(name) / f"{name}.json").read_text())


def load_outputs(name: str) -> dict:
    """The fixture's official outputs (pred_logits, pred_boxes, labels, boxes, scores)."""
    return torch.load(fixture_dir(name) / f"{name}.outputs.pt")


def recipe_state_dict(manifest: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """An official-layout state dict holding only the entries the recipe defines."""
    return {
        key: recipe_tensor(key, shape)
        for key, shape in manifest.items()
        if key.rsplit(".", 1)[-1] in RECIPE_LEAVES
    }


def recipe_image(seed: int, h: int, w: int) -> torch.Tensor:
    """[1, 3, h, w] RGB in [0, 1], quantised to 1/255 like a decoded 8-bit image."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((1, 3, h, w), generator=g, dtype=torch.float64)
    return (x * 255).floor().div(255).float()
