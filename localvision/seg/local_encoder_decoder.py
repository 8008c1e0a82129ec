"""Semantic segmentation (mmseg) with a timm backbone split into K gradient-isolated modules."""
from __future__ import annotations

from typing import Dict, List, Optional, Union

import torch
import torch.nn as nn
from mmengine.config import ConfigDict
from mmseg.models.segmentors import EncoderDecoder
from mmseg.models.segmentors.base import BaseSegmentor
from mmseg.registry import MODELS
from mmseg.utils import add_prefix

from localvision.errors import InputError
from localvision.seg.export import MmsegExport
from localvision.models.local_model import LocalLearningModel, TaskHead
from localvision.structures.local_context import LocalContext

Tensor = torch.Tensor


def _as_list(v) -> List[int]:
    return [int(i) for i in v] if isinstance(v, (list, tuple)) else [int(v)]


@MODELS.register_module()
class LocalEncoderDecoder(LocalLearningModel, EncoderDecoder):
    """mmseg's EncoderDecoder whose timm backbone is trained module by module.

    The backbone is a :class:`~localvision.models.split.StagedTimm` (any supported timm model;
    e.g. ``resnet50d`` with ``output_stride=8``) cut into K modules. Module k < K-1 is trained by
    its local objective (e.g. ``InfoProSeg``) on its output map; the last module is trained by
    the decode head (and the neck, if any). The backbone's *levels* (what the neck / decode head
    index with ``in_index``) are the outputs of the backbone stages in ``backbone.out_stages``
    (a ResNet's layer1..layer4 are ``(1, 2, 3, 4)``; stage 0 is the stem) or of the blocks in
    ``backbone.out_blocks``. Levels produced by earlier modules reach the decode head
    **detached**, so no gradient crosses a cut. An mmseg ``auxiliary_head`` (e.g. the FCN head on
    layer3) is trained in the unit that produces its levels. K=1 is plain EncoderDecoder
    training of the same network.

    ``loss`` / ``predict`` / ``tensor`` modes are EncoderDecoder's; ``predict`` runs the plain
    backbone path (with the context supply, if any) and the decode head, no auxiliary nets.

    Args:
        backbone: ``dict(type='StagedTimm', model_name=..., pretrained=False, out_stages=...,
            frozen_stages=-1, norm_eval=False, **timm_kwargs)``.
        decode_head / neck / auxiliary_head / train_cfg / test_cfg: as for EncoderDecoder; the
            heads' ``in_channels`` follow the backbone levels when there is no neck.
        split: ``dict(num_modules=K, strategy=...)`` or ``dict(cuts=[...])`` (see :class:`StagedTimm`).
        local_objective: one objective config for all local modules, or a list of K-1.
        context: context supply at the cuts (``dict(type='ContSup', variant='R1')``) or ``None``.
        executor: ``PerModuleBackward`` (default) or ``JointBackward``.
    """

    greedy_objective = dict(type='SegGreedy')
    stock_export = MmsegExport

    def __init__(self, backbone: dict, decode_head: dict, neck: Optional[dict] = None,
                 auxiliary_head: Union[dict, List[dict], None] = None, train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None, split: Optional[dict] = None,
                 local_objective: Union[dict, List[dict], None] = None, context: Optional[dict] = None,
                 executor: Optional[dict] = None, data_preprocessor: Optional[dict] = None,
                 pretrained: Optional[str] = None, init_cfg: Optional[dict] = None) -> None:
        BaseSegmentor.__init__(self, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if pretrained is not None:
            raise InputError('model.pretrained is not used by LocalEncoderDecoder; give local weights with '
                             "model.backbone.checkpoint_path='/path/to/weights.pth'")
        self.init_backbone(backbone, split, executor, num_classes=0)
        if neck is not None:
            self.neck = MODELS.build(neck)
        else:  # the heads' in_channels follow the backbone, so swapping it is one line
            decode_head = self._fill_in_channels(decode_head, 'model.decode_head')
            if isinstance(auxiliary_head, (list, tuple)):
                auxiliary_head = [self._fill_in_channels(h, f'model.auxiliary_head[{i}]')
                                  for i, h in enumerate(auxiliary_head)]
            elif auxiliary_head is not None:
                auxiliary_head = self._fill_in_channels(auxiliary_head, 'model.auxiliary_head')
        self._init_decode_head(decode_head)
        self._init_auxiliary_head(auxiliary_head)
        self.train_cfg = ConfigDict(train_cfg or {})
        self.test_cfg = ConfigDict(test_cfg or dict(mode='whole'))
        self.ignore_index = getattr(self.decode_head, 'ignore_index', 255)
        self.init_units(local_objective, context, self.num_classes)

    def _fill_in_channels(self, head: dict, field: str) -> dict:
        """``head.in_channels`` from the backbone levels its ``in_index`` reads."""
        head = dict(head)
        n, chans = self.backbone.num_levels, self.backbone.level_channels()
        idx = head.get('in_index', -1)
        bad = [i for i in _as_list(idx) if not -n <= i < n]
        if bad:
            raise InputError(f'{field}.in_index={idx} points at level(s) {bad}, but the backbone produces {n} '
                             f'levels (blocks {self.backbone.level_blocks}, channels {chans}); allowed: 0..{n - 1} '
                             '(set model.backbone.out_stages / out_blocks for other levels)')
        head['in_channels'] = [chans[i] for i in idx] if isinstance(idx, (list, tuple)) else chans[idx]
        return head

    def _aux_heads(self) -> List[nn.Module]:
        if not self.with_auxiliary_head:
            return []
        aux = self.auxiliary_head
        return list(aux) if isinstance(aux, nn.ModuleList) else [aux]

    def _aux_name(self, i: int) -> str:
        return f'aux_{i}' if isinstance(self.auxiliary_head, nn.ModuleList) else 'aux'

    # -- what the mechanism needs from segmentation ------------------------------------------
    def task_heads(self) -> List[TaskHead]:
        """With a neck: neck, decode head and auxiliary heads read every level in the last unit.
        Without: the decode head in the last unit, each auxiliary head in the unit producing the
        last level its ``in_index`` reads."""
        n = self.backbone.num_levels
        if self.with_neck:
            return [TaskHead('decode', [self.neck, self.decode_head] + self._aux_heads(), list(range(n)))]

        def levels(head: nn.Module) -> List[int]:
            return sorted({i % n for i in _as_list(getattr(head, 'in_index', -1))})
        heads = [TaskHead('decode', [self.decode_head], levels(self.decode_head))]
        heads += [TaskHead(self._aux_name(i), [h], levels(h), last=False) for i, h in enumerate(self._aux_heads())]
        return heads

    def head_loss(self, name: str, out: Tensor, feats: list, ctx: LocalContext) -> Dict[str, Tensor]:
        if name == 'decode':
            if self.with_neck:
                feats = self.neck(feats)
                losses = self._decode_head_forward_train(feats, ctx.data_samples)
                if self.with_auxiliary_head:
                    losses.update(self._auxiliary_head_forward_train(feats, ctx.data_samples))
                return losses
            return self._decode_head_forward_train(feats, ctx.data_samples)
        i = 0 if name == 'aux' else int(name.split('_')[1])
        return add_prefix(self._aux_heads()[i].loss(feats, ctx.data_samples, self.train_cfg), name)

    def objective_defaults(self) -> dict:
        return dict(ignore_index=self.ignore_index)

    def task_targets(self, data_samples: list, device: torch.device) -> Optional[Tensor]:
        if 'gt_sem_seg' not in data_samples[0]:
            return None
        targets = torch.stack([ds.gt_sem_seg.data.reshape(ds.gt_sem_seg.data.shape[-2:])
                               for ds in data_samples]).long().to(device)
        bad = (targets != self.ignore_index) & ((targets < 0) | (targets >= self.num_classes))
        if bool(bad.any()):
            vals = sorted(set(targets[bad].unique().tolist()))[:10]
            raise InputError(f'label values {vals} are outside the class range 0..{self.num_classes - 1} '
                             f'(and are not ignore_index={self.ignore_index}); check the annotations, '
                             'model.decode_head.num_classes and the data set\'s reduce_zero_label')
        return targets

    def dummy_data_samples(self, n: int, device: torch.device) -> list:
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        h, w = self.backbone.input_size[-2:]
        samples = []
        for _ in range(n):
            ds = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
            ds.gt_sem_seg = PixelData(data=torch.zeros(1, h, w, dtype=torch.long, device=device))
            samples.append(ds)
        return samples

    # -- inference: the plain backbone path ---------------------------------------------------
    def extract_feat(self, inputs: Tensor) -> List[Tensor]:
        feats = self.extract_levels(inputs)[1]
        if self.with_neck:
            feats = self.neck(feats)
        return feats
