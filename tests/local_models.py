"""Tiny instances of every local task model, for the tests that must hold for all of them.

:func:`local_model_classes` finds the task models in the registries (localvision's, mmpretrain's,
mmseg's and mmdet's ``MODELS``): every registered class following the units contract. :data:`TINY` holds,
per class name, a tiny config (real mmseg / mmdet heads, timm backbone), its registry scope, a
batch maker and the stock library's loss of the same network (the end-to-end reference). A task
model registered without an entry here fails ``test_every_local_model_has_a_tiny_instance``.
"""
from __future__ import annotations

import copy
import socket
from typing import Callable, Dict, List, NamedTuple

import torch
from mmengine.structures import InstanceData, PixelData

SIZE = 64
BN = dict(type='BN', requires_grad=True)


def local_model_classes() -> Dict[str, type]:
    """``{class name: class}`` of every registered model that follows the units contract."""
    import localvision.cls  # noqa: F401  (registers in mmpretrain's registries)
    import localvision.det  # noqa: F401  (registers in mmdet's registries)
    import localvision.models  # noqa: F401
    import localvision.seg  # noqa: F401  (registers in mmseg's registries)
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    from mmseg.registry import MODELS as MMSEG_MODELS

    from localvision.registry import MODELS as LV_MODELS
    from localvision.structures import is_local_model
    found = {}
    for registry in (LV_MODELS, MMPRETRAIN_MODELS, MMSEG_MODELS, MMDET_MODELS):
        for name, cls in registry.module_dict.items():
            if isinstance(cls, type) and is_local_model(cls) and hasattr(cls, 'task_heads'):
                found[name] = cls
    return found


def task_model_params(quick: str = 'LocalImageClassifier') -> list:
    """Every task model's name for ``pytest.mark.parametrize``: ``quick`` in the quick set
    (``pytest -m "not slow"``), the others marked slow."""
    import pytest
    return [n if n == quick else pytest.param(n, marks=pytest.mark.slow) for n in sorted(local_model_classes())]


def free_port() -> int:
    """A free TCP port on localhost (for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# -- batches -------------------------------------------------------------------------------------
def _images(n: int, seed: int, size: int = SIZE) -> List[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8) for _ in range(n)]


def cls_batch(n: int = 4, seed: int = 0) -> dict:
    from mmpretrain.structures import DataSample
    return dict(inputs=_images(n, seed, 32), data_samples=[DataSample().set_gt_label(i % 4) for i in range(n)])


def seg_batch(n: int = 4, seed: int = 0) -> dict:
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(seed + 100)
    samples = []
    for _ in range(n):
        ds = SegDataSample()
        ds.gt_sem_seg = PixelData(data=torch.randint(0, 4, (1, SIZE, SIZE), generator=g))
        ds.set_metainfo(dict(img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE), pad_shape=(SIZE, SIZE)))
        samples.append(ds)
    return dict(inputs=_images(n, seed), data_samples=samples)


def det_batch(n: int = 4, seed: int = 0, masks: bool = False) -> dict:
    """Three boxes per image; with ``masks`` each box's instance mask too (an ellipse in the box)."""
    from mmdet.structures import DetDataSample
    samples = []
    for i in range(n):
        gi = InstanceData()
        gi.bboxes = torch.tensor([[4.0, 6.0, 30.0, 40.0], [30.0, 20.0, 60.0, 50.0], [10.0, 40.0, 26.0, 60.0]])
        gi.labels = torch.tensor([0, 1, 2])
        if masks:
            gi.masks = box_masks(gi.bboxes, SIZE)
        ds = DetDataSample()
        ds.gt_instances = gi
        ds.set_metainfo(dict(img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE), pad_shape=(SIZE, SIZE),
                             scale_factor=(1.0, 1.0), img_id=i))
        samples.append(ds)
    return dict(inputs=_images(n, seed), data_samples=samples)


