import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from localvision.utils.probes import linear_probe_top1
from localvision.datasets.relational import (FACTORS, OBJECT_SHAPES, RELATIONAL_CLASSES, class_factors, image_rng,
                                             list_images, make_relational_classification, render_relational_image)

REPO = Path(__file__).resolve().parents[2]
SMALL = dict(train_per_class=2, val_per_class=1, image_size=32)


def _files(root: Path):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob('*.png'))}


def _render(split: str, per_class: int, seed: int = 0):
    """``(images, labels, infos)`` of ``per_class`` images of every class, as the set writes them."""
    images, labels, infos = [], [], []
    for c, name in enumerate(RELATIONAL_CLASSES):
        for i in range(per_class):
            img, info = render_relational_image(name, image_rng(seed, split, c, i), 32, return_info=True)
            images.append(img)
            labels.append(c)
            infos.append(info)
    return np.stack(images), np.asarray(labels), infos


def test_classes_are_the_factor_product():
    assert len(RELATIONAL_CLASSES) == 8 and list(RELATIONAL_CLASSES) == sorted(RELATIONAL_CLASSES)
    for name in RELATIONAL_CLASSES:
        f = class_factors(name)
        assert list(f) == list(FACTORS) and all(f[k] in FACTORS[k] for k in FACTORS)
    with pytest.raises(ValueError):
        class_factors('row_sameshape')


def test_layout_counts_meta_and_annotations(tmp_path):
    root = make_relational_classification(tmp_path / 'set', seed=0, annotations=True, **SMALL)
    for split, n in (('train', 2), ('val', 1)):
        assert sorted(p.name for p in (root / split).iterdir()) == list(RELATIONAL_CLASSES)
        assert all(len(list((root / split / c).glob('*.png'))) == n for c in RELATIONAL_CLASSES)  # balanced
    meta = json.loads((root / 'meta.json').read_text())
    assert meta['classes'] == list(RELATIONAL_CLASSES) and meta['params']['seed'] == 0 and 'version' in meta
    assert meta['factors'] == {k: list(v) for k, v in FACTORS.items()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no temp folder left
    ann = json.loads((root / 'annotations.json').read_text())
    assert len(ann) == 24 and ann['val/row_sameshape_diffcolour/00000.png']['layout'] == 'row'
    # every PNG is what render_relational_image gives for its (seed, split, class, index)
    for path, c in list_images(root, 'val'):
        img, info = render_relational_image(RELATIONAL_CLASSES[c], image_rng(0, 'val', c, int(path.stem)), 32,
                                            return_info=True)
        assert np.array_equal(np.asarray(Image.open(path)), img)
        assert info == ann[str(path.relative_to(root))]

    from mmpretrain.datasets import CustomDataset  # mmpretrain reads the ImageFolder layout
    ds = CustomDataset(data_root=str(root), data_prefix='train')
    assert len(ds) == 16 and list(ds.metainfo['classes']) == list(RELATIONAL_CLASSES)
    assert [ds.get_data_info(i)['gt_label'] for i in range(0, 16, 2)] == list(range(8))


def test_same_seed_byte_identical_different_seed_differs(tmp_path):
    a = _files(make_relational_classification(tmp_path / 'a', seed=3, **SMALL))
    b = _files(make_relational_classification(tmp_path / 'b', seed=3, **SMALL))
    c = _files(make_relational_classification(tmp_path / 'c', seed=4, **SMALL))
    assert a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


def test_idempotent_regenerates_and_refuses_foreign_folder(tmp_path):
    root = make_relational_classification(tmp_path / 'set', **SMALL)
    marker = root / 'train' / 'marker.txt'
    marker.write_text('kept while params are unchanged')
    make_relational_classification(tmp_path / 'set', **SMALL)
    assert marker.exists()
    make_relational_classification(tmp_path / 'set', **{**SMALL, 'val_per_class': 2})
    assert not marker.exists() and len(list((root / 'val').rglob('*.png'))) == 16
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'precious.txt').write_text('x')
    with pytest.raises(FileExistsError):
        make_relational_classification(tmp_path / 'mine', **SMALL)
    with pytest.raises(ValueError):
        make_relational_classification(tmp_path / 'x', image_size=8)


