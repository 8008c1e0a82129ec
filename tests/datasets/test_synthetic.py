import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmpretrain.datasets import CustomDataset
from localvision.datasets.synthetic import SHAPE_CLASSES, make_shapes_classification, render_shape_image

REPO = Path(__file__).resolve().parents[2]
SMALL = dict(num_classes=4, train_per_class=3, val_per_class=2, image_size=16)


def _files(root: Path):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob('*.png'))}


def test_layout_counts_and_meta(tmp_path):
    root = make_shapes_classification(tmp_path / 'set', seed=0, **SMALL)
    classes = sorted(SHAPE_CLASSES[:4])
    for split, n in (('train', 3), ('val', 2)):
        assert sorted(p.name for p in (root / split).iterdir()) == classes
        assert all(len(list((root / split / c).glob('*.png'))) == n for c in classes)
    meta = json.loads((root / 'meta.json').read_text())
    assert meta['params']['seed'] == 0 and meta['classes'] == classes and 'version' in meta
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no temp folder left
    ds = CustomDataset(data_root=str(root), data_prefix='val')  # mmpretrain reads the ImageFolder layout
    assert len(ds) == 8 and list(ds.metainfo['classes']) == classes
    assert [ds.get_data_info(i)['gt_label'] for i in range(0, 8, 2)] == [0, 1, 2, 3]


def test_same_seed_byte_identical_different_seed_differs(tmp_path):
    a = _files(make_shapes_classification(tmp_path / 'a', seed=3, **SMALL))
    b = _files(make_shapes_classification(tmp_path / 'b', seed=3, **SMALL))
    c = _files(make_shapes_classification(tmp_path / 'c', seed=4, **SMALL))
    assert a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


def test_idempotent_and_regenerates_on_new_params(tmp_path):
    root = make_shapes_classification(tmp_path / 'set', **SMALL)
    marker = root / 'train' / 'marker.txt'
    marker.write_text('kept while params are unchanged')
    make_shapes_classification(tmp_path / 'set', **SMALL)
    assert marker.exists()
    make_shapes_classification(tmp_path / 'set', **{**SMALL, 'val_per_class': 1})
    assert not marker.exists() and len(list((root / 'val').rglob('*.png'))) == 4


def test_refuses_foreign_folder_and_bad_args(tmp_path):
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'precious.txt').write_text('x')
    with pytest.raises(FileExistsError):
        make_shapes_classification(tmp_path / 'mine', **SMALL)
    with pytest.raises(ValueError):
        make_shapes_classification(tmp_path / 'x', num_classes=len(SHAPE_CLASSES) + 1)


def test_every_class_renders():
    for name in SHAPE_CLASSES:
        img = render_shape_image(name, np.random.default_rng(0), 32)
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and img.std() > 5


def test_cli(tmp_path):
    out = tmp_path / 'cli_set'
    cmd = [sys.executable, str(REPO / 'tools/misc/make_demo_data.py'), 'cls', '--out', str(out), '--size', '16',
           '--train-per-class', '1', '--val-per-class', '1', '--num-classes', '2']
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout and (out / 'meta.json').exists()
    assert len(list(out.rglob('*.png'))) == 4