def box_masks(boxes: torch.Tensor, size: int):
    """mmdet ``BitmapMasks``: the ellipse inscribed in each box."""
    import numpy as np
    from mmdet.structures.mask import BitmapMasks
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    out = np.zeros((len(boxes), size, size), np.uint8)
    for j, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
        out[j] = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    return BitmapMasks(out, size, size)


def inst_batch(n: int = 4, seed: int = 0) -> dict:
    return det_batch(n, seed, masks=True)


# -- tiny configs ------------------------------------------------------------------------------------
def cls_cfg(k: int) -> dict:
    return dict(type='LocalImageClassifier',
                data_preprocessor=dict(type='ImgDataPreprocessor', mean=[127.5] * 3, std=[64.0] * 3),
                backbone=dict(type='StagedTimm', model_name='cifar_resnet20'),
                head=dict(type='LinearClsHead', num_classes=4, loss=dict(type='CrossEntropyLoss')),
                split=dict(num_modules=k, strategy='equal', input_size=(3, 32, 32)),
                local_objective=dict(type='InfoPro', lambda_recon=1.0, lambda_task=1.0,
                                     head=dict(type='PoolLinearHead')))


def seg_cfg(k: int) -> dict:
    return dict(
        type='LocalEncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                               bgr_to_rgb=True, size=(SIZE, SIZE), pad_val=0, seg_pad_val=255),
        backbone=dict(type='StagedTimm', model_name='resnet18d', output_stride=8, out_stages=(1, 2, 3, 4)),
        split=dict(num_modules=k, strategy='equal', input_size=(3, SIZE, SIZE)),
        local_objective=dict(type='InfoProSeg', head=dict(type='SegAuxHead', channels=8, dropout=0.0),
                             decoder=dict(type='ProgressiveDecoder', widths=(8, 8, 4))),
        decode_head=dict(type='ASPPHead', in_index=3, channels=8, dilations=(1, 2), dropout_ratio=0.0,
                         num_classes=4, norm_cfg=BN, align_corners=False),
        auxiliary_head=dict(type='FCNHead', in_index=2, channels=8, num_convs=1, concat_input=False,
                            dropout_ratio=0.0, num_classes=4, norm_cfg=BN, align_corners=False,
                            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
        train_cfg=dict(), test_cfg=dict(mode='whole'))


def _det_common(k: int) -> dict:
    return dict(
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                               bgr_to_rgb=True, pad_size_divisor=32),
        backbone=dict(type='StagedTimm', model_name='resnet18', out_stages=(1, 2, 3, 4)),
        neck=dict(type='FPN', in_channels=[64, 128, 256, 512], out_channels=16, start_level=1,
                  add_extra_convs='on_input', num_outs=5),
        split=dict(num_modules=k, strategy='equal', input_size=(3, SIZE, SIZE)),
        local_objective=dict(type='InfoProDet', head=dict(type='DenseDetAuxHead', channels=8)))


def retinanet_cfg(k: int) -> dict:
    cfg = _det_common(k)
    cfg.update(
        type='LocalSingleStageDetector',
        bbox_head=dict(type='RetinaHead', num_classes=3, in_channels=16, stacked_convs=1, feat_channels=16,
                       anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
                                             ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
                       bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                                       target_stds=[1.0, 1.0, 1.0, 1.0]),
                       loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
                       loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                                     ignore_iof_thr=-1),
                       sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1, debug=False),
        test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                      max_per_img=20))
    return cfg


