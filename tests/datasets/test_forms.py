import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from localvision.datasets.forms import (FORM_CLASSES, form_points, image_rng, make_forms_classification,
                                        render_form_image)
from localvision.datasets.relational import OBJECT_SHAPES
from localvision.utils.probes import linear_probe_top1

REPO = Path(__file__).resolve().parents[2]
SMALL = dict(train_per_class=2, val_per_class=1, image_size=32)


def _render(split: str, per_class: int, seed: int = 0):
    images, labels, infos = [], [], []
    for c, name in enumerate(FORM_CLASSES):
        for i in range(per_class):
            img, info = render_form_image(name, image_rng(seed, split, c, i), 32, return_info=True)
            images.append(img)
            labels.append(c)
            infos.append(info)
    return np.stack(images), np.asarray(labels), infos


def test_figures_are_flip_symmetric_and_evenly_sampled():
    """The training pipeline flips horizontally: every figure must map onto itself."""
    assert len(FORM_CLASSES) == 8 and list(FORM_CLASSES) == sorted(FORM_CLASSES)
    for name in FORM_CLASSES:
        p = form_points(name)
        assert p.shape == (12, 2) and np.abs(p).max() <= 1.0 + 1e-9
        mirrored = p * np.array([-1.0, 1.0])
        gaps = np.linalg.norm(mirrored[:, None] - p[None], axis=2).min(1)
        assert gaps.max() < 1e-6, f'{name} is not symmetric under a horizontal flip'
        spacing = np.linalg.norm(p[:, None] - p[None], axis=2) + 9 * np.eye(12)
        assert spacing.min() > 0.2, f'{name}: elements would overlap'
    with pytest.raises(ValueError):
        form_points('star')


def test_layout_meta_and_what_is_on_disk(tmp_path):
    root = make_forms_classification(tmp_path / 'set', seed=0, **SMALL)
    for split, n in (('train', 2), ('val', 1)):
        assert sorted(p.name for p in (root / split).iterdir()) == list(FORM_CLASSES)
        assert all(len(list((root / split / c).glob('*.png'))) == n for c in FORM_CLASSES)
    meta = json.loads((root / 'meta.json').read_text())
    assert meta['classes'] == list(FORM_CLASSES) and meta['params']['seed'] == 0 and 'version' in meta
    for c, name in enumerate(FORM_CLASSES):
        path = root / 'val' / name / '00000.png'
        assert np.array_equal(np.asarray(Image.open(path)), render_form_image(name, image_rng(0, 'val', c, 0), 32))
    from mmpretrain.datasets import CustomDataset  # mmpretrain reads the ImageFolder layout
    ds = CustomDataset(data_root=str(root), data_prefix='train')
    assert len(ds) == 16 and list(ds.metainfo['classes']) == list(FORM_CLASSES)


def test_same_seed_byte_identical_and_refuses_foreign_folder(tmp_path):
    files = [{p.relative_to(r): p.read_bytes() for p in sorted(r.rglob('*.png'))}
             for r in (make_forms_classification(tmp_path / d, seed=s, **SMALL) for d, s in (('a', 3), ('b', 3), ('c', 4)))]
    assert files[0] == files[1] and all(files[0][k] != files[2][k] for k in files[0])
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'precious.txt').write_text('x')
    with pytest.raises(FileExistsError):
        make_forms_classification(tmp_path / 'mine', **SMALL)
    with pytest.raises(ValueError):
        make_forms_classification(tmp_path / 'x', image_size=16)


def test_elements_are_in_the_pixels():
    """Each image shows the 12 elements of its info, in one colour far from the background."""
    ndimage = pytest.importorskip('scipy.ndimage')  # comes with mmseg / mmdet
    images, labels, infos = _render('train', 4, seed=1)
    for img, label, info in zip(images, labels, infos):
        assert info['form'] == FORM_CLASSES[label] and info['element'] in OBJECT_SHAPES
        x = img.astype(np.float64)
        dist = np.linalg.norm(x - np.asarray(info['background'], float), axis=2)
        on = dist > 0.5 * np.linalg.norm(np.subtract(info['colour'], info['background']))
        for cx, cy in info['centres']:  # every element centre is drawn (clipped to the image)
            i, j = min(max(int(cy), 0), 31), min(max(int(cx), 0), 31)
            if info['element'] != 'ring':  # a ring's centre is background
                assert on[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].any()
        comps, n = ndimage.label(on, structure=np.ones((3, 3)))
        sizes = np.bincount(comps.ravel())[1:]
        assert sizes.sum() < 0.4 * on.size  # elements, not background
        if info['element'] != 'ring':  # thin rings may break up at 32 px
            assert 1 <= (sizes >= 3).sum() <= 12  # elements may touch and merge, never split


def test_nuisance_statistics_do_not_give_the_label():
    """Colour histograms and intensity statistics, and the mean image, are the same for all forms;
    the image at 4 x 4 (where the figure's mass lies) is informative only a little."""
    im_tr, y_tr, _ = _render('train', 40)
    im_va, y_va, _ = _render('val', 25)

    def hist(images):
        x = images.reshape(len(images), -1, 3).astype(np.int64)
        codes = ((x[..., 0] // 64) * 4 + x[..., 1] // 64) * 4 + x[..., 2] // 64
        h = np.stack([np.bincount(c, minlength=64) for c in codes]) / x.shape[1]
        xf = images.astype(np.float64)
        return np.concatenate([h, xf.mean((1, 2)), xf.std((1, 2))], 1)

    def probe(f_tr, f_va):
        return linear_probe_top1(torch.as_tensor(f_tr, dtype=torch.float32), torch.as_tensor(y_tr),
                                 torch.as_tensor(f_va, dtype=torch.float32), torch.as_tensor(y_va), 8, steps=100)
    assert probe(hist(im_tr), hist(im_va)) < 22.0


def test_cli(tmp_path):
    out = tmp_path / 'cli_set'
    cmd = [sys.executable, str(REPO / 'tools/misc/make_demo_data.py'), 'forms', '--out', str(out), '--size', '24',
           '--train-per-class', '1', '--val-per-class', '1']
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout and (out / 'meta.json').exists()
    assert len(list(out.rglob('*.png'))) == 16
