"""A generated classification set whose labels are relations between two objects.

``make_relational_classification`` writes ``root/train/<class>/*.png``, ``root/val/<class>/*.png``
(the ImageFolder layout of the shapes set, read by mmpretrain's ``CustomDataset``) and
``root/meta.json``; with ``annotations=True`` also ``root/annotations.json`` (per image: the
objects' shapes, colours, centres and radii).

Why: on the shapes set (:mod:`localvision.datasets.synthetic`) the label is the identity of one
shape, which a small head on module 0 reads at once, so greedy local learning loses nothing by
discarding the rest of the image early. Here no single object, and no local patch, says anything
about the label: it is the *relation* between two objects that lie about half the image apart.

Every image is a plain background of one random colour (plus pixel noise) with exactly two
objects. Each object has a shape from :data:`OBJECT_SHAPES` (disc, ring, triangle, cross), a
radius of 11-15 % of the image side and a colour far from the background's. The two objects sit
in two of the four quadrants, at a random offset inside each (the same offset along the shared
axis, so they are exactly aligned). The 8 classes are the 2 x 2 x 2 combinations of three
relations:

- **layout** -- ``row``: the objects are side by side (top or bottom half, same height);
  ``column``: one above the other (left or right half, same x). Which two quadrants hold objects
  is an XOR of quadrant occupancy: every quadrant is occupied in half of the images of every class,
  so the class-mean image and any per-quadrant statistic are the same for all classes. A feature
  that sees one object cannot tell the layout; it needs the position of the other one, 10-22
  pixels away (centre to centre) at 32 x 32.
- **shape** -- ``sameshape``: both objects have the same shape; ``diffshape``: two different
  shapes. Every object's shape is uniform over the four shapes in every class.
- **colour** -- ``samecolour``: the same colour; ``diffcolour``: two colours far apart. Both
  colours of a pair are drawn jointly (far from the background and from each other) and the
  ``samecolour`` classes then repeat the first, so every object's colour has the same distribution
  in every class and the colour histogram of an image does not separate them (its mean does not
  depend on the class).

So no single object (shape, colour, size, position) and no colour or intensity histogram carries
the label; a classifier has to compare two objects that are far apart. The layout needs where
both objects are, which no pooled statistic of local features keeps; the shape and colour
relations need both objects' features jointly (second order: a linear read-out of pooled features
sees nothing, though a nonlinear head on a pooled vector that keeps shape / colour identity can
compare them). All three relations are
invariant to the training pipeline of the shapes configs (random crop with 4 pixels of padding,
horizontal flip): that is why there is no left-of / right-of relation. Relations that are sums of
local evidence (counting objects, a texture-defined figure present or not) were left out on
purpose: a head that pools local features over the image (module 0's auxiliary net does) solves
them without any global structure.

Class names are ``<layout>_<shape>_<colour>``, e.g. ``column_diffshape_samecolour``; meta.json
lists them and the three factors. Shapes are drawn on a 4x supersampled grid and box-filtered
down (antialiased edges), as in the shapes set. Every image has its own RNG seeded from ``(seed,
split, class, index)`` (:func:`image_rng`), so the same seed gives byte-identical PNGs whatever
the order of generation, and :func:`render_relational_image` with ``return_info=True`` gives back
what any image on disk shows. Only numpy and PIL are used.
"""
from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .synthetic import generate_set

__all__ = ['RELATIONAL_CLASSES', 'OBJECT_SHAPES', 'FACTORS', 'DEMO_REL_DIRNAME', 'DEMO_REL_COMMAND',
           'make_relational_classification', 'render_relational_image', 'draw_objects', 'image_rng', 'class_factors',
           'list_images']

#: Bumped whenever the rendering changes, so an old set on disk is regenerated.
GENERATOR_VERSION = 1
#: Folder name of the built-in relational set and the command that makes it.
DEMO_REL_DIRNAME = 'lv_relational_cls'
DEMO_REL_COMMAND = 'python tools/misc/make_demo_data.py rel'

_SUPERSAMPLE = 4
_SPLITS = {'train': 0, 'val': 1}

#: The three relations and their values; a class is one value of each.
FACTORS: Dict[str, Tuple[str, str]] = {
    'layout': ('row', 'column'),
    'shape': ('sameshape', 'diffshape'),
    'colour': ('samecolour', 'diffcolour'),
}
#: Class names, in the (alphabetical) order CustomDataset gives them indices.
RELATIONAL_CLASSES: Tuple[str, ...] = tuple(sorted('_'.join(c) for c in itertools.product(*FACTORS.values())))

