"""Shared fixtures: tiny generated data sets and tiny models (CPU, seconds)."""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope='session')
def tiny_cls_root(tmp_path_factory):
    """A 4-class shapes set, 16 train / 8 val images per class, 32x32 (ImageFolder layout)."""
    from localvision.datasets.synthetic import make_shapes_classification
    root = tmp_path_factory.mktemp('shapes_cls')
    return str(make_shapes_classification(root / 'set', num_classes=4, train_per_class=16, val_per_class=8,
                                          image_size=32, seed=0))


@pytest.fixture(autouse=True)
def _restore_default_scope():
    """A test that calls ``init_default_scope('mmseg')`` must not change the scope of later tests."""
    from mmengine.registry import DefaultScope
    before = list(DefaultScope._instance_dict)
    yield
    for name in list(DefaultScope._instance_dict):
        if name not in before:
            del DefaultScope._instance_dict[name]


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason='needs a CUDA device')
    for item in items:
        if 'gpu' in item.keywords:
            item.add_marker(skip_gpu)
