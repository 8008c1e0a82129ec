"""Image classification with a timm backbone split into K gradient-isolated modules."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from localvision.errors import InputError
from localvision.registry import MODELS

from ..context import build_context
from ..local_model import LocalLearningModel
from ..objectives.base import LocalContext, build_objective, per_module_configs, pixel_stats
from ..split import StagedTimm

Tensor = torch.Tensor


@MODELS.register_module()
class LocalImageClassifier(LocalLearningModel):
    """A timm classifier trained module by module with local objectives.

    Modules 0..K-2 are each trained by their own local objective; the last module carries the
    timm model's own head (``forward_head``) and the task cross-entropy. K=1 is end-to-end
    training of the plain timm model. With a context supply (``context``), every module after
    the first receives its predecessor's detached output plus projected context; the context
    path is part of the model (training, inference and checkpoints).

    Args:
        backbone: ``dict(model_name=..., pretrained=False, checkpoint_path='', **timm_kwargs)``.
        num_classes: number of classes.
        split: see :class:`~localvision.models.split.StagedTimm`.
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
        super().__init__(executor=executor, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        backbone = {k: v for k, v in backbone.items() if k != 'type'}
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.backbone = StagedTimm(split=split, num_classes=num_classes, **backbone)
        k = self.backbone.requested_num_modules()
        cfgs = per_module_configs(local_objective, k - 1)
        self.backbone.resolve_split(exit_loss=self._exit_cost_fn(cfgs), tail_loss=self._task_loss_of)
        self.objectives = nn.ModuleList(
            build_objective(c, self.backbone.out_channels(i), num_classes, i, k) for i, c in enumerate(cfgs))
        self.context = self._build_context(context)

    def _build_context(self, cfg: Optional[dict]) -> Optional[nn.Module]:
        bb = self.backbone
        outs = [bb.out_channels(i) for i in range(bb.num_modules)]
        ins = [bb.input_size[0]] + outs[:-1]
        reductions = [bb.seq.infos[r[-1]].reduction for r in bb.module_ranges()]
        return build_context(cfg, ins, outs, reductions, field_name='model.context')

    def _exit_cost_fn(self, cfgs: List[dict]):
        """For the balanced split: the first local objective, put on block i's output."""
        if not cfgs:
            return None
        cache: Dict[int, nn.Module] = {}

        def exit_loss(i: int, fmap: Tensor) -> Tensor:
            c = fmap.shape[1]
            if c not in cache:
                cache[c] = build_objective(cfgs[0], c, self.num_classes, 0, len(cfgs) + 1).to(fmap.device)
            targets = torch.zeros(fmap.shape[0], dtype=torch.long, device=fmap.device)
            image = torch.zeros(fmap.shape[0], *self.backbone.input_size, device=fmap.device)
            ctx = LocalContext(inputs=image, targets=targets, img_hw=tuple(image.shape[-2:]))
            return sum(v for n, v in cache[c](fmap, ctx).items() if 'loss' in n)
        return exit_loss

    def _task_loss_of(self, feat: Tensor) -> Tensor:
        targets = torch.zeros(feat.shape[0], dtype=torch.long, device=feat.device)
        return F.cross_entropy(self.backbone.model.forward_head(feat), targets)

    # -- units -----------------------------------------------------------------------------
    @property
    def num_units(self) -> int:
        return self.backbone.num_modules

    def make_context(self, inputs: Tensor, data_samples: Optional[list]) -> LocalContext:
        targets = None
        if data_samples is not None:
            targets = torch.cat([ds.gt_label.reshape(-1) for ds in data_samples]).to(inputs.device)
        mean, std = pixel_stats(self.data_preprocessor)
        return LocalContext(inputs=inputs, targets=targets, data_samples=data_samples,
                            img_hw=tuple(inputs.shape[-2:]), pixel_mean=mean, pixel_std=std)

    def module_input(self, k: int, h: Tensor, ctx: LocalContext) -> Tensor:
        """What module k runs on: ``h`` itself, or ``h`` plus the context supply's projections."""
        if self.context is None:
            return h
        return self.context(k, h, ctx, self.backbone.to_map)

    def forward_unit(self, k: int, h: Tensor, ctx: LocalContext) -> Tuple[Tensor, Dict[str, Tensor]]:
        feat = self.backbone.forward_module(k, self.module_input(k, h, ctx))
        if k < self.num_units - 1:
            losses = self.objectives[k](self.backbone.to_map(feat, ctx.img_hw), ctx)
            return feat, {f'm{k}.{n}': v for n, v in losses.items()}
        logits = self.backbone.model.forward_head(feat)
        loss = F.cross_entropy(logits, ctx.targets, label_smoothing=self.label_smoothing)
        return feat, {'loss_cls': loss}

    def unit_parameters(self, k: int) -> List[nn.Parameter]:
        params = self.backbone.module_parameters(k)
        if k < self.num_units - 1:
            params += list(self.objectives[k].parameters())
        if self.context is not None:
            params += self.context.parameters_of_module(k)
        return params

    def extract_feat(self, inputs: Tensor) -> Tensor:
        """The backbone's features (``forward_features``), through the context path if any."""
        if self.context is None:
            return self.backbone(inputs)
        ctx = LocalContext(inputs=inputs, img_hw=tuple(inputs.shape[-2:]))
        h = inputs
        for k in range(self.backbone.num_modules):
            h = self.backbone.forward_module(k, self.module_input(k, h, ctx))
        return h

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
