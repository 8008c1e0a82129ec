"""Local objectives for segmentation (registered in ``localvision.registry.OBJECTIVES``).

InfoPro's segmentation recipe (Wang et al., ICLR 2021, DeepLab-v3 on Cityscapes): the local loss
of module k is ``lambda_recon * L_recon + lambda_task * L_seg`` where

- ``L_seg``: pixel-wise cross-entropy of an auxiliary segmentation head
  (:class:`SegAuxHead`: conv3x3 (C -> 512) - BN - ReLU - Dropout2d(0.1) - conv1x1 (-> classes)),
  its logits bilinearly upsampled to the label size, ``ignore_index`` pixels left out;
- ``L_recon``: a decoder (:class:`~localvision.models.objectives.ProgressiveDecoder`: conv1x1 (C -> 128), then
  three x2 upsamples with conv3x3 128 -> 32 -> 12 -> 3) predicts the un-normalised image in [0, 1]
  (sigmoid + BCE against ``ctx.image01()``).

``SegGreedy`` is the same objective without the reconstruction term (greedy supervised local
learning with a segmentation head).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from localvision.models.objectives.base import LocalContext
from localvision.models.objectives.infopro import InfoProBase
from localvision.registry import AUX_HEADS, OBJECTIVES

Tensor = torch.Tensor
Weight = Union[float, Sequence[float]]


@AUX_HEADS.register_module()
class SegAuxHead(nn.Module):
    """InfoPro's auxiliary segmentation head: conv3x3 - BN - ReLU - Dropout2d - conv1x1.

    Args:
        in_channels: channels of the module output.
        num_classes: output channels (classes).
        channels: width of the 3x3 conv (512 in the paper).
        dropout: Dropout2d probability (0.1).
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.cls = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.cls(self.drop(self.act(self.bn(self.conv(x)))))


@OBJECTIVES.register_module()
class InfoProSeg(InfoProBase):
    """InfoPro for segmentation: ``lambda_recon * L_recon + lambda_task * L_seg``.

    Args:
        lambda_recon / lambda_task: weight of each term: a number, ``(first, last)`` local
            module (interpolated), or a list of K-1 numbers (see ``scheduled_value``). The
            paper's K=2 Cityscapes setting is ``lambda_recon=1.5, lambda_task=1``.
        head: auxiliary segmentation head config (default :class:`SegAuxHead`).
        decoder: reconstruction decoder config (default :class:`~localvision.models.objectives.ProgressiveDecoder`).
        ignore_index: label value left out of the loss (255).
        image_channels: channels of the reconstructed image.
    """

    def __init__(self, in_channels: int, num_classes: int, lambda_recon: Weight = 1.5, lambda_task: Weight = 1.0,
                 head: Optional[dict] = None, decoder: Optional[dict] = None, ignore_index: int = 255,
                 image_channels: int = 3, align_corners: bool = False, **kwargs) -> None:
        super().__init__(in_channels, num_classes, lambda_recon, lambda_task, head=head or dict(type='SegAuxHead'),
                         decoder=decoder or dict(type='ProgressiveDecoder'), image_channels=image_channels, **kwargs)
        self.ignore_index = ignore_index
        self.align_corners = align_corners

    def loss(self, feat: Tensor, ctx: LocalContext) -> Dict[str, Tensor]:
        losses: Dict[str, Tensor] = {}
        if self.head is not None:
            target = ctx.targets
            logits = self.head(feat)
            logits = F.interpolate(logits, size=tuple(target.shape[-2:]), mode='bilinear',
                                   align_corners=self.align_corners)
            losses['loss_seg'] = self.lambda_task * F.cross_entropy(logits.float(), target,
                                                                    ignore_index=self.ignore_index)
        if self.decoder is not None:
            losses['loss_recon'] = self.recon_loss(feat, ctx.image01())
        return losses


@OBJECTIVES.register_module()
class SegGreedy(InfoProSeg):
    """Greedy local learning for segmentation: the auxiliary segmentation head's CE only."""

    def __init__(self, in_channels: int, num_classes: int, loss_weight: float = 1.0, **kwargs) -> None:
        kwargs.pop('lambda_recon', None)
        kwargs.pop('lambda_task', None)
        super().__init__(in_channels, num_classes, lambda_recon=0.0, lambda_task=loss_weight, **kwargs)
