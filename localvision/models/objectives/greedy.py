"""Greedy supervised local learning: an auxiliary classifier and cross-entropy per module."""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F

from localvision.registry import AUX_HEADS, OBJECTIVES

from .base import LocalContext, LocalObjective

Tensor = torch.Tensor


@OBJECTIVES.register_module()
class Greedy(LocalObjective):
    """Cross-entropy of an auxiliary classifier on the module's output.

    Args:
        head: auxiliary head config (``PoolLinearHead`` or the papers' ``ConvFCHead``);
            ``in_channels`` and ``num_classes`` are filled in.
        loss_weight: multiplies the loss.
    """

    def __init__(self, in_channels: int, num_classes: int, head: Optional[dict] = None,
                 loss_weight: float = 1.0, **kwargs) -> None:
        super().__init__(in_channels, num_classes, **kwargs)
        head = dict(head or dict(type='ConvFCHead'))
        head.update(in_channels=in_channels, num_classes=num_classes)
        self.head = AUX_HEADS.build(head)
        self.loss_weight = loss_weight

    def loss(self, feat: Tensor, ctx: LocalContext) -> Dict[str, Tensor]:
        logits = self.head(feat)
        return {'loss_cls': self.loss_weight * F.cross_entropy(logits, ctx.targets)}
