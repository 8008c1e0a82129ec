"""The generated instance-segmentation set (polygon masks, seed-reproducible) and the mask checks
of the COCO data sets (one clear error naming the file and the record)."""
import json

import numpy as np
import pytest

from localvision.datasets.synthetic_inst import INST_CLASSES, make_shapes_instances, mask_to_polygons
from localvision.det.datasets import check_coco_annotations
from localvision.errors import InputError

SIZE = 64


@pytest.fixture(scope='module')
def inst_root(tmp_path_factory):
    return make_shapes_instances(tmp_path_factory.mktemp('inst') / 'set', num_train=6, num_val=3, image_size=SIZE,
                                 seed=3)


def _coco(root, split='train'):
    return json.loads((root / f'annotations/instances_{split}.json').read_text())


def test_generator_is_reproducible_and_the_det_set_with_masks(inst_root, tmp_path):
    from localvision.datasets.synthetic_det import make_shapes_detection
    again = make_shapes_instances(tmp_path / 'again', num_train=6, num_val=3, image_size=SIZE, seed=3)
    other = make_shapes_instances(tmp_path / 'other', num_train=6, num_val=3, image_size=SIZE, seed=4)
    det = make_shapes_detection(tmp_path / 'det', num_train=6, num_val=3, image_size=SIZE, seed=3)
    for rel in ('images/train/00004.png', 'annotations/instances_train.json', 'annotations/instances_val.json'):
        assert (inst_root / rel).read_bytes() == (again / rel).read_bytes()
    assert (inst_root / 'images/train/00000.png').read_bytes() != (other / 'images/train/00000.png').read_bytes()
    # the same images as the detection set of the same seed
    assert (inst_root / 'images/val/00002.png').read_bytes() == (det / 'images/val/00002.png').read_bytes()
    coco = _coco(inst_root)
    assert [c['name'] for c in coco['categories']] == list(INST_CLASSES)
    assert check_coco_annotations(str(inst_root / 'annotations/instances_train.json'), INST_CLASSES,
                                  check_masks=True)['annotations'] == len(coco['annotations']) >= 6


def test_polygons_rasterise_to_the_visible_pixels(inst_root):
    """pycocotools (mmdet's poly2mask and CocoMetric) turns each polygon list back into exactly the
    object's visible pixels: the annotated area, inside the tight box."""
    from pycocotools import mask as mask_utils
    coco = _coco(inst_root)
    for ann in coco['annotations']:
        rle = mask_utils.merge(mask_utils.frPyObjects(ann['segmentation'], SIZE, SIZE))
        m = mask_utils.decode(rle)
        assert int(m.sum()) == ann['area'] > 0
        ys, xs = np.nonzero(m)
        x, y, w, h = ann['bbox']
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)


def test_mask_to_polygons_cuts_holes():
    yy, xx = np.mgrid[0:40, 0:40] + 0.5
    r = np.hypot(xx - 20, yy - 20)
    ring = (r <= 15) & (r >= 8)
    two = np.zeros((40, 40), bool)
    two[2:8, 2:8] = two[20:30, 25:35] = True
    from pycocotools import mask as mask_utils
    for mask in (ring, two):
        polys = mask_to_polygons(mask)
        assert all(len(p) >= 6 and len(p) % 2 == 0 for p in polys)
        back = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, 40, 40))).astype(bool)
        assert np.array_equal(back, mask)
    assert len(mask_to_polygons(two)) == 2 and mask_to_polygons(np.zeros((8, 8), bool)) == []


def _edited(root, tmp_path, edit):
    coco = _coco(root)
    edit(coco)
    path = tmp_path / 'instances_train.json'
    path.write_text(json.dumps(coco))
    return str(path)


def _error(path, masks=True):
    with pytest.raises(InputError) as e:
        check_coco_annotations(path, INST_CLASSES, check_masks=masks)
    msg = str(e.value)
    assert msg.startswith(f'annotation file {path}: annotation id=') and '\n' not in msg
    return msg


