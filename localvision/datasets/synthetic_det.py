"""A generated, reproducible object-detection set in COCO format: shapes on textured backgrounds.

``make_shapes_detection`` writes::

    root/images/{train,val}/NNNNN.png                 (RGB images)
    root/annotations/instances_{train,val}.json       (COCO: images, annotations, categories)
    root/meta.json

Each image has a smooth, noisy coloured background and 2-6 objects of 5 classes. An object's
class fixes its shape *and* its surface texture (solid disc, square with a checkerboard, solid
triangle, ellipse with stripes, ring); its colour, size, position and rotation are random, so a
detector must use spatial structure, not colour. Objects overlap little (a placement whose box
overlaps an earlier one by IoU > ``max_iou`` is re-drawn), and each box is the tight box of the
object's pixels (COCO ``[x, y, w, h]``, float pixels, inside the image). Category ids are 1..5.

Every image has its own RNG seeded from ``(seed, split, index)``: the same seed gives byte-identical
files whatever the order of generation. Only numpy and PIL are used (no download).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, List, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .synthetic import generate_set
from .synthetic_seg import _background, _object_mask

__all__ = ['DET_CLASSES', 'DET_PALETTE', 'DEMO_DET_DIRNAME', 'DEMO_DET_COMMAND', 'make_shapes_detection',
           'render_det_sample']

GENERATOR_VERSION = 1
DEMO_DET_DIRNAME = 'lv_shapes_det'
DEMO_DET_COMMAND = 'python tools/misc/make_demo_data.py det'
DET_CLASSES = ('disc', 'checker_square', 'triangle', 'striped_ellipse', 'ring')
DET_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48)]
_SPLITS = {'train': 0, 'val': 1}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def render_det_sample(rng: np.random.Generator, size: int = 128, min_objects: int = 2, max_objects: int = 6,
                      radius_range: Tuple[float, float] = (0.08, 0.2), max_iou: float = 0.15,
                      return_masks: bool = False):
    """One ``(image uint8 HxWx3, [(class index 0..4, [x1, y1, x2, y2]), ...])`` sample.

    With ``return_masks`` each object is ``(class, box, mask)``: ``mask`` (HxW bool) is the object's
    whole shape, drawn in order (later objects cover earlier ones). The random draws, hence the
    image and the boxes, are the same either way.
    """
    img = _background(rng, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    objects: list = []
    for _ in range(int(rng.integers(min_objects, max_objects + 1))):
        for _attempt in range(10):
            cls = int(rng.integers(0, len(DET_CLASSES)))
            radius = rng.uniform(*radius_range) * size
            cx, cy = rng.uniform(0.12, 0.88, size=2) * size
            t = rng.uniform(0, 2 * np.pi)
            dx, dy = (xx - cx) / radius, (yy - cy) / radius
            u, v = dx * np.cos(t) + dy * np.sin(t), -dx * np.sin(t) + dy * np.cos(t)
            win, pat = _object_mask(cls + 1, u, v, rng)
            ys, xs = np.nonzero(win)
            if len(xs) < 16:
                continue
            box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
            if any(_iou(np.array(box), np.array(o[1])) > max_iou for o in objects):
                continue
            c1 = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
            colour = np.where(pat[..., None], c1, 1.0 - c1)
            img = np.where(win[..., None], colour + rng.normal(0, 0.04, size=img.shape).astype(np.float32), img)
            objects.append((cls, box, win) if return_masks else (cls, box))
            break
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), objects


def _sample_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), _SPLITS[split], int(index), GENERATOR_VERSION, 7])


def write_coco_set(root: Union[str, Path], generator: str, classes: Sequence[str], num_train: int, num_val: int,
                   image_size: int, seed: int, render: Callable, description: str, version: int,
                   overwrite: bool = False) -> Path:
    """Write a generated COCO set to ``root`` (``images/{split}/``, ``annotations/instances_{split}.json``,
    ``meta.json``) through :func:`~localvision.datasets.synthetic.generate_set`: atomically, kept as
    it is when made with the same arguments (unless ``overwrite``), never over a folder that is not
    a generated set.

    ``render(rng, image_size) -> (image, annotations)``, each annotation a dict from ``category_id``
    on (``bbox``, ``area``, ...); every image is drawn from its own seed ``(seed, split, index)``.
    """
    if image_size < 32:
        raise ValueError(f'image_size={image_size} is too small; use at least 32')
    if num_train < 1 or num_val < 1:
        raise ValueError('num_train and num_val must be at least 1')
    params = dict(num_train=num_train, num_val=num_val, image_size=image_size, seed=seed)
    categories = [dict(id=i + 1, name=n, supercategory='shape') for i, n in enumerate(classes)]

    def write(out: Path) -> None:
        (out / 'annotations').mkdir(parents=True)
        for split, n in (('train', num_train), ('val', num_val)):
            (out / 'images' / split).mkdir(parents=True)
            images, anns = [], []
            for i in range(n):
                rng = np.random.default_rng(_sample_seed(seed, split, i))
                img, objects = render(rng, image_size)
                name = f'{i:05d}.png'
                Image.fromarray(img).save(out / 'images' / split / name)
                images.append(dict(id=i + 1, file_name=name, width=image_size, height=image_size))
                for ann in objects:
                    anns.append(dict(id=len(anns) + 1, image_id=i + 1, **ann))
            coco = dict(info=dict(description=f'{description} ({split})', version=version),
                        images=images, annotations=anns, categories=categories)
            (out / 'annotations' / f'instances_{split}.json').write_text(json.dumps(coco))
        meta = dict(generator=generator, version=version, params=params, classes=list(classes))
        (out / 'meta.json').write_text(json.dumps(meta, indent=2) + '\n')
    return generate_set(root, params, version, write, description, overwrite)


def make_shapes_detection(root: Union[str, Path], num_train: int = 800, num_val: int = 200, image_size: int = 128,
                          seed: int = 0, overwrite: bool = False) -> Path:
    """Write the set to ``root`` (COCO layout, see the module doc) and return ``root``.

    An existing set made with the same arguments is kept as it is (unless ``overwrite``); a non-empty
    folder that is not a generated set is refused (``FileExistsError``), never overwritten.
    """
    def render(rng: np.random.Generator, size: int):
        img, objects = render_det_sample(rng, size)
        return img, [dict(category_id=cls + 1, bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1), iscrowd=0)
                     for cls, (x1, y1, x2, y2) in objects]
    return write_coco_set(root, 'shapes_detection', DET_CLASSES, num_train, num_val, image_size, seed, render,
                          'localvision shapes detection', GENERATOR_VERSION, overwrite)
