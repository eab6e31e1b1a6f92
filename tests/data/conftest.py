"""Shared synthetic data sets (written once per test session, small so the folder stays fast)."""
from __future__ import annotations

import pytest

from rtdetr.data import make_synthetic_dataset

SMALL = dict(num_train=6, num_val=4, image_size=(96, 128), objects_per_image=(1, 4), empty_fraction=0.25)
OTHER = dict(seed=7, num_train=5, num_val=3, image_size=((80, 120), (100, 140)), num_classes=3,
             shapes=("cross", "diamond", "ellipse"), colours=("orange", "cyan", "magenta"),
             category_ids=[42, 3, 17], object_size=(0.15, 0.5))


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """The default demo set's classes and look, small: 6 train, 4 val images of 96x128."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("demo"), **SMALL)


@pytest.fixture(scope="session")
def other_root(tmp_path_factory):
    """A different set: other shapes and colours, varied image sizes, category ids 42, 3, 17."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("other"), **OTHER)