def test_empty_polygons_are_one_error(inst_root, tmp_path):
    def empty_list(coco):
        coco['annotations'][2]['segmentation'] = []
    msg = _error(_edited(inst_root, tmp_path, empty_list))
    assert 'annotation id=3 (image id=' in msg and ".png'" in msg and 'empty segmentation ([])' in msg

    def empty_polygon(coco):
        coco['annotations'][0]['segmentation'] = [[]]
    assert 'empty polygon' in _error(_edited(inst_root, tmp_path, empty_polygon))

    def two_points(coco):
        coco['annotations'][1]['segmentation'] = [[10.0, 10.0, 20.0, 20.0]]
    assert 'no segmentation polygon has 3 points' in _error(_edited(inst_root, tmp_path, two_points))

    def no_key(coco):
        del coco['annotations'][1]['segmentation']
    assert 'has no "segmentation"' in _error(_edited(inst_root, tmp_path, no_key))


def test_mask_outside_its_image_or_box_is_one_error(inst_root, tmp_path):
    def outside(coco):
        coco['annotations'][0]['segmentation'] = [[10.0, 10.0, 90.0, 10.0, 50.0, 40.0]]
    assert f'outside the {SIZE}x{SIZE} image' in _error(_edited(inst_root, tmp_path, outside))

    def elsewhere(coco):  # a valid polygon, but not where the box is
        ann = coco['annotations'][0]
        x, y, w, h = ann['bbox']
        ann['segmentation'] = [[float(v) for v in (x + w + 1, y, x + w + 6, y, x + w + 6, y + 5)]]
    msg = _error(_edited(inst_root, tmp_path, elsewhere))
    assert 'annotation id=1 ' in msg and 'mask that does not match its box' in msg

    def shrunk_box(coco):  # the box much smaller than the mask
        ann = coco['annotations'][0]
        x, y, w, h = ann['bbox']
        ann['bbox'] = [x, y, w / 3, h / 3]
    assert 'does not match its box' in _error(_edited(inst_root, tmp_path, shrunk_box))

    def rle_wrong_size(coco):
        from pycocotools import mask as mask_utils
        m = np.zeros((SIZE // 2, SIZE), np.uint8, order='F')
        m[2:6, 2:6] = 1
        rle = mask_utils.encode(m)
        coco['annotations'][0]['segmentation'] = dict(size=rle['size'], counts=rle['counts'].decode())
    assert f'does not match its {SIZE}x{SIZE} image' in _error(_edited(inst_root, tmp_path, rle_wrong_size))


def test_rle_masks_are_checked_like_polygons(inst_root, tmp_path):
    from pycocotools import mask as mask_utils

    def to_rle(coco):
        for ann in coco['annotations']:
            rle = mask_utils.merge(mask_utils.frPyObjects(ann['segmentation'], SIZE, SIZE))
            ann['segmentation'] = dict(size=rle['size'], counts=rle['counts'].decode())
    check_coco_annotations(_edited(inst_root, tmp_path, to_rle), INST_CLASSES, check_masks=True)

    def empty_rle(coco):
        to_rle(coco)
        m = np.zeros((SIZE, SIZE), np.uint8, order='F')
        rle = mask_utils.encode(m)
        coco['annotations'][1]['segmentation'] = dict(size=rle['size'], counts=rle['counts'].decode())
    assert 'annotation id=2 ' in (msg := _error(_edited(inst_root, tmp_path, empty_rle))) and 'empty mask' in msg


def test_masks_are_checked_only_where_they_are_loaded(inst_root, tmp_path):
    """A detection pipeline ignores the masks (COCO's own json has them); a pipeline with
    LoadAnnotations(with_mask=True) checks them when the data set is built."""
    from mmengine.registry import init_default_scope

    import localvision.det  # noqa: F401
    from mmdet.registry import DATASETS

    def empty(coco):
        coco['annotations'][2]['segmentation'] = []
    bad = _edited(inst_root, tmp_path, empty)
    check_coco_annotations(bad, INST_CLASSES)  # detection: fine
    init_default_scope('mmdet')
    common = dict(type='ShapesInstDataset', data_root=str(inst_root), ann_file=bad,
                  data_prefix=dict(img='images/train/'))
    DATASETS.build(dict(common, pipeline=[dict(type='LoadAnnotations', with_bbox=True)]))
    with pytest.raises(InputError, match='annotation id=3 .*empty segmentation'):
        DATASETS.build(dict(common, pipeline=[dict(type='LoadAnnotations', with_bbox=True, with_mask=True)]))
    with pytest.raises(InputError, match='empty segmentation'):
        DATASETS.build(dict(common, check_masks=True, pipeline=[]))