# geometry, as fractions of the image side
_RADIUS = (0.11, 0.15)   # object radius
_JITTER = 0.08           # offset of an object from its quadrant's centre, along each axis
_NOISE = 6.0             # std of the pixel noise (0-255 scale)
_MIN_COLOUR_DIST = 120.  # RGB distance between an object colour and the background, and between two colours

Mask = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """An upward triangle (v grows downwards), centroid at the origin, circumradius ~1.15."""
    inside = np.ones(u.shape, bool)
    for t in (-np.pi / 2 + np.pi, -np.pi / 2 + np.pi / 3, -np.pi / 2 - np.pi / 3):  # edge normals: down, and
        inside &= u * np.cos(t) + v * np.sin(t) <= 0.58  # the two upper sides
    return inside


# Each mask takes coordinates in radius units around the object's centre (no rotation: the set is
# about relations, not about recognising rotated shapes). Areas are kept within a factor ~1.7.
_SHAPES: Dict[str, Mask] = {
    'cross': lambda u, v: ((np.abs(u) <= 0.36) & (np.abs(v) <= 1)) | ((np.abs(v) <= 0.36) & (np.abs(u) <= 1)),
    'disc': lambda u, v: u * u + v * v <= 0.85,
    'ring': lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.36),
    'triangle': _triangle,
}
#: The object shapes (alphabetical).
OBJECT_SHAPES: Tuple[str, ...] = tuple(sorted(_SHAPES))


def class_factors(class_name: str) -> Dict[str, str]:
    """``{'layout': ..., 'shape': ..., 'colour': ...}`` of a class name."""
    if class_name not in RELATIONAL_CLASSES:
        raise ValueError(f'{class_name!r} is not a relational class; allowed: {list(RELATIONAL_CLASSES)}')
    return dict(zip(FACTORS, class_name.split('_')))


def image_rng(seed: int, split: str, class_index: int, index: int) -> np.random.Generator:
    """The RNG of image ``index`` of class ``class_index`` (in the set's class list) in ``split``."""
    return np.random.default_rng([seed, _SPLITS[split], class_index, index])


