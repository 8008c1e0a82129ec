"""Object detection (mmdet 3.x) with a timm backbone split into K gradient-isolated modules.

:class:`LocalSingleStageDetector` (RetinaNet, FCOS, any single-stage ``bbox_head``) and
:class:`LocalTwoStageDetector` (Faster R-CNN, and Mask R-CNN when ``roi_head`` has a ``mask_head``:
``rpn_head`` + ``roi_head``) share
:class:`LocalDetectorMixin`: the backbone is a :class:`~localvision.models.split.StagedTimm`;
module k < K-1 is trained by its local objective (``InfoProDet`` / ``DetGreedy``) on its own
output map; the last module is trained by the neck and the detection head(s). The neck (FPN)
reads several backbone levels (the outputs of the backbone stages in ``backbone.out_stages``, or
of the blocks in ``backbone.out_blocks``); levels produced by earlier modules are stored **detached** (and only when the
neck reads them), so each earlier module is trained by its own local loss only, and its graph is
freed right after its backward (``PerModuleBackward``). K=1 is plain end-to-end training of the
same network through the same code.

``predict`` / ``tensor`` modes are mmdet's, on :meth:`extract_feat` = the plain backbone path and
the neck (no auxiliary nets).
"""
from __future__ import annotations

import copy
from abc import abstractmethod
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from mmengine.config import ConfigDict
from mmdet.models.detectors.base import BaseDetector
from mmdet.models.detectors.single_stage import SingleStageDetector
from mmdet.models.detectors.two_stage import TwoStageDetector
from mmdet.registry import MODELS

from localvision.det.export import MmdetExport
from localvision.errors import InputError
from localvision.models.local_model import LocalLearningModel, TaskHead
from localvision.structures.local_context import LocalContext

Tensor = torch.Tensor


