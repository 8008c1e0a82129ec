"""COCO-format detection data sets with annotation checks (registered in mmdet's DATASETS).

:func:`check_coco_annotations` reads a COCO json and raises one clear error naming the file and
the record for what would otherwise fail deep inside training (or silently train on garbage):
a missing or empty annotation file, no images, a box outside its image (or with no area), a
category id that is not one of the data set's classes; and, when the data set loads masks
(instance segmentation: ``LoadAnnotations(with_mask=True)`` in its pipeline), a missing or empty
``segmentation`` (no polygon, or polygons without area), a polygon or RLE mask that leaves its image
or does not match its box.
"""
from __future__ import annotations

import json
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from localvision.datasets.synthetic_det import DEMO_DET_COMMAND, DEMO_DET_DIRNAME, DET_CLASSES, DET_PALETTE
from localvision.datasets.synthetic_inst import DEMO_INST_COMMAND, DEMO_INST_DIRNAME, INST_CLASSES, INST_PALETTE
from localvision.errors import InputError, MissingDataError

BOX_TOLERANCE = 1.0  # pixels a box may reach past the image border (rounding in converted sets)
MASK_BOX_MIN_IOU = 0.5  # a mask's extent and its box must overlap at least this much (IoU)


def _hint(path: str) -> str:
    for dirname, command in ((DEMO_DET_DIRNAME, DEMO_DET_COMMAND), (DEMO_INST_DIRNAME, DEMO_INST_COMMAND)):
        if dirname in str(path):
            return f'; generate it with `{command}`'
    return ''


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def _mask_extent(seg, W: float, H: float) -> Tuple[Optional[List[float]], Optional[str]]:
    """``([x1, y1, x2, y2] of the mask, None)``, or ``(None, what is wrong)``. Polygons: the
    extent of their points (polygons with under 3 points are skipped, as mmdet's
    ``LoadAnnotations`` skips them); RLE: pycocotools' box of the decoded mask."""
    if isinstance(seg, dict):
        size, counts = seg.get('size'), seg.get('counts')
        if not (isinstance(size, (list, tuple)) and len(size) == 2) or not isinstance(counts, (list, str, bytes)):
            return None, f'has an RLE segmentation without "size" [h, w] and "counts": {str(seg)[:80]}'
        if [int(size[0]), int(size[1])] != [int(H), int(W)]:
            return None, (f'has an RLE mask of size [h, w]={list(size)}, which does not match its {int(W)}x{int(H)} '
                          'image')
        from pycocotools import mask as mask_utils
        try:
            rle = mask_utils.frPyObjects(seg, int(H), int(W)) if isinstance(counts, list) else seg
            area = float(mask_utils.area(rle))
            x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
        except Exception as e:  # noqa: BLE001  (pycocotools raises plain exceptions on bad counts)
            return None, f'has an RLE mask pycocotools cannot decode ({e})'
        if area <= 0:
            return None, 'has an empty mask (RLE with no pixel set)'
        return [x, y, x + w, y + h], None
    if not isinstance(seg, list) or not seg:
        return None, (f'has an empty segmentation ({seg!r}): no polygon; give [[x1, y1, x2, y2, x3, y3, ...], ...] '
                      'or an RLE dict, or drop the annotation')
    xs: List[float] = []
    ys: List[float] = []
    for k, poly in enumerate(seg):
        if not isinstance(poly, list) or not all(isinstance(v, (int, float)) for v in poly):
            return None, f'has segmentation polygon {k} that is not a list of numbers: {str(poly)[:80]}'
        if not poly:
            return None, f'has an empty polygon (segmentation polygon {k} is [])'
        if len(poly) % 2:
            return None, (f'has segmentation polygon {k} with an odd number of coordinates ({len(poly)}); '
                          'expected x, y pairs')
        if len(poly) < 6:
            continue
        xs += poly[0::2]
        ys += poly[1::2]
    if not xs:
        return None, 'has an empty mask: no segmentation polygon has 3 points or more'
    x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return None, 'has an empty mask: its polygons enclose no area'
    t = BOX_TOLERANCE
    if x1 < -t or y1 < -t or x2 > W + t or y2 > H + t:
        return None, (f'has a mask polygon reaching [x1, y1, x2, y2]={[x1, y1, x2, y2]} outside the {int(W)}x{int(H)} '
                      'image')
    return [x1, y1, x2, y2], None


