"""A generated, reproducible instance-segmentation set in COCO format: the detection shapes set
(:mod:`localvision.datasets.synthetic_det`) with a polygon mask per object.

``make_shapes_instances`` writes::

    root/images/{train,val}/NNNNN.png                 (RGB images)
    root/annotations/instances_{train,val}.json       (COCO: images, annotations with polygons, categories)
    root/meta.json

The images are those of the detection set with the same seed and size (same drawing, same random
draws). Each annotation is the object's **visible** part (later objects cover earlier ones, as
COCO annotates what is seen): ``segmentation`` is a list of polygons ``[x1, y1, x2, y2, ...]`` in
pixel coordinates, traced a quarter pixel inside the mask's pixel edges, so that rasterising them
(pixel centres inside) gives back exactly the visible pixels; a hole (the ring's
centre) is cut into its outer polygon through a zero-width slit, so the even-odd filling of
pycocotools (what mmdet's ``LoadAnnotations(with_mask=True)`` and ``CocoMetric`` use) leaves it
empty. ``bbox`` is the tight box of the visible pixels (so every polygon lies inside its box),
``area`` the number of visible pixels. An object whose visible part is under 16 pixels is left
out of the annotations. Category ids are 1..5.

Every image has its own RNG seeded from ``(seed, split, index)``: the same seed gives byte-identical
files whatever the order of generation. numpy, PIL and OpenCV (``cv2``, which mmcv installs: the
contour tracing) are used; nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple, Union

import numpy as np

from .synthetic_det import DET_CLASSES, DET_PALETTE, render_det_sample, write_coco_set

__all__ = ['INST_CLASSES', 'INST_PALETTE', 'DEMO_INST_DIRNAME', 'DEMO_INST_COMMAND', 'make_shapes_instances',
           'render_inst_sample', 'mask_to_polygons']

GENERATOR_VERSION = 1
DEMO_INST_DIRNAME = 'lv_shapes_inst'
DEMO_INST_COMMAND = 'python tools/misc/make_demo_data.py inst'
INST_CLASSES = DET_CLASSES
INST_PALETTE = DET_PALETTE
MIN_VISIBLE = 16  # pixels


def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
    """COCO polygons (flat ``[x1, y1, ...]`` lists, pixel coordinates) of a binary mask: one per
    connected part, each hole joined to its outer contour by a zero-width slit (even-odd filling
    leaves the hole out). Parts too thin to enclose any area are dropped."""
    import cv2
    # traced on the mask upsampled 2x: the contour then runs a quarter pixel inside the pixel edges,
    # and rasterising the polygon (pixel centres inside) gives back exactly the mask
    up = np.kron(mask.astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]
    polys = []
    for i, c in enumerate(contours):
        if hierarchy[i][3] >= 0:  # a hole: joined to its parent below
            continue
        outer = (c[:, 0, :].astype(np.float64) + 0.5) / 2
        child = hierarchy[i][2]
        while child >= 0:
            hole = (contours[child][:, 0, :].astype(np.float64) + 0.5) / 2
            if len(hole) >= 3 and _area(hole) > 0:
                d = ((outer[:, None, :] - hole[None, :, :]) ** 2).sum(-1)
                a, b = np.unravel_index(int(d.argmin()), d.shape)
                outer = np.concatenate([outer[:a + 1], hole[b:], hole[:b + 1], outer[a:]])
            child = hierarchy[child][0]
        if len(outer) >= 3 and _area(outer) >= 0.25:
            polys.append([round(float(v), 2) for v in outer.reshape(-1)])
    return polys


def render_inst_sample(rng: np.random.Generator, size: int = 128
                       ) -> Tuple[np.ndarray, List[Tuple[int, List[float], List[List[float]], int]]]:
    """One ``(image uint8 HxWx3, [(class index 0..4, [x1, y1, x2, y2], polygons, area), ...])``
    sample: the detection sample of the same draws, annotated with each object's visible part."""
    img, objects = render_det_sample(rng, size, return_masks=True)
    out = []
    covered = np.zeros((size, size), bool)
    for cls, _, win in reversed(objects):  # the topmost object first
        visible = win & ~covered
        covered |= win
        ys, xs = np.nonzero(visible)
        if len(xs) < MIN_VISIBLE:
            continue
        polys = mask_to_polygons(visible)
        if not polys:
            continue
        box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
        out.append((cls, box, polys, int(len(xs))))
    return img, out[::-1]


def make_shapes_instances(root: Union[str, Path], num_train: int = 800, num_val: int = 200, image_size: int = 128,
                          seed: int = 0, overwrite: bool = False) -> Path:
    """Write the set to ``root`` (COCO layout, see the module doc) and return ``root``.

    An existing set made with the same arguments is kept as it is (unless ``overwrite``); a non-empty
    folder that is not a generated set is refused (``FileExistsError``), never overwritten.
    """
    def render(rng: np.random.Generator, size: int):
        img, objects = render_inst_sample(rng, size)
        return img, [dict(category_id=cls + 1, bbox=[x1, y1, x2 - x1, y2 - y1], area=area, segmentation=polys,
                          iscrowd=0) for cls, (x1, y1, x2, y2), polys, area in objects]
    return write_coco_set(root, 'shapes_instances', INST_CLASSES, num_train, num_val, image_size, seed, render,
                          'localvision shapes instances', GENERATOR_VERSION, overwrite)