class LocalDetectorMixin(LocalLearningModel):
    """What RetinaNet / FCOS / Faster R-CNN tell the local-learning mechanism: the neck and the
    detection head(s) form one head trained by the last unit, reading the levels the neck reads;
    the targets of the local objectives are each image's ``(boxes, labels)``.

    Backbone config (``model.backbone``): ``dict(type='StagedTimm', model_name=..., pretrained=False,
    out_stages=(1, 2, 3, 4), frozen_stages=-1, norm_eval=False, **timm_kwargs)``. ``frozen_stages``
    (mmdet's meaning: -1 none, 0 the stem, s the stem and stages 1..s) and ``norm_eval`` default to
    -1 / False: right for training from scratch, where BN statistics must be learned and nothing is
    pretrained to freeze.
    """

    greedy_objective = dict(type='DetGreedy')
    stock_export = MmdetExport

    def _fill_neck(self, neck: Optional[dict]) -> Optional[dict]:
        """``neck.in_channels`` follows the backbone levels (swapping the backbone is one line)."""
        if neck is None:
            raise InputError('model.neck is required: the detection heads read the neck outputs')
        neck = copy.deepcopy(dict(neck))
        chans = self.backbone.level_channels()
        if isinstance(neck.get('in_channels'), (list, tuple)):
            neck['in_channels'] = chans
        elif 'in_channels' in neck:
            neck['in_channels'] = chans[-1]
        return neck

    @abstractmethod
    def _task_modules(self) -> List[nn.Module]:
        """The detection heads (trained with the neck by the last unit)."""

    def levels_read_by_neck(self) -> List[int]:
        """The levels the neck actually reads (FPN: ``start_level .. backbone_end_level-1``;
        SimplePyramid: the last); the others are never computed or stored."""
        n = self.backbone.num_levels
        neck = self.neck
        if hasattr(neck, 'start_level') and hasattr(neck, 'backbone_end_level'):
            return list(range(neck.start_level, neck.backbone_end_level))
        if type(neck).__name__ == 'SimplePyramid':
            return [n - 1]
        return list(range(n))

    # -- what the mechanism needs from detection ---------------------------------------------------
    def task_heads(self) -> List[TaskHead]:
        return [TaskHead('det', [self.neck] + self._task_modules(), self.levels_read_by_neck())]

    def head_loss(self, name: str, out: Tensor, feats: list, ctx: LocalContext) -> Dict[str, Tensor]:
        return self.head_losses(self.neck(feats), ctx.data_samples)

    @abstractmethod
    def head_losses(self, x, data_samples: list) -> Dict[str, Tensor]:
        """The detector's losses on the neck outputs ``x``."""

    def wants_masks(self) -> bool:
        """Whether a head or a local objective reads the instance masks (Mask R-CNN's mask head,
        ``InfoProDet(mask_weight>0)``); the split profiler's dummy samples then carry masks."""
        if getattr(getattr(self, 'roi_head', None), 'with_mask', False):
            return True
        return self._objectives_read_masks()

    def _objectives_read_masks(self) -> bool:
        return any(float(c.get('mask_weight') or 0) > 0 for c in self.objective_cfgs)

    def task_targets(self, data_samples: list, device: torch.device) -> Optional[list]:
        """Per image ``(boxes (n, 4), labels (n,))``, plus ``masks`` (n, H, W) uint8 at the batch
        input size when a local objective reads them."""
        if 'gt_instances' not in data_samples[0]:
            return None
        with_masks = self._objectives_read_masks()
        targets = []
        for ds in data_samples:
            gi = ds.gt_instances
            boxes = gi.bboxes
            boxes = boxes.tensor if hasattr(boxes, 'tensor') else boxes
            labels = gi.labels.long()
            bad = (labels < 0) | (labels >= self.num_classes)
            if bool(bad.any()):
                where = ds.metainfo.get('img_path', ds.metainfo.get('img_id', '?'))
                raise InputError(f'image {where}: labels {sorted(set(labels[bad].tolist()))} are outside the class '
                                 f'range 0..{self.num_classes - 1}; check the annotations and the head\'s num_classes')
            if with_masks:
                if 'masks' not in gi:
                    where = ds.metainfo.get('img_path', ds.metainfo.get('img_id', '?'))
                    raise InputError(f'image {where}: the local objective reads instance masks (mask_weight > 0), but '
                                     'the data samples have none; load them with LoadAnnotations(with_mask=True)')
                masks = gi.masks
                masks = masks.to_tensor(torch.uint8, device) if hasattr(masks, 'to_tensor') else masks
                targets.append((boxes.to(device).float(), labels.to(device), masks.to(device)))
            else:
                targets.append((boxes.to(device).float(), labels.to(device)))
        return targets

    def dummy_data_samples(self, n: int, device: torch.device) -> list:
        """A few boxes per image, as the data pipeline would give them (for the split's dry run);
        with their masks (the boxes filled) when :meth:`wants_masks`."""
        from mmengine.structures import InstanceData
        from mmdet.structures import DetDataSample
        from mmdet.structures.mask import BitmapMasks
        h, w = self.backbone.input_size[-2:]
        samples = []
        for _ in range(n):
            gi = InstanceData()
            gi.bboxes = torch.tensor([[w * 0.1, h * 0.1, w * 0.4, h * 0.5], [w * 0.5, h * 0.3, w * 0.9, h * 0.9],
                                      [w * 0.3, h * 0.6, w * 0.45, h * 0.75]], device=device)
            gi.labels = torch.zeros(3, dtype=torch.long, device=device)
            if self.wants_masks():
                import numpy as np
                masks = np.zeros((3, h, w), np.uint8)
                for i, (x1, y1, x2, y2) in enumerate(gi.bboxes.round().long().tolist()):
                    masks[i, y1:y2, x1:x2] = 1
                gi.masks = BitmapMasks(masks, h, w)
            ds = DetDataSample()
            ds.gt_instances = gi
            ds.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                                 scale_factor=(1.0, 1.0)))
            samples.append(ds)
        return samples

    # -- inference: the plain backbone path -------------------------------------------------------
    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor, ...]:
        return self.neck(self.extract_levels(batch_inputs, self.levels_read_by_neck())[1])