def check_coco_annotations(ann_file: str, classes: Sequence[str], check_masks: bool = False) -> Dict[str, int]:
    """Validate a COCO detection json against the class list; returns counts.

    Raises :class:`MissingDataError` when the file does not exist and :class:`InputError` when it
    is empty or not COCO, has no images, a box outside its image or without area, an annotation
    of an unknown image, or a category id not in ``classes`` (by the categories' names).

    With ``check_masks`` (instance segmentation) every annotation that is not a crowd region must
    also have a mask (``segmentation``: polygons or RLE) that is not empty, lies in its image and
    matches its box (its extent inside the box, up to ``BOX_TOLERANCE`` pixels, and overlapping it
    with IoU >= ``MASK_BOX_MIN_IOU``).
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
        if check_masks:
            if 'segmentation' not in ann:
                raise InputError(f'annotation file {ann_file}: {where} has no "segmentation" (its mask); instance '
                                 'segmentation needs polygons or an RLE mask per annotation')
            extent, why = _mask_extent(ann['segmentation'], W, H)
            if why is not None:
                raise InputError(f'annotation file {ann_file}: {where} {why}')
            box = [x, y, x + w, y + h]
            inside = (extent[0] >= box[0] - t and extent[1] >= box[1] - t and extent[2] <= box[2] + t
                      and extent[3] <= box[3] + t)
            if not inside or _box_iou(extent, box) < MASK_BOX_MIN_IOU:
                ext = [round(v, 2) for v in extent]
                raise InputError(f'annotation file {ann_file}: {where} has a mask that does not match its box: the '
                                 f'mask spans [x1, y1, x2, y2]={ext}, the bbox [x, y, w, h]={list(bbox)} is '
                                 f'{[round(v, 2) for v in box]}; the box must be the mask\'s bounding box')
    return dict(images=len(images), annotations=len(coco['annotations']))


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """mmdet's CocoDataset that checks its annotation file before loading it (see
    :func:`check_coco_annotations`): bad input is one :class:`InputError` naming the file and
    the record, raised when the data set is built, before training starts.

    Args:
        check_annotations: run the checks (on by default).
        check_masks: check the masks too; default: when the pipeline loads them
            (``LoadAnnotations(with_mask=True)``).
    """

    def __init__(self, *args, check_annotations: bool = True, check_masks: Optional[bool] = None, **kwargs) -> None:
        self.check_annotations = check_annotations
        self.check_masks = check_masks
        super().__init__(*args, **kwargs)

    def loads_masks(self) -> bool:
        """Whether the pipeline loads instance masks."""
        return any(type(t).__name__ == 'LoadAnnotations' and getattr(t, 'with_mask', False)
                   for t in getattr(getattr(self, 'pipeline', None), 'transforms', []))

    def load_data_list(self):
        if self.check_annotations:
            masks = self.loads_masks() if self.check_masks is None else self.check_masks
            check_coco_annotations(self.ann_file, self.metainfo['classes'], check_masks=masks)
        img_dir = self.data_prefix.get('img', None)
        if img_dir and not osp.isdir(img_dir):
            raise MissingDataError(f'image folder {img_dir} does not exist (data_root={self.data_root!r})'
                                   f'{_hint(img_dir)}')
        return super().load_data_list()


@DATASETS.register_module()
class ShapesDetDataset(CheckedCocoDataset):
    """The generated shapes detection set (``python tools/misc/make_demo_data.py det``), COCO json."""

    METAINFO = dict(classes=DET_CLASSES, palette=DET_PALETTE)


@DATASETS.register_module()
class ShapesInstDataset(CheckedCocoDataset):
    """The generated shapes instance-segmentation set (``python tools/misc/make_demo_data.py inst``):
    the detection set's images with a polygon mask per object, COCO json."""

    METAINFO = dict(classes=INST_CLASSES, palette=INST_PALETTE)
