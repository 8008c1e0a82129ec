"""Image classification with a timm backbone split into K gradient-isolated modules."""
from __future__ import annotations

from typing import Dict, List, Optional, Union

import torch
import torch.nn.functional as F

from mmengine.model import BaseModel

from localvision.errors import InputError
from localvision.registry import MODELS
from localvision.structures.local_context import LocalContext

from ..local_model import LocalLearningModel, TaskHead

Tensor = torch.Tensor


@MODELS.register_module()
class LocalImageClassifier(LocalLearningModel, BaseModel):
    """A timm classifier trained module by module with local objectives.

    Modules 0..K-2 are each trained by their own local objective; the last module carries the
    timm model's own head (``forward_head``) and the task cross-entropy. K=1 is end-to-end
    training of the plain timm model. With a context supply (``context``), every module after
    the first receives its predecessor's detached output plus projected context; the context
    path is part of the model (training, inference and checkpoints).

    Args:
        backbone: ``dict(type='StagedTimm', model_name=..., pretrained=False, checkpoint_path='',
            frozen_stages=-1, norm_eval=False, **timm_kwargs)`` (see :class:`StagedTimm`).
        num_classes: number of classes.
        split: ``dict(num_modules=K, strategy=...)`` or ``dict(cuts=[...])`` (see :class:`StagedTimm`).
        local_objective: one objective config for all local modules, or a list of K-1.
        context: context supply at the cuts, e.g. ``dict(type='ContSup', variant='R1E')``
            (see :mod:`localvision.models.context`); ``None`` for none.
        executor: ``dict(type='PerModuleBackward')`` (default) or ``dict(type='JointBackward')``.
        label_smoothing: of the task loss.
    """

    def __init__(self, backbone: dict, num_classes: int, split: Optional[dict] = None,
                 local_objective: Union[dict, List[dict], None] = None, context: Optional[dict] = None,
                 executor: Optional[dict] = None, label_smoothing: float = 0.0,
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None) -> None:
        BaseModel.__init__(self, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.label_smoothing = label_smoothing
        self.init_backbone(backbone, split, executor, num_classes=num_classes)
        self.init_units(local_objective, context, num_classes)

    # -- what the mechanism needs from classification ------------------------------------------
    def task_heads(self) -> List[TaskHead]:
        """The timm model's own head, on the backbone output (it belongs to the last module)."""
        return [TaskHead('head')]

    def head_loss(self, name: str, out: Tensor, feats: list, ctx: LocalContext) -> Dict[str, Tensor]:
        logits = self.backbone.model.forward_head(out)
        return {'loss_cls': F.cross_entropy(logits, ctx.targets, label_smoothing=self.label_smoothing)}

    def task_targets(self, data_samples: list, device: torch.device) -> Tensor:
        return torch.cat([ds.gt_label.reshape(-1) for ds in data_samples]).to(device)

    def dummy_data_samples(self, n: int, device: torch.device) -> list:
        from localvision.structures import ClsDataSample
        return [ClsDataSample().set_gt_label(0) for _ in range(n)]

    def extract_feat(self, inputs: Tensor) -> Tensor:
        """The backbone's features (``forward_features``), through the context path if any."""
        return self.extract_levels(inputs, levels=())[0]

    # -- modes -----------------------------------------------------------------------------
    def forward(self, inputs: Tensor, data_samples: Optional[list] = None, mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.backbone.model.forward_head(self.extract_feat(inputs))
        raise InputError(f"mode={mode!r} is invalid; allowed: 'loss', 'predict', 'tensor'")

    def predict(self, inputs: Tensor, data_samples: Optional[list] = None) -> list:
        """Backbone (with its context path, if any) and head, no auxiliary nets; fills
        ``pred_score`` / ``pred_label``."""
        from localvision.structures import ClsDataSample
        scores = F.softmax(self.backbone.model.forward_head(self.extract_feat(inputs)), dim=1)
        if data_samples is None:
            data_samples = [ClsDataSample() for _ in range(scores.shape[0])]
        for ds, s in zip(data_samples, scores):
            ds.pred_score = s.detach()
            ds.pred_label = s.argmax(dim=0, keepdim=True).detach()
        return data_samples
