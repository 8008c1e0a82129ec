"""A generated, reproducible image-classification set: shapes and patterns on clutter.

``make_shapes_classification`` writes ``root/train/<class>/*.png`` and ``root/val/<class>/*.png``
(ImageFolder layout, read by mmpretrain's ``CustomDataset``) and
``root/meta.json``. Each image shows one shape or pattern (the class) at a random position,
size, rotation and colour over a noisy, low-frequency coloured background with small
distractors (thin lines, dots). Shapes are drawn on a 4x supersampled grid and box-filtered
down, so edges are antialiased.

Every image has its own RNG seeded from ``(seed, split, class, index)``, so the same seed gives
byte-identical PNGs whatever the order of generation. Only numpy and PIL are used.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw

__all__ = ['SHAPE_CLASSES', 'DEMO_CLS_DIRNAME', 'DEMO_CLS_COMMAND', 'make_shapes_classification',
           'render_shape_image']

#: Bumped whenever the rendering changes, so an old set on disk is regenerated.
GENERATOR_VERSION = 1
#: Folder name of the built-in demo set and the command that makes it (used in error hints).
DEMO_CLS_DIRNAME = 'lv_shapes_cls'
DEMO_CLS_COMMAND = 'python tools/misc/make_demo_data.py cls'

_SUPERSAMPLE = 4
_SPLITS = {'train': 0, 'val': 1}

Mask = Callable[[np.ndarray, np.ndarray, np.random.Generator], Tuple[np.ndarray, np.ndarray]]


# --- shape masks ------------------------------------------------------------------------------
# Each takes the rotated, radius-normalised coordinates (u, v) of the canvas and returns
# ``(window, pattern)`` boolean masks: ``window`` is where the shape is drawn, ``pattern`` where
# it takes its first colour (the rest of the window takes the second one).

def _solid(window: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    return window, window


def _regular_polygon(u: np.ndarray, v: np.ndarray, sides: int) -> np.ndarray:
    inside = np.ones(u.shape, bool)
    for i in range(sides):
        t = 2 * np.pi * i / sides
        inside &= u * np.cos(t) + v * np.sin(t) <= np.cos(np.pi / sides)
    return inside


def _star(u: np.ndarray, v: np.ndarray, inner: float, points: int = 5) -> np.ndarray:
    sector = np.pi / points
    rho = np.hypot(u, v)
    gamma = sector - np.abs(np.mod(np.arctan2(v, u), 2 * sector) - sector)  # 0: inner vertex, sector: tip
    px, py = rho * np.cos(gamma), rho * np.sin(gamma)
    ox, oy = np.cos(sector), np.sin(sector)
    return (ox - inner) * py - oy * (px - inner) >= 0


def _cross(u: np.ndarray, v: np.ndarray, half_width: float) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    return ((au <= half_width) & (av <= 1)) | ((av <= half_width) & (au <= 1))


def _stripes(coord: np.ndarray, periods: float) -> np.ndarray:
    return np.sin(np.pi * periods * coord) > 0


def _pattern(u: np.ndarray, v: np.ndarray, on: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """A two-colour pattern ``on`` inside a square window."""
    window = np.maximum(np.abs(u), np.abs(v)) <= 0.8
    return window, window & on


_SHAPES: Dict[str, Tuple[Mask, bool]] = {
    # name: (masks, any rotation? False: only a +-15 degree jitter, so square != diamond, h != v)
    'circle': (lambda u, v, r: _solid(u * u + v * v <= 1), True),
    'ring': (lambda u, v, r: _solid((u * u + v * v <= 1) & (u * u + v * v >= r.uniform(0.35, 0.55))), True),
    'square': (lambda u, v, r: _solid(np.maximum(np.abs(u), np.abs(v)) <= 0.75), False),
    'diamond': (lambda u, v, r: _solid(np.abs(u) + np.abs(v) <= 1), False),
    'triangle': (lambda u, v, r: _solid(_regular_polygon(u, v, 3)), True),
    'cross': (lambda u, v, r: _solid(_cross(u, v, r.uniform(0.22, 0.35))), False),
    'star': (lambda u, v, r: _solid(_star(u, v, r.uniform(0.35, 0.5))), True),
    'stripes_h': (lambda u, v, r: _pattern(u, v, _stripes(v, r.uniform(2.0, 3.0))), False),
    'stripes_v': (lambda u, v, r: _pattern(u, v, _stripes(u, r.uniform(2.0, 3.0))), False),
    'checker': (lambda u, v, r: _pattern(u, v, _stripes(u, 1.5) ^ _stripes(v, 1.5)), False),
}
#: Class names, in the (alphabetical) order CustomDataset gives them indices.
SHAPE_CLASSES: Tuple[str, ...] = tuple(sorted(_SHAPES))


# --- rendering --------------------------------------------------------------------------------

def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random colour field plus thin lines and dots, at ``size`` (supersampled) pixels."""
    grid = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(grid).resize((size, size), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(2, 6)):  # thin lines
        x0, y0, x1, y1 = (int(c) for c in rng.integers(0, size, 4))
        draw.line((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 256, 3)),
                  width=max(1, size // 40))
    for _ in range(rng.integers(3, 9)):  # small dots
        x, y = (int(c) for c in rng.integers(0, size, 2))
        rad = int(rng.integers(size // 64 + 1, size // 20 + 2))
        draw.ellipse((x - rad, y - rad, x + rad, y + rad), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return np.array(img)  # writable uint8 copy


def _contrasting_colour(rng: np.random.Generator, against: np.ndarray, min_dist: float = 110.) -> np.ndarray:
    """A random RGB colour at least ``min_dist`` away from ``against`` (best of a few draws)."""
    best, best_dist = None, -1.
    for _ in range(20):
        colour = rng.integers(0, 256, 3)
        dist = float(np.linalg.norm(colour - np.asarray(against, np.float64)))
        if dist > best_dist:
            best, best_dist = colour, dist
        if dist >= min_dist:
            break
    return best


@lru_cache(maxsize=4)
def _pixel_centres(size: int) -> Tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + np.float32(0.5)
    return ys, xs


def render_shape_image(class_name: str, rng: np.random.Generator, image_size: int = 32) -> np.ndarray:
    """Render one ``image_size`` x ``image_size`` RGB ``uint8`` image of ``class_name``."""
    mask_fn, rotation_free = _SHAPES[class_name]
    big = image_size * _SUPERSAMPLE
    canvas = _background(rng, big)

    radius = rng.uniform(0.22, 0.38) * big
    cx, cy = rng.uniform(radius * 0.8, big - radius * 0.8, 2)
    angle = rng.uniform(0, 2 * np.pi) if rotation_free else np.deg2rad(rng.uniform(-15, 15))
    # every shape lies within 1.2 radii of its centre: only that box is evaluated
    y0, y1 = max(int(cy - 1.2 * radius), 0), min(int(cy + 1.2 * radius) + 1, big)
    x0, x1 = max(int(cx - 1.2 * radius), 0), min(int(cx + 1.2 * radius) + 1, big)
    ys, xs = _pixel_centres(big)
    ys, xs = ys[y0:y1, x0:x1], xs[y0:y1, x0:x1]
    dx, dy = (xs - np.float32(cx)) / np.float32(radius), (ys - np.float32(cy)) / np.float32(radius)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u, v = dx * cos + dy * sin, dy * cos - dx * sin
    window, pattern = mask_fn(u, v, rng)

    box = canvas[y0:y1, x0:x1]  # a view: writing to it draws on the canvas
    local_bg = box[window].mean(axis=0) if window.any() else box.reshape(-1, 3).mean(axis=0)
    colour1 = _contrasting_colour(rng, local_bg)
    colour2 = _contrasting_colour(rng, colour1)
    box[window] = colour2
    box[pattern] = colour1

    small = np.asarray(Image.fromarray(canvas).resize((image_size, image_size), Image.BOX), np.float32)
    small += rng.normal(0, 10, small.shape)
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


# --- the data set on disk ---------------------------------------------------------------------

def _params(num_classes: int, train_per_class: int, val_per_class: int, image_size: int, seed: int) -> dict:
    return dict(num_classes=num_classes, train_per_class=train_per_class, val_per_class=val_per_class,
                image_size=image_size, seed=seed)


def _read_meta(root: Path) -> dict | None:
    try:
        return json.loads((root / 'meta.json').read_text())
    except (OSError, ValueError):
        return None


def _is_current(root: Path, params: dict, version: int = GENERATOR_VERSION) -> bool:
    meta = _read_meta(root)
    return bool(meta) and meta.get('version') == version and meta.get('params') == params


def generate_set(root: Union[str, os.PathLike], params: dict, version: int, write: Callable[[Path], None],
                 what: str, overwrite: bool = False) -> Path:
    """Generate (or reuse) a set under ``root`` with ``write(folder)``, which writes the files and a
    ``meta.json`` holding ``version`` and ``params``. Every generator of localvision writes through
    this function.

    Nothing is done when ``root/meta.json`` records the same ``version`` and ``params`` (unless
    ``overwrite``). The set is written to a temporary sibling folder and renamed into place, so
    ``root`` never holds a half-written set; an existing ``root`` that is not a generated set (a
    non-empty folder without ``meta.json``) is never overwritten: :class:`FileExistsError`.
    """
    root = Path(root)
    if not overwrite and _is_current(root, params, version):
        return root
    if root.exists() and (not root.is_dir() or (any(root.iterdir()) and _read_meta(root) is None)):
        raise FileExistsError(f'{root} exists and is not a generated {what} set (no meta.json); '
                              'remove it or choose another output folder')
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f'.{root.name}.tmp-{uuid.uuid4().hex[:8]}'
    try:
        tmp.mkdir()
        write(tmp)
        old = None
        if root.exists():  # an older / different generated set, or an empty folder: swap it out
            old = root.parent / f'.{root.name}.old-{uuid.uuid4().hex[:8]}'
            root.rename(old)
        try:
            tmp.rename(root)
        except OSError:
            if not _is_current(root, params, version):  # not a concurrent writer finishing first
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _write_set(out: Path, params: dict, classes: Tuple[str, ...]) -> None:
    counts = {'train': params['train_per_class'], 'val': params['val_per_class']}
    for split, per_class in counts.items():
        for cls_id, name in enumerate(classes):
            folder = out / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                rng = np.random.default_rng([params['seed'], _SPLITS[split], cls_id, i])
                img = render_shape_image(name, rng, params['image_size'])
                Image.fromarray(img).save(folder / f'{i:05d}.png', format='PNG')
    meta = dict(name='localvision shapes classification', task='cls', version=GENERATOR_VERSION,
                params=params, classes=list(classes), layout='<split>/<class>/<index>.png')
    (out / 'meta.json').write_text(json.dumps(meta, indent=2) + '\n')


def make_shapes_classification(root: Union[str, os.PathLike], num_classes: int = 10, train_per_class: int = 500,
                               val_per_class: int = 100, image_size: int = 32, seed: int = 0) -> Path:
    """Generate (or reuse) the shapes classification set under ``root`` and return its path.

    Args:
        root: output folder; it gets ``train/``, ``val/`` and ``meta.json``.
        num_classes: how many of :data:`SHAPE_CLASSES` to use (the first ``num_classes``).
        train_per_class / val_per_class: images per class in each split.
        image_size: side of the square images, in pixels (at least 8).
        seed: base seed; the same seed gives byte-identical files.

    If ``root/meta.json`` records the same parameters and generator version nothing is done. The
    set is written to a temporary sibling folder and renamed into place, so ``root`` never
    holds a half-written set. An existing ``root`` that is not a set made by this function is
    never overwritten.
    """
    if not 1 <= num_classes <= len(SHAPE_CLASSES):
        raise ValueError(f'num_classes must be in [1, {len(SHAPE_CLASSES)}], got {num_classes}')
    if image_size < 8:
        raise ValueError(f'image_size must be at least 8, got {image_size}')
    if train_per_class < 0 or val_per_class < 0:
        raise ValueError('train_per_class and val_per_class must be >= 0')
    params = _params(num_classes, train_per_class, val_per_class, image_size, seed)
    classes = tuple(sorted(SHAPE_CLASSES[:num_classes]))
    return generate_set(root, params, GENERATOR_VERSION, lambda out: _write_set(out, params, classes), 'shapes')
