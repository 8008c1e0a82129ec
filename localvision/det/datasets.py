"""COCO-format detection data sets with annotation checks (registered in mmdet's DATASETS).

:func:`check_coco_annotations` reads a COCO json and raises one clear error naming the file and
the record for what would otherwise fail deep inside training (or silently train on garbage):
a missing or empty annotation file, no images, a box outside its image (or with no area), a
category id that is not one of the data set's classes.
"""
from __future__ import annotations

import json
import os.path as osp
from typing import Dict, Sequence

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from localvision.datasets.synthetic_det import DEMO_DET_COMMAND, DEMO_DET_DIRNAME, DET_CLASSES, DET_PALETTE
from localvision.errors import InputError, MissingDataError

BOX_TOLERANCE = 1.0  # pixels a box may reach past the image border (rounding in converted sets)


def _hint(path: str) -> str:
    return f'; generate it with `{DEMO_DET_COMMAND}`' if DEMO_DET_DIRNAME in str(path) else ''


def check_coco_annotations(ann_file: str, classes: Sequence[str]) -> Dict[str, int]:
    """Validate a COCO detection json against the class list; returns counts.

    Raises :class:`MissingDataError` when the file does not exist and :class:`InputError` when it
    is empty or not COCO, has no images, a box outside its image or without area, an annotation
    of an unknown image, or a category id not in ``classes`` (by the categories' names).
    """
    if not osp.isfile(ann_file):
        raise MissingDataError(f'annotation file {ann_file} does not exist{_hint(ann_file)}')
    if osp.getsize(ann_file) == 0:
        raise InputError(f'annotation file {ann_file} is empty (0 bytes); expected a COCO json with images, '
                         'annotations and categories')
    try:
        with open(ann_file) as f:
            coco = json.load(f)
    except ValueError as e:
        raise InputError(f'annotation file {ann_file} is not valid JSON: {e}') from None
    if not isinstance(coco, dict) or not isinstance(coco.get('images'), list) \
            or not isinstance(coco.get('annotations', []), list) or not isinstance(coco.get('categories'), list):
        raise InputError(f'annotation file {ann_file} is not a COCO detection file (needs lists "images", '
                         '"annotations", "categories")')
    if not coco['images']:
        raise InputError(f'annotation file {ann_file} is empty: it lists no images')
    if not coco.get('annotations'):
        raise InputError(f'annotation file {ann_file} is empty: it lists {len(coco["images"])} images but no '
                         'annotations')
    names = {c.get('id'): c.get('name') for c in coco['categories']}
    allowed = {cid for cid, n in names.items() if n in set(classes)}
    allowed_desc = ', '.join(f'{cid} ({names[cid]})' for cid in sorted(allowed)) or 'none'
    images = {}
    for img in coco['images']:
        if 'id' not in img or 'width' not in img or 'height' not in img:
            raise InputError(f'annotation file {ann_file}: image record {img} lacks id / width / height')
        images[img['id']] = img
    for ann in coco['annotations']:
        aid = ann.get('id')
        img = images.get(ann.get('image_id'))
        if img is None:
            raise InputError(f'annotation file {ann_file}: annotation id={aid} refers to image_id='
                             f'{ann.get("image_id")}, which is not in "images"')
        where = f'annotation id={aid} (image id={img["id"]}, {img.get("file_name")!r})'
        cid = ann.get('category_id')
        if cid not in allowed:
            raise InputError(f'annotation file {ann_file}: {where} has category_id={cid!r}, which is not in the '
                             f'class list {list(classes)}; allowed category ids: {allowed_desc}')
        bbox = ann.get('bbox')
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise InputError(f'annotation file {ann_file}: {where} has bbox={bbox!r}; expected [x, y, w, h]')
        if ann.get('iscrowd', 0):
            continue
        x, y, w, h = (float(v) for v in bbox)
        W, H = float(img['width']), float(img['height'])
        t = BOX_TOLERANCE
        if w <= 0 or h <= 0 or x < -t or y < -t or x + w > W + t or y + h > H + t:
            raise InputError(f'annotation file {ann_file}: {where} has bbox [x, y, w, h]={list(bbox)} outside the '
                             f'{int(W)}x{int(H)} image (or without area); boxes must lie in 0..width x 0..height')
    return dict(images=len(images), annotations=len(coco['annotations']))


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """mmdet's CocoDataset that checks its annotation file before loading it (see
    :func:`check_coco_annotations`): bad input is one :class:`InputError` naming the file and
    the record, raised when the data set is built, before training starts.

    Args:
        check_annotations: run the checks (on by default).
    """

    def __init__(self, *args, check_annotations: bool = True, **kwargs) -> None:
        self.check_annotations = check_annotations
        super().__init__(*args, **kwargs)

    def load_data_list(self):
        if self.check_annotations:
            check_coco_annotations(self.ann_file, self.metainfo['classes'])
        img_dir = self.data_prefix.get('img', None)
        if img_dir and not osp.isdir(img_dir):
            raise MissingDataError(f'image folder {img_dir} does not exist (data_root={self.data_root!r})'
                                   f'{_hint(img_dir)}')
        return super().load_data_list()


@DATASETS.register_module()
class ShapesDetDataset(CheckedCocoDataset):
    """The generated shapes detection set (``python tools/misc/make_demo_data.py det``), COCO json."""

    METAINFO = dict(classes=DET_CLASSES, palette=DET_PALETTE)
