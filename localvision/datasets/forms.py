"""A generated classification set whose label is a global form made of small, irrelevant elements.

``make_forms_classification`` writes ``root/train/<class>/*.png``, ``root/val/<class>/*.png`` (the
ImageFolder layout of the shapes set, read by mmpretrain's ``CustomDataset``) and ``root/meta.json``.

Why: on the shapes set (:mod:`localvision.datasets.synthetic`) one object *is* the label, so a small
head on module 0 reads it at once and greedy local learning loses nothing by discarding the rest of
the image early. Here (a Navon figure) the label is the large figure that a dozen small elements
form together: a circle, a square, a triangle pointing up or down, a plus, an X, a T or a U. What
the elements are -- their shape (disc, ring, triangle, cross), colour and size -- is drawn at random
for each image and says nothing about the label; so do the background colour and the figure's
position and size. A neighbourhood the size of module 0's receptive field sees one or two elements,
so the label needs the arrangement of elements a third of the image apart.

Every image is a plain background of one random colour (plus pixel noise) with 12 elements of one
random kind and colour (far from the background's), placed evenly along the strokes of the class's
figure (:func:`form_points`) (radius 28-36 % of the image side, centre within 8 % of the image centre, each element
jittered by 2 %). All eight figures are symmetric under a horizontal flip, so the shapes configs'
training pipeline (random crop with padding, horizontal flip) keeps every label.

Calibration of the set (module probes on random networks, E2E vs greedy) is in docs/benchmarks.md.
Every image has its own RNG seeded from ``(seed, split, class, index)`` (:func:`image_rng`), so the
same seed gives byte-identical PNGs whatever the order of generation. Only numpy and PIL are used.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .relational import OBJECT_SHAPES, _far_colours, draw_objects, image_rng
from .synthetic import generate_set

__all__ = ['FORM_CLASSES', 'DEMO_FORMS_DIRNAME', 'DEMO_FORMS_COMMAND', 'DEMO_FORMS24_DIRNAME', 'DEMO_FORMS24_COMMAND',
           'make_forms_classification',
           'render_form_image', 'form_points', 'image_rng']

#: Bumped whenever the rendering changes, so an old set on disk is regenerated.
GENERATOR_VERSION = 2
#: Folder name of the built-in forms set and the command that makes it.
DEMO_FORMS_DIRNAME = 'lv_forms_cls'
DEMO_FORMS_COMMAND = 'python tools/misc/make_demo_data.py forms'
#: The 24x24 version (configs/cls/cifar_resnet32_forms24_greedy_k4.py) and the command that makes it.
DEMO_FORMS24_DIRNAME = 'lv_forms24_cls'
DEMO_FORMS24_COMMAND = f'{DEMO_FORMS_COMMAND} --size 24 --out data/{DEMO_FORMS24_DIRNAME}'

_NUM_ELEMENTS = 12
_SCALE = (0.28, 0.36)        # figure radius, fraction of the image side
_SHIFT = 0.08                # figure centre offset from the image centre, each axis
_JITTER = 0.02               # std of each element's offset from its place on the figure
_ELEMENT_RADIUS = (0.05, 0.065)

Stroke = Sequence[Tuple[float, float]]
# Each figure is a list of strokes (polylines, in units of the figure radius, y down); a closed
# outline repeats its first vertex. All are symmetric under x -> -x. The arms of the plus and the X
# leave the centre free, so no element cluster marks them locally.
_FIGURES: Dict[str, List[Stroke]] = {
    'circle': [[(np.cos(t), np.sin(t)) for t in np.linspace(0, 2 * np.pi, 65)]],
    'square': [[(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85), (-0.85, -0.85)]],
    'triangleup': [[(0, -1), (1, 0.8), (-1, 0.8), (0, -1)]],
    'triangledown': [[(0, 1), (1, -0.8), (-1, -0.8), (0, 1)]],
    'plus': [[(0.25, 0), (1, 0)], [(-0.25, 0), (-1, 0)], [(0, 0.25), (0, 1)], [(0, -0.25), (0, -1)]],
    'x': [[(sx * 0.18, sy * 0.18), (sx * 0.8, sy * 0.8)] for sx, sy in ((1, 1), (-1, 1), (1, -1), (-1, -1))],
    't': [[(-1, -1), (1, -1)], [(0, -0.6), (0, 1)]],
    'u': [[(-0.9, -1), (-0.9, 0.9), (0.9, 0.9), (0.9, -1)]],
}
#: Class names, in the (alphabetical) order CustomDataset gives them indices.
FORM_CLASSES: Tuple[str, ...] = tuple(sorted(_FIGURES))


def form_points(name: str, n: int = _NUM_ELEMENTS) -> np.ndarray:
    """``n`` points (``(n, 2)``, x / y in figure-radius units) along figure ``name``'s strokes.

    Each stroke gets a share of the points proportional to its length (largest remainders), spaced
    evenly along it at arc lengths ``(i + 0.5) * length / share``, so a symmetric figure gives a
    symmetric set of points."""
    if name not in _FIGURES:
        raise ValueError(f'{name!r} is not a form class; allowed: {list(FORM_CLASSES)}')
    strokes = [np.asarray(s, float) for s in _FIGURES[name]]
    lengths = np.array([np.linalg.norm(np.diff(s, axis=0), axis=1).sum() for s in strokes])
    quota = n * lengths / lengths.sum()
    share = np.floor(quota).astype(int)
    share[np.argsort(share - quota)[:n - share.sum()]] += 1
    out = []
    for stroke, length, k in zip(strokes, lengths, share):
        seg = np.linalg.norm(np.diff(stroke, axis=0), axis=1)
        ends = np.cumsum(seg)
        for s in (np.arange(k) + 0.5) * length / k:
            j = min(int(np.searchsorted(ends, s)), len(seg) - 1)
            out.append(stroke[j] + (stroke[j + 1] - stroke[j]) * (s - (ends[j] - seg[j])) / seg[j])
    return np.stack(out)


def render_form_image(class_name: str, rng: np.random.Generator, image_size: int = 32,
                      return_info: bool = False):
    """Render one ``image_size`` x ``image_size`` RGB ``uint8`` image of form ``class_name``.

    With ``return_info=True`` returns ``(image, info)``: ``info`` has the ``form``, the
    ``background`` colour, the ``element`` shape and ``colour``, and the element ``centres`` and
    ``radius`` in output pixels (pixel centres at i + 0.5).
    """
    size = float(image_size)
    points = form_points(class_name)
    background = rng.integers(0, 256, 3).astype(np.float64)
    scale = rng.uniform(*_SCALE) * size
    centre = size / 2 + rng.uniform(-_SHIFT, _SHIFT, 2) * size
    centres = centre + points * scale + rng.normal(0, _JITTER * size, points.shape)
    element = OBJECT_SHAPES[int(rng.integers(len(OBJECT_SHAPES)))]
    colour = _far_colours(rng, background)[0]
    radius = rng.uniform(*_ELEMENT_RADIUS) * size

    img = draw_objects(image_size, background, [(c, radius, element, colour) for c in centres], rng)
    if not return_info:
        return img
    info = dict(form=class_name, background=[int(c) for c in background], element=element,
                colour=[int(c) for c in colour], centres=[[float(x), float(y)] for x, y in centres],
                radius=float(radius))
    return img, info


# --- the data set on disk ---------------------------------------------------------------------

def _write_set(out: Path, params: dict) -> None:
    for split in ('train', 'val'):
        for cls_id, name in enumerate(FORM_CLASSES):
            folder = out / split / name
            folder.mkdir(parents=True)
            for i in range(params[f'{split}_per_class']):
                img = render_form_image(name, image_rng(params['seed'], split, cls_id, i), params['image_size'])
                Image.fromarray(img).save(folder / f'{i:05d}.png', format='PNG')
    meta = dict(name='localvision forms classification', task='cls', version=GENERATOR_VERSION, params=params,
                classes=list(FORM_CLASSES), element_shapes=list(OBJECT_SHAPES), elements=_NUM_ELEMENTS,
                layout='<split>/<class>/<index>.png')
    (out / 'meta.json').write_text(json.dumps(meta, indent=2) + '\n')


def make_forms_classification(root: Union[str, os.PathLike], train_per_class: int = 500,
                              val_per_class: int = 125, image_size: int = 32, seed: int = 0) -> Path:
    """Generate (or reuse) the forms classification set under ``root`` and return its path.

    Args:
        root: output folder; it gets ``train/``, ``val/`` and ``meta.json``.
        train_per_class / val_per_class: images per class (8 classes) in each split.
        image_size: side of the square images, in pixels (at least 24).
        seed: base seed; the same seed gives byte-identical files.

    As :func:`localvision.datasets.synthetic.make_shapes_classification`: nothing is done if
    ``root/meta.json`` records the same parameters and generator version; the set is written to a
    temporary sibling folder and renamed into place; an existing ``root`` that is not a generated
    set is never overwritten.
    """
    if image_size < 24:
        raise ValueError(f'image_size must be at least 24 (elements need a few pixels), got {image_size}')
    if train_per_class < 0 or val_per_class < 0:
        raise ValueError('train_per_class and val_per_class must be >= 0')
    params = dict(train_per_class=train_per_class, val_per_class=val_per_class, image_size=image_size, seed=seed)
    return generate_set(root, params, GENERATOR_VERSION, lambda out: _write_set(out, params), 'forms')