@MODELS.register_module()
class LocalSingleStageDetector(LocalDetectorMixin, SingleStageDetector):
    """A single-stage detector (RetinaNet, FCOS, ...) on a timm backbone trained as K modules.

    Args:
        backbone: ``dict(type='StagedTimm', model_name=..., pretrained=False, out_stages=(1, 2, 3, 4),
            frozen_stages=-1, norm_eval=False, **timm_kwargs)``; levels are ``out_stages``
            (layer1..layer4 of a ResNet = mmdet's ResNet ``out_indices`` 0..3) or ``out_blocks``
            (a ViT: ``(12,)``).
        neck / bbox_head / train_cfg / test_cfg / data_preprocessor: as for SingleStageDetector;
            ``neck.in_channels`` is filled in from the backbone levels.
        split: see :class:`StagedTimm` (``num_modules`` / ``cuts`` / ``strategy`` / ``input_size``).
        local_objective: one objective config for all local modules, or a list of K-1.
        context: context supply at the cuts (``dict(type='ContSup', variant='R1')``) or ``None``.
        executor: ``PerModuleBackward`` (default) or ``JointBackward``.
    """

    def __init__(self, backbone: dict, neck: Optional[dict] = None, bbox_head: Optional[dict] = None,
                 train_cfg: Optional[dict] = None, test_cfg: Optional[dict] = None, split: Optional[dict] = None,
                 local_objective: Union[dict, List[dict], None] = None, context: Optional[dict] = None,
                 executor: Optional[dict] = None, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        BaseDetector.__init__(self, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        train_cfg = ConfigDict(train_cfg) if train_cfg is not None else None
        test_cfg = ConfigDict(test_cfg) if test_cfg is not None else None
        self.init_backbone(backbone, split, executor, num_classes=0)
        self.neck = MODELS.build(self._fill_neck(neck))
        if bbox_head is None:
            raise InputError('model.bbox_head is required for LocalSingleStageDetector')
        bbox_head = copy.deepcopy(dict(bbox_head))
        bbox_head.update(train_cfg=train_cfg, test_cfg=test_cfg)
        self.bbox_head = MODELS.build(bbox_head)
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        self.init_units(local_objective, context, self.bbox_head.num_classes)

    def _task_modules(self) -> List[nn.Module]:
        return [self.bbox_head]

    def head_losses(self, x, data_samples: list) -> Dict[str, Tensor]:
        return self.bbox_head.loss(x, data_samples)


@MODELS.register_module()
class LocalTwoStageDetector(LocalDetectorMixin, TwoStageDetector):
    """A two-stage detector (Faster R-CNN; Mask R-CNN with a ``mask_head`` in the RoI head) on a
    timm backbone trained as K modules.

    The RPN and the RoI head (box and mask branches) are trained by the last module's loss, on the
    neck's outputs. mmdet's ``MaskRCNN`` is a ``TwoStageDetector`` with nothing of its own, so this
    class is both (configs inheriting ``mmdet::mask_rcnn/...`` set ``type='LocalTwoStageDetector'``).
    Arguments as :class:`LocalSingleStageDetector`, with ``rpn_head`` / ``roi_head`` as for
    mmdet's TwoStageDetector.
    """

    def __init__(self, backbone: dict, neck: Optional[dict] = None, rpn_head: Optional[dict] = None,
                 roi_head: Optional[dict] = None, train_cfg: Optional[dict] = None, test_cfg: Optional[dict] = None,
                 split: Optional[dict] = None, local_objective: Union[dict, List[dict], None] = None,
                 context: Optional[dict] = None, executor: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None) -> None:
        BaseDetector.__init__(self, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        train_cfg = ConfigDict(train_cfg) if train_cfg is not None else None
        test_cfg = ConfigDict(test_cfg) if test_cfg is not None else None
        self.init_backbone(backbone, split, executor, num_classes=0)
        self.neck = MODELS.build(self._fill_neck(neck))
        if rpn_head is None or roi_head is None:
            raise InputError('model.rpn_head and model.roi_head are required for LocalTwoStageDetector')
        rpn_head_ = copy.deepcopy(dict(rpn_head))
        rpn_head_.update(train_cfg=train_cfg.rpn if train_cfg is not None else None, test_cfg=test_cfg.rpn,
                         num_classes=1)
        self.rpn_head = MODELS.build(rpn_head_)
        roi_head = copy.deepcopy(dict(roi_head))
        roi_head.update(train_cfg=train_cfg.rcnn if train_cfg is not None else None, test_cfg=test_cfg.rcnn)
        self.roi_head = MODELS.build(roi_head)
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        self.init_units(local_objective, context, self.roi_head.bbox_head.num_classes)

    def _task_modules(self) -> List[nn.Module]:
        return [self.rpn_head, self.roi_head]

    def head_losses(self, x, data_samples: list) -> Dict[str, Tensor]:
        """TwoStageDetector.loss on given features: RPN (class-agnostic) and RoI head losses."""
        losses: Dict[str, Tensor] = {}
        proposal_cfg = self.train_cfg.get('rpn_proposal', self.test_cfg.rpn)
        rpn_data_samples = copy.deepcopy(data_samples)
        for ds in rpn_data_samples:
            ds.gt_instances.labels = torch.zeros_like(ds.gt_instances.labels)
        rpn_losses, rpn_results_list = self.rpn_head.loss_and_predict(x, rpn_data_samples,
                                                                      proposal_cfg=proposal_cfg)
        for key in list(rpn_losses.keys()):
            if 'loss' in key and 'rpn' not in key:
                rpn_losses[f'rpn_{key}'] = rpn_losses.pop(key)
        losses.update(rpn_losses)
        losses.update(self.roi_head.loss(x, rpn_results_list, data_samples))
        return losses
