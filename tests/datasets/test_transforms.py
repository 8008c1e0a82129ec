import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.model import ImgDataPreprocessor

from localvision.datasets.transforms import PackClsInputs, RandomCrop, RandomResizedCrop
from localvision.registry import TRANSFORMS
from localvision.structures import ClsDataSample


def _img(h=32, w=32):
    return np.random.RandomState(0).randint(0, 256, (h, w, 3)).astype(np.uint8)


def test_random_crop_pads_then_crops():
    img = _img()
    np.random.seed(1)
    out = RandomCrop(32, padding=4)(dict(img=img.copy()))
    assert out['img'].shape == (32, 32, 3) and out['img_shape'] == (32, 32)
    # the crop is a shifted window of the padded image: every row is the original or padding
    padded = np.pad(img, ((4, 4), (4, 4), (0, 0)))
    windows = [padded[y:y + 32, x:x + 32] for y in range(9) for x in range(9)]
    assert any(np.array_equal(out['img'], w) for w in windows)


def test_random_crop_rect_size_modes_and_small_image():
    out = RandomCrop((8, 12))(dict(img=_img()))
    assert out['img'].shape == (8, 12, 3)
    out = RandomCrop(40, padding=2, padding_mode='reflect')(dict(img=_img()))
    assert out['img'].shape == (40, 40, 3)
    out = RandomCrop(32, padding=4, pad_val=(1, 2, 3))(dict(img=np.zeros((4, 4, 3), np.uint8)))
    assert out['img'].shape == (32, 32, 3) and (out['img'][0, 0] == (1, 2, 3)).all()
    with pytest.raises(ValueError):
        RandomCrop(32, padding_mode='wrap')


def test_randomness_follows_numpy_global_seed():
    crop = RandomCrop(24, padding=4)
    rrc = RandomResizedCrop(16)
    np.random.seed(123)
    a = [crop(dict(img=_img()))['img'], rrc(dict(img=_img()))['img']]
    np.random.seed(123)
    b = [crop(dict(img=_img()))['img'], rrc(dict(img=_img()))['img']]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_random_resized_crop_shapes_and_fallback():
    out = RandomResizedCrop((20, 24))(dict(img=_img(50, 70)))
    assert out['img'].shape == (20, 24, 3) and out['img'].dtype == np.uint8
    # impossible ratios force the centre-crop fallback, still the right size
    out = RandomResizedCrop(16, aspect_ratio_range=(10., 20.), max_attempts=2)(dict(img=_img(32, 32)))
    assert out['img'].shape == (16, 16, 3)
    with pytest.raises(ValueError):
        RandomResizedCrop(16, crop_ratio_range=(0.5, 2.0))


def test_pack_cls_inputs_feeds_img_data_preprocessor():
    img = _img(8, 10)
    packed = PackClsInputs()(dict(img=img, gt_label=3, img_path='a.png', ori_shape=(9, 11), img_shape=(8, 10)))
    inputs, sample = packed['inputs'], packed['data_samples']
    assert inputs.dtype == torch.uint8 and inputs.shape == (3, 8, 10) and inputs.is_contiguous()
    assert torch.equal(inputs, torch.from_numpy(img).permute(2, 0, 1))
    assert isinstance(sample, ClsDataSample)
    assert sample.gt_label.tolist() == [3] and sample.gt_label.dtype == torch.long
    assert sample.img_path == 'a.png' and sample.ori_shape == (9, 11) and sample.img_shape == (8, 10)

    batch = pseudo_collate([packed, PackClsInputs()(dict(img=img, gt_label=1))])
    out = ImgDataPreprocessor(mean=(0, 0, 0), std=(255, 255, 255))(batch)
    assert out['inputs'].shape == (2, 3, 8, 10) and out['inputs'].dtype == torch.float32
    assert [s.gt_label.item() for s in out['data_samples']] == [3, 1]


def test_pack_without_label_and_grey_image():
    packed = PackClsInputs()(dict(img=np.zeros((5, 6), np.uint8)))
    assert packed['inputs'].shape == (1, 5, 6)
    assert 'gt_label' not in packed['data_samples'] and packed['data_samples'].img_shape == (5, 6)


def test_registry_builds_own_and_mmcv_transforms():
    pipeline = [TRANSFORMS.build(cfg) for cfg in (dict(type='RandomCrop', size=32, padding=4),
                                                  dict(type='RandomFlip', prob=1.0, direction='horizontal'),
                                                  dict(type='PackClsInputs'))]
    results = dict(img=_img(), gt_label=0)
    for t in pipeline:
        results = t(results)
    assert results['inputs'].shape == (3, 32, 32)
