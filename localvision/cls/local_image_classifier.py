"""Image classification (mmpretrain) with a timm backbone split into K gradient-isolated modules."""
from __future__ import annotations

from typing import Dict, List, Optional, Union

import torch
from mmengine.registry import DefaultScope
from mmpretrain.models.classifiers.base import BaseClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from localvision.cls.export import TimmExport
from localvision.errors import InputError
from localvision.models.local_model import LocalLearningModel, TaskHead
from localvision.structures.local_context import LocalContext

Tensor = torch.Tensor

# necks of mmpretrain that keep the channels (the head's in_channels then follow the backbone)
CHANNEL_KEEPING_NECKS = ('GlobalAveragePooling', 'GeneralizedMeanPooling')


@MODELS.register_module()
class LocalImageClassifier(LocalLearningModel, BaseClassifier):
    """mmpretrain's ImageClassifier whose timm backbone is trained module by module.

    Takes the keys of ``ImageClassifier`` (``backbone``, ``neck``, ``head``, ``train_cfg``,
    ``data_preprocessor``), so a stock mmpretrain config becomes local by replacing the backbone
    with a :class:`~localvision.models.split.StagedTimm` and adding ``split`` /
    ``local_objective``. Modules 0..K-2 are each trained by their local objective; the last module
    carries the neck and the mmpretrain head (its loss: cross-entropy, label smoothing, the soft
    targets of Mixup / CutMix). K=1 is plain end-to-end training of the same network.

    What the head reads: with ``neck=None``, timm's own pre-logits (``forward_head(x,
    pre_logits=True)``: the model's pooling, e.g. the class token of a ViT or the average of a
    ConvNet, and its head norm); with a neck (``GlobalAveragePooling``), the neck on the
    backbone's output map. The timm model is built without its classifier (``num_classes=0``);
    the head's ``in_channels`` follow the backbone, so swapping it is one line.

    Args:
        backbone: ``dict(type='StagedTimm', model_name=..., pretrained=False, ...)``.
        neck: an mmpretrain neck on the backbone's output map, or ``None`` (timm's pooling).
        head: an mmpretrain head, e.g. ``dict(type='LinearClsHead', num_classes=1000,
            loss=dict(type='CrossEntropyLoss'))``.
        split: ``dict(num_modules=K, strategy=...)`` or ``dict(cuts=[...])`` (see :class:`StagedTimm`).
        local_objective: one objective config for all local modules, or a list of K-1.
        context: context supply at the cuts (``dict(type='ContSup', variant='R1E')``) or ``None``.
        executor: ``PerModuleBackward`` (default) or ``JointBackward``.
        train_cfg: ``dict(augments=[dict(type='Mixup', alpha=0.8), ...])``: batch augments, as
            for ImageClassifier.
    """

    stock_export = TimmExport

    def __init__(self, backbone: dict, head: dict, neck: Optional[dict] = None, split: Optional[dict] = None,
                 local_objective: Union[dict, List[dict], None] = None, context: Optional[dict] = None,
                 executor: Optional[dict] = None, train_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None, pretrained: Optional[str] = None,
                 init_cfg: Optional[dict] = None) -> None:
        if pretrained is not None:
            raise InputError('model.pretrained is not used by LocalImageClassifier; give local weights with '
                             "model.backbone.checkpoint_path='/path/to/weights.pth'")
        if head is None:
            raise InputError("model.head is required, e.g. dict(type='LinearClsHead', num_classes=10, "
                             "loss=dict(type='CrossEntropyLoss'))")
        data_preprocessor = dict(data_preprocessor or {})
        data_preprocessor.setdefault('type', 'ClsDataPreprocessor')
        if train_cfg and train_cfg.get('augments'):
            data_preprocessor.setdefault('batch_augments', train_cfg)
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            data_preprocessor = MODELS.build(data_preprocessor)
        BaseClassifier.__init__(self, init_cfg=init_cfg, data_preprocessor=data_preprocessor)
        if dict(backbone).get('num_classes', 0) != 0:
            raise InputError('model.backbone.num_classes is not used: the timm model is built without its classifier '
                             'and model.head classifies; set model.head.num_classes instead')
        self.init_backbone(backbone, split, executor, num_classes=0)
        timm_model = self.backbone.model
        if neck is None:
            self.neck = None
            in_channels = getattr(timm_model, 'head_hidden_size', None) or timm_model.num_features
        else:
            neck = dict(neck)
            last = self.backbone.seq.infos[-1].num_chs
            if 'in_channels' in neck:
                neck['in_channels'] = last
            with DefaultScope.overwrite_default_scope('mmpretrain'):
                self.neck = MODELS.build(neck)
            in_channels = last if neck.get('type') in CHANNEL_KEEPING_NECKS else None
        head = dict(head)
        if in_channels is not None:  # follows the backbone, so swapping it is one line
            head['in_channels'] = in_channels
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            self.head = MODELS.build(head)
        num_classes = getattr(self.head, 'num_classes', None)
        if not num_classes:
            raise InputError(f"model.head ({head.get('type')}) has no num_classes; use a classification head "
                             '(LinearClsHead, VisionTransformerClsHead, StackedLinearClsHead...)')
        self.init_units(local_objective, context, num_classes)

    # -- what the mechanism needs from classification ------------------------------------------
    def task_heads(self) -> List[TaskHead]:
        """The neck and head, on the backbone output (they belong to the last module)."""
        return [TaskHead('head', [m for m in (self.neck, self.head) if m is not None])]

    def head_feats(self, out: Tensor, img_hw: tuple) -> tuple:
        """What the head reads: the neck on the output map, or timm's pre-logits."""
        if self.neck is not None:
            return tuple(self.neck((self.backbone.to_map(out, img_hw),)))
        return (self.backbone.model.forward_head(out, pre_logits=True),)

    def head_loss(self, name: str, out: Tensor, feats: list, ctx: LocalContext) -> Dict[str, Tensor]:
        losses = self.head.loss(self.head_feats(out, ctx.img_hw), ctx.data_samples)
        return {('loss_cls' if k == 'loss' else k): v for k, v in losses.items()}

    def task_targets(self, data_samples: list, device: torch.device) -> Tensor:
        """Class indices, or the soft targets of Mixup / CutMix (``gt_score``) when the batch has them
        (the local objectives' cross-entropy takes either)."""
        if 'gt_score' in data_samples[0]:
            return torch.stack([ds.gt_score for ds in data_samples]).to(device)
        return torch.cat([ds.gt_label.reshape(-1) for ds in data_samples]).to(device)

    def dummy_data_samples(self, n: int, device: torch.device) -> list:
        return [DataSample().set_gt_label(0) for _ in range(n)]

    # -- modes -----------------------------------------------------------------------------
    def extract_feat(self, inputs: Tensor, stage: str = 'neck'):
        """``'backbone'``: the backbone output (``forward_features``, through the context path if
        any); ``'neck'`` / ``'pre_logits'``: what the head reads / its pre-logits."""
        out = self.extract_levels(inputs, levels=())[0]
        if stage == 'backbone':
            return out
        feats = self.head_feats(out, tuple(inputs.shape[-2:]))
        if stage == 'neck':
            return feats
        if stage == 'pre_logits':
            return self.head.pre_logits(feats)
        raise InputError(f"stage={stage!r} is invalid; allowed: 'backbone', 'neck', 'pre_logits'")

    def forward(self, inputs: Tensor, data_samples: Optional[list] = None, mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.head(self.extract_feat(inputs))
        raise InputError(f"mode={mode!r} is invalid; allowed: 'loss', 'predict', 'tensor'")

    def predict(self, inputs: Tensor, data_samples: Optional[list] = None, **kwargs) -> List[DataSample]:
        """Backbone (with its context path, if any), neck and head, no auxiliary nets."""
        return self.head.predict(self.extract_feat(inputs), data_samples, **kwargs)
