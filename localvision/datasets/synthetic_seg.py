"""A generated, reproducible semantic-segmentation set: shapes on textured backgrounds.

``make_shapes_segmentation`` writes mmseg's folder layout::

    root/img_dir/{train,val}/NNNNN.png   (RGB images)
    root/ann_dir/{train,val}/NNNNN.png   (8-bit label maps, 0 = background)
    root/meta.json

Each image has a low-frequency, noisy coloured background (class 0) and 2-5 objects that occlude
one another. An object's class fixes its shape *and* its surface texture (solid disc, square
with a checkerboard, triangle, horizontal stripes in an ellipse, ring), while its colour, size,
position and rotation are random, so a model must use spatial structure, not colour alone.
Labels are the class of the topmost object at each pixel.

Every image has its own RNG seeded from ``(seed, split, index)``: the same seed gives byte-identical
files whatever the order of generation. Only numpy and PIL are used.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Tuple, Union

import numpy as np
from PIL import Image

from .synthetic import generate_set

__all__ = ['SEG_CLASSES', 'SEG_PALETTE', 'DEMO_SEG_DIRNAME', 'DEMO_SEG_COMMAND', 'make_shapes_segmentation',
           'render_seg_sample']

GENERATOR_VERSION = 1
DEMO_SEG_DIRNAME = 'lv_shapes_seg'
DEMO_SEG_COMMAND = 'python tools/misc/make_demo_data.py seg'
SEG_CLASSES = ('background', 'disc', 'checker_square', 'triangle', 'striped_ellipse', 'ring')
SEG_PALETTE = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48]]
_SPLITS = {'train': 0, 'val': 1}


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth colour field (bilinearly upsampled 4x4 grid) plus pixel noise, float in [0, 1]."""
    coarse = rng.uniform(0.1, 0.9, size=(4, 4, 3)).astype(np.float32)
    img = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR),
                     np.float32) / 255.0
    img += rng.normal(0, 0.06, size=img.shape).astype(np.float32)
    return img


def _object_mask(cls: int, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """``(window, pattern)`` of class ``cls`` on rotated, radius-normalised coordinates."""
    r = np.hypot(u, v)
    if cls == 1:  # disc, solid
        win = r <= 1.0
        return win, win
    if cls == 2:  # square with checkerboard
        win = (np.abs(u) <= 0.8) & (np.abs(v) <= 0.8)
        pat = ((np.floor(u * 2.5) + np.floor(v * 2.5)) % 2) == 0
        return win, win & pat
    if cls == 3:  # triangle, solid
        win = np.ones(u.shape, bool)
        for i in range(3):
            t = 2 * np.pi * i / 3 + np.pi / 2
            win &= u * np.cos(t) + v * np.sin(t) <= 0.5
        return win, win
    if cls == 4:  # ellipse with stripes
        win = (u / 1.0) ** 2 + (v / 0.6) ** 2 <= 1.0
        pat = (np.floor(v * 5) % 2) == 0
        return win, win & pat
    if cls == 5:  # ring
        win = (r <= 1.0) & (r >= 0.55)
        return win, win
    raise ValueError(cls)


def render_seg_sample(rng: np.random.Generator, size: int = 64) -> Tuple[np.ndarray, np.ndarray]:
    """One ``(image uint8 HxWx3, label uint8 HxW)`` pair."""
    img = _background(rng, size)
    label = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    for _ in range(int(rng.integers(2, 6))):
        cls = int(rng.integers(1, len(SEG_CLASSES)))
        radius = rng.uniform(0.12, 0.28) * size
        cx, cy = rng.uniform(0.1, 0.9, size=2) * size
        t = rng.uniform(0, 2 * np.pi)
        dx, dy = (xx - cx) / radius, (yy - cy) / radius
        u, v = dx * np.cos(t) + dy * np.sin(t), -dx * np.sin(t) + dy * np.cos(t)
        win, pat = _object_mask(cls, u, v, rng)
        c1 = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
        c2 = 1.0 - c1  # the pattern's second colour contrasts with the first
        colour = np.where(pat[..., None], c1, c2)
        img = np.where(win[..., None], colour + rng.normal(0, 0.04, size=img.shape).astype(np.float32), img)
        label[win] = cls
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), label


def _sample_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), _SPLITS[split], int(index), GENERATOR_VERSION])


def make_shapes_segmentation(root: Union[str, Path], num_train: int = 400, num_val: int = 100, image_size: int = 64,
                             seed: int = 0, overwrite: bool = False) -> Path:
    """Write the set to ``root`` (mmseg img_dir/ann_dir layout) and return ``root``.

    An existing set made with the same arguments is kept as it is (unless ``overwrite``); a non-empty
    folder that is not a generated set is refused (``FileExistsError``), never overwritten.
    """
    if image_size < 16:
        raise ValueError(f'image_size={image_size} is too small; use at least 16')
    if num_train < 1 or num_val < 1:
        raise ValueError('num_train and num_val must be at least 1')
    params = dict(num_train=num_train, num_val=num_val, image_size=image_size, seed=seed)

    def write(out: Path) -> None:
        for split, n in (('train', num_train), ('val', num_val)):
            (out / 'img_dir' / split).mkdir(parents=True)
            (out / 'ann_dir' / split).mkdir(parents=True)
            for i in range(n):
                rng = np.random.default_rng(_sample_seed(seed, split, i))
                img, label = render_seg_sample(rng, image_size)
                Image.fromarray(img).save(out / 'img_dir' / split / f'{i:05d}.png')
                Image.fromarray(label, mode='L').save(out / 'ann_dir' / split / f'{i:05d}.png')
        meta = dict(generator='shapes_segmentation', version=GENERATOR_VERSION, params=params,
                    classes=list(SEG_CLASSES), palette=SEG_PALETTE)
        (out / 'meta.json').write_text(json.dumps(meta, indent=2) + '\n')
    return generate_set(root, params, GENERATOR_VERSION, write, 'localvision shapes segmentation', overwrite)