def _far_colours(rng: np.random.Generator, background: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Two RGB colours, each far from ``background`` and from each other (best of a few draws)."""
    best, best_score = None, -1.
    for _ in range(50):
        c1, c2 = rng.integers(0, 256, (2, 3)).astype(np.float64)
        score = min(np.linalg.norm(c1 - background), np.linalg.norm(c2 - background), np.linalg.norm(c1 - c2))
        if score > best_score:
            best, best_score = (c1, c2), score
        if score >= _MIN_COLOUR_DIST:
            break
    return best


def draw_objects(image_size: int, background: np.ndarray,
                 objects: Iterable[Tuple[Sequence[float], float, str, np.ndarray]],
                 rng: np.random.Generator) -> np.ndarray:
    """An RGB ``uint8`` image: ``background`` with each ``(centre (x, y), radius, shape, colour)``
    object painted on a 4x supersampled grid and box-filtered down (antialiased edges), plus pixel
    noise drawn from ``rng``. Centres and radii are in output pixels; shapes are :data:`OBJECT_SHAPES`."""
    big = image_size * _SUPERSAMPLE
    canvas = np.empty((big, big, 3), np.float32)
    canvas[:] = background
    ys, xs = np.mgrid[0:big, 0:big].astype(np.float32) + np.float32(0.5)
    for (cx, cy), r, shape, colour in objects:
        r = np.float32(r * _SUPERSAMPLE)
        canvas[_SHAPES[shape]((xs - np.float32(cx * _SUPERSAMPLE)) / r, (ys - np.float32(cy * _SUPERSAMPLE)) / r)] = colour
    small = canvas.reshape(image_size, _SUPERSAMPLE, image_size, _SUPERSAMPLE, 3).mean(axis=(1, 3))
    small += rng.normal(0, _NOISE, small.shape)
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def render_relational_image(class_name: str, rng: np.random.Generator, image_size: int = 32,
                            return_info: bool = False):
    """Render one ``image_size`` x ``image_size`` RGB ``uint8`` image of ``class_name``.

    With ``return_info=True`` returns ``(image, info)``: ``info`` has the class's factors, the
    ``background`` colour and ``objects``, a list of two dicts with ``shape``, ``colour`` (RGB),
    ``centre`` (x, y) and ``radius``, in output pixels (pixel centres at i + 0.5).
    """
    factors = class_factors(class_name)
    size = float(image_size)
    background = rng.integers(0, 256, 3).astype(np.float64)

    # layout: two quadrants sharing a row (row) or a column (column); the offset along the shared
    # axis is drawn once, so the two objects are aligned on it
    lines = int(rng.integers(2))  # which row / column
    offsets = rng.uniform(-_JITTER, _JITTER, (2, 2)) * size  # (object, axis x/y)
    quarter = np.array([0.25, 0.75]) * size
    centres = np.empty((2, 2))
    for i in range(2):
        if factors['layout'] == 'row':
            centres[i] = quarter[i] + offsets[i, 0], quarter[lines] + offsets[0, 1]
        else:
            centres[i] = quarter[lines] + offsets[0, 0], quarter[i] + offsets[i, 1]
    if rng.integers(2):  # which object is first: irrelevant to the label, but keeps `objects` unordered
        centres = centres[::-1].copy()
    radii = rng.uniform(*_RADIUS, 2) * size

    shape_ids = rng.permutation(len(OBJECT_SHAPES))[:2]  # two different shapes, each uniform
    if factors['shape'] == 'sameshape':
        shape_ids[1] = shape_ids[0]
    shapes = [OBJECT_SHAPES[j] for j in shape_ids]
    c1, c2 = _far_colours(rng, background)  # drawn the same way for both colour classes
    colours = [c1, c1 if factors['colour'] == 'samecolour' else c2]

    img = draw_objects(image_size, background, zip(centres, radii, shapes, colours), rng)
    if not return_info:
        return img
    info = dict(factors, background=[int(c) for c in background],
                objects=[dict(shape=s, colour=[int(c) for c in col], centre=[float(x), float(y)], radius=float(r))
                         for s, col, (x, y), r in zip(shapes, colours, centres, radii)])
    return img, info


# --- the data set on disk ---------------------------------------------------------------------

def _params(train_per_class: int, val_per_class: int, image_size: int, seed: int, annotations: bool) -> dict:
    return dict(train_per_class=train_per_class, val_per_class=val_per_class, image_size=image_size, seed=seed,
                annotations=annotations)


def _write_set(out: Path, params: dict) -> None:
    counts = {'train': params['train_per_class'], 'val': params['val_per_class']}
    annotations: Dict[str, dict] = {}
    for split, per_class in counts.items():
        for cls_id, name in enumerate(RELATIONAL_CLASSES):
            folder = out / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                img, info = render_relational_image(name, image_rng(params['seed'], split, cls_id, i),
                                                    params['image_size'], return_info=True)
                Image.fromarray(img).save(folder / f'{i:05d}.png', format='PNG')
                annotations[f'{split}/{name}/{i:05d}.png'] = info
    if params['annotations']:
        (out / 'annotations.json').write_text(json.dumps(annotations) + '\n')
    meta = dict(name='localvision relational classification', task='cls', version=GENERATOR_VERSION,
                params=params, classes=list(RELATIONAL_CLASSES), factors={k: list(v) for k, v in FACTORS.items()},
                object_shapes=list(OBJECT_SHAPES), layout='<split>/<class>/<index>.png',
                class_name='<layout>_<shape>_<colour>')
    (out / 'meta.json').write_text(json.dumps(meta, indent=2) + '\n')


def make_relational_classification(root: Union[str, os.PathLike], train_per_class: int = 500,
                                   val_per_class: int = 125, image_size: int = 32, seed: int = 0,
                                   annotations: bool = False) -> Path:
    """Generate (or reuse) the relational classification set under ``root`` and return its path.

    Args:
        root: output folder; it gets ``train/``, ``val/`` and ``meta.json``.
        train_per_class / val_per_class: images per class (8 classes) in each split.
        image_size: side of the square images, in pixels (at least 16).
        seed: base seed; the same seed gives byte-identical files.
        annotations: also write ``annotations.json``: ``{'<split>/<class>/<index>.png': info}``
            with the ``info`` of :func:`render_relational_image`.

    As :func:`localvision.datasets.synthetic.make_shapes_classification`: nothing is done if
    ``root/meta.json`` records the same parameters and generator version; the set is written to a
    temporary sibling folder and renamed into place; an existing ``root`` that is not a generated
    set is never overwritten.
    """
    if image_size < 16:
        raise ValueError(f'image_size must be at least 16, got {image_size}')
    if train_per_class < 0 or val_per_class < 0:
        raise ValueError('train_per_class and val_per_class must be >= 0')
    params = _params(train_per_class, val_per_class, image_size, seed, bool(annotations))
    return generate_set(root, params, GENERATOR_VERSION, lambda out: _write_set(out, params), 'relational')


def list_images(root: Union[str, os.PathLike], split: str) -> List[Tuple[Path, int]]:
    """``(path, class index)`` of every image of ``split`` of a generated set, in class order."""
    root = Path(root)
    return [(p, c) for c, name in enumerate(RELATIONAL_CLASSES) for p in sorted((root / split / name).glob('*.png'))]