def test_labels_hold_in_the_metadata_and_in_the_pixels():
    """Every image shows exactly two objects whose layout, shapes and colours are the class's,
    read back from the pixels (connected components of the pixels far from the background)."""
    ndimage = pytest.importorskip('scipy.ndimage')  # comes with mmseg / mmdet
    images, labels, infos = _render('train', 8, seed=1)
    for img, label, info in zip(images, labels, infos):
        f = class_factors(RELATIONAL_CLASSES[label])
        assert {k: info[k] for k in FACTORS} == f
        o1, o2 = info['objects']
        assert (o1['shape'] == o2['shape']) == (f['shape'] == 'sameshape')
        assert (o1['colour'] == o2['colour']) == (f['colour'] == 'samecolour')
        assert o1['shape'] in OBJECT_SHAPES and o2['shape'] in OBJECT_SHAPES

        x = img.astype(np.float64)
        dist = np.linalg.norm(x - np.median(x.reshape(-1, 3), 0), axis=2)
        comps, n = ndimage.label(dist > 40, structure=np.ones((3, 3)))
        assert n == 2, f'{RELATIONAL_CLASSES[label]}: {n} objects'
        (y1, x1), (y2, x2) = ndimage.center_of_mass(dist > 40, comps, [1, 2])
        if f['layout'] == 'row':  # side by side, same height
            assert abs(y1 - y2) < 1.5 and abs(x1 - x2) > 8
        else:  # one above the other, same x
            assert abs(x1 - x2) < 1.5 and abs(y1 - y2) > 8
        core = [x[(comps == j) & (dist >= 0.85 * dist[comps == j].max())].mean(0) for j in (1, 2)]
        colour_gap = np.linalg.norm(core[0] - core[1])
        assert colour_gap < 30 if f['colour'] == 'samecolour' else colour_gap > 60
        holes = [bool((ndimage.binary_fill_holes(comps == j) & (comps != j)).any()) for j in (1, 2)]
        assert sum(holes) == [o1['shape'], o2['shape']].count('ring')  # only rings have a hole


def _probe_top1(x_tr, y_tr, x_va, y_va):
    """Multinomial logistic regression on standardised features: val top-1 (%)."""
    y_tr, y_va = torch.as_tensor(y_tr), torch.as_tensor(y_va)
    return linear_probe_top1(torch.as_tensor(x_tr, dtype=torch.float32), y_tr,
                             torch.as_tensor(x_va, dtype=torch.float32), y_va, int(y_tr.max()) + 1, steps=100)


def _nuisance_features(images):
    """Joint 4x4x4 RGB histogram, channel means / stds, mean intensity, and the mean contrast to
    the background (median colour) in each quadrant."""
    n = len(images)
    x = images.reshape(n, -1, 3).astype(np.int64)
    codes = ((x[..., 0] // 64) * 4 + x[..., 1] // 64) * 4 + x[..., 2] // 64
    hist = np.stack([np.bincount(c, minlength=64) for c in codes]) / x.shape[1]
    xf = images.astype(np.float64)
    contrast = np.linalg.norm(xf - np.median(xf.reshape(n, -1, 3), 1)[:, None, None], axis=3)
    quadrants = contrast.reshape(n, 2, 16, 2, 16).mean((2, 4)).reshape(n, 4)
    stats = [xf.mean((1, 2)), xf.std((1, 2)), xf.mean((1, 2, 3))[:, None], quadrants]
    return np.concatenate([hist] + stats, 1), quadrants


def test_nuisance_statistics_do_not_give_the_label():
    """Colour histograms, mean intensity and per-quadrant contrast: a linear probe on them is near
    chance (12.5 %) for the class, though the same features tell where the objects are."""
    im_tr, y_tr, info_tr = _render('train', 40)
    im_va, y_va, info_va = _render('val', 25)
    f_tr, q_tr = _nuisance_features(im_tr)
    f_va, q_va = _nuisance_features(im_va)
    assert _probe_top1(f_tr, y_tr, f_va, y_va) < 22.0

    # the features are informative: which row / column holds the objects is a local statistic
    def where(infos):  # 0 / 1: top / bottom row, 2 / 3: left / right column
        ys = [np.mean([o['centre'][1] for o in i['objects']]) for i in infos]
        xs = [np.mean([o['centre'][0] for o in i['objects']]) for i in infos]
        return np.array([(y > 16) if i['layout'] == 'row' else 2 + (x > 16) for i, y, x in zip(infos, ys, xs)], int)
    assert _probe_top1(q_tr, where(info_tr), q_va, where(info_va)) > 90.0

    # the class-conditional mean images differ by sampling noise only: their spread across classes
    # is about pixel std / sqrt(images per class) (1.05x that here; 1.5x fails)
    means = np.stack([im_tr[y_tr == c].astype(np.float64).mean(0) for c in range(8)])
    assert means.std(0).mean() < 1.5 / np.sqrt(40) * im_tr.astype(np.float64).std(0).mean()


def test_cli(tmp_path):
    out = tmp_path / 'cli_set'
    cmd = [sys.executable, str(REPO / 'tools/misc/make_demo_data.py'), 'rel', '--out', str(out), '--size', '16',
           '--train-per-class', '1', '--val-per-class', '1']
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout and (out / 'meta.json').exists()
    assert len(list(out.rglob('*.png'))) == 16