def two_stage_cfg(k: int, mask: bool = True) -> dict:
    """The two-stage detector: Mask R-CNN from ``configs/det/mask_rcnn_r50_infopro_k4.py`` (its
    local objective with the mask term), or Faster R-CNN (``mask=False``); both are
    ``LocalTwoStageDetector``, the tiny instance of the registry-derived tests is the Mask R-CNN."""
    from mmengine.config import Config
    import os.path as osp
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    name = 'mask_rcnn_r50_infopro_k4.py' if mask else 'faster_rcnn_r50_infopro_k4.py'
    base = Config.fromfile(osp.join(root, 'configs/det', name)).model.to_dict()
    cfg = _det_common(k)
    cfg.update(type='LocalTwoStageDetector', rpn_head=base['rpn_head'], roi_head=base['roi_head'],
               train_cfg=base['train_cfg'], test_cfg=base['test_cfg'])
    cfg['rpn_head'].update(in_channels=16, feat_channels=16)
    cfg['roi_head']['bbox_roi_extractor']['out_channels'] = 16
    cfg['roi_head']['bbox_head'].update(in_channels=16, fc_out_channels=32, num_classes=3)
    cfg['train_cfg']['rpn_proposal'].update(nms_pre=200, max_per_img=100)
    cfg['train_cfg']['rcnn']['sampler']['num'] = 64
    cfg['test_cfg']['rpn'].update(nms_pre=200, max_per_img=50)
    if mask:
        cfg['data_preprocessor']['pad_mask'] = True
        cfg['roi_head']['mask_roi_extractor']['out_channels'] = 16
        cfg['roi_head']['mask_head'].update(num_convs=1, in_channels=16, conv_out_channels=8, num_classes=3)
        cfg['test_cfg']['rcnn']['max_per_img'] = 20
        cfg['local_objective']['mask_weight'] = base['local_objective']['mask_weight']
    return cfg


def faster_rcnn_cfg(k: int) -> dict:
    return two_stage_cfg(k, mask=False)


def mask_rcnn_cfg(k: int) -> dict:
    return two_stage_cfg(k, mask=True)


def _cls_reference(model, data: dict) -> Dict[str, torch.Tensor]:
    """Plain classification: the whole timm model (pooled features) and the mmpretrain head's loss."""
    data = model.data_preprocessor(data, True)
    return {'loss_cls': model.head.loss((model.backbone.model(data['inputs']),), data['data_samples'])['loss']}


def _stock_reference(base: type) -> Callable:
    """The stock library's ``loss`` (mmseg EncoderDecoder, mmdet detectors) of the same network."""
    def reference(model, data: dict) -> Dict[str, torch.Tensor]:
        data = model.data_preprocessor(data, True)
        return base.loss(model, data['inputs'], data['data_samples'])
    return reference


class Tiny(NamedTuple):
    cfg: Callable[[int], dict]
    scope: str
    batch: Callable[..., dict]
    reference: Callable  # (model, data) -> losses of plain end-to-end training


def _tiny() -> Dict[str, Tiny]:
    local_model_classes()  # registers the task models
    from mmdet.models.detectors.single_stage import SingleStageDetector
    from mmdet.models.detectors.two_stage import TwoStageDetector
    from mmseg.models.segmentors import EncoderDecoder
    return {
        'LocalImageClassifier': Tiny(cls_cfg, 'mmpretrain', cls_batch, _cls_reference),
        'LocalEncoderDecoder': Tiny(seg_cfg, 'mmseg', seg_batch, _stock_reference(EncoderDecoder)),
        'LocalSingleStageDetector': Tiny(retinanet_cfg, 'mmdet', det_batch, _stock_reference(SingleStageDetector)),
        # Mask R-CNN (a TwoStageDetector with a mask head; Faster R-CNN is the same class without it)
        'LocalTwoStageDetector': Tiny(mask_rcnn_cfg, 'mmdet', inst_batch, _stock_reference(TwoStageDetector)),
    }


TINY: Dict[str, Tiny] = {}


def tiny(name: str) -> Tiny:
    if not TINY:
        TINY.update(_tiny())
    return TINY[name]


def build(name: str, k: int, seed: int = 0, **overrides):
    """A tiny instance of task model ``name`` split into ``k`` modules (deterministic weights)."""
    from mmengine.registry import MODELS, init_default_scope
    t = tiny(name)
    cfg = copy.deepcopy(t.cfg(k))
    for key, value in overrides.items():
        target = cfg
        *path, last = key.split('.')
        for p in path:
            target = target[p]
        target[last] = value
    init_default_scope(t.scope)
    torch.manual_seed(seed)
    with MODELS.switch_scope_and_registry(t.scope) as registry:
        model = registry.build(cfg)
    if hasattr(model, 'init_weights'):
        model.init_weights()
    return model
