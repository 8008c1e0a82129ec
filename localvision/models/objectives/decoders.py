"""Reconstruction decoders: predict the input image from a module's output map (InfoPro).

- :class:`ReconDecoder`: InfoPro's CIFAR decoder (upsample to the image, then two convs); cheap
  on thin maps at 32x32, costly on wide maps at ImageNet size (it upsamples every channel first).
- :class:`ProgressiveDecoder`: InfoPro's ImageNet and segmentation decoder (reduce to 128
  channels first, then x2 upsampling stages); the one to use at 224x224 and larger, and the
  default of the segmentation and detection objectives.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from localvision.models.split.profiling import checkpointed
from localvision.registry import AUX_HEADS

Tensor = torch.Tensor


class StagedDecoder(nn.Module):
    """A decoder run as a few stages; with ``grad_checkpointing`` on (set by the objective's
    ``grad_checkpointing=True``) each stage runs under activation checkpointing in training, so
    the decoder keeps only the stages' outputs and recomputes one stage at a time in backward."""

    grad_checkpointing: bool = False

    def run_stage(self, fn: Callable[[Tensor], Tensor], x: Tensor, *modules: nn.Module) -> Tensor:
        """``fn(x)``, checkpointed when asked (``modules``: those ``fn`` runs)."""
        if self.grad_checkpointing and self.training:
            return checkpointed(fn, x, modules=modules)
        return fn(x)


@AUX_HEADS.register_module()
class ReconDecoder(StagedDecoder):
    """InfoPro's CIFAR decoder: upsample to the image size, conv3x3 - BN - ReLU - conv3x3.

    Returns **logits** of the image in [0, 1]: ``sigmoid(logits)`` is the prediction, and the
    loss uses ``binary_cross_entropy_with_logits`` (equal to sigmoid + BCE, and safe under AMP).

    Args:
        in_channels: channels of the module output.
        out_channels: image channels (3).
        hidden: channels of the hidden conv (12 in the paper), times ``width_mult``.
        width_mult: widens the hidden conv.
        mode: interpolation mode of the upsampling.
    """

    def __init__(self, in_channels: int, out_channels: int = 3, hidden: int = 12, width_mult: float = 1.0,
                 mode: str = 'bilinear') -> None:
        super().__init__()
        hidden = max(int(round(hidden * width_mult)), 1)
        self.mode = mode
        self.conv1 = nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(hidden, out_channels, 3, padding=1)

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        size = tuple(int(s) for s in size)

        def hidden(x: Tensor) -> Tensor:
            if tuple(x.shape[-2:]) != size:
                align = False if self.mode in ('bilinear', 'bicubic') else None
                x = F.interpolate(x, size=size, mode=self.mode, align_corners=align)
            return self.act(self.bn(self.conv1(x)))
        return self.conv2(self.run_stage(hidden, x, self.conv1, self.bn))


@AUX_HEADS.register_module()
class ProgressiveDecoder(StagedDecoder):
    """InfoPro's ImageNet / segmentation decoder: conv1x1 (C -> ``widths[0]``) - BN - ReLU, one
    stage per further width (x2 bilinear upsample, conv3x3 - BN - ReLU), and a last stage
    (x2 upsample, conv3x3 to the image channels).

    The default ``widths=(128, 32, 12)`` is the papers' decoder (128 -> 32 -> 12 -> 3, three x2
    steps: stride 8 to the full image). A x2 step is taken only while the map is smaller than
    ``size`` (a module at a fine stride is not upsampled past the target, which would cost memory
    for nothing); the result is resized bilinearly to ``size`` when the steps do not land on it
    exactly. Returns logits of the image in [0, 1] at ``size``.

    Args:
        in_channels: channels of the module output.
        out_channels: image channels (3).
        widths: channels of the 1x1 reduction and of each upsampling stage but the last.
        width_mult: multiplies ``widths``.
    """

    def __init__(self, in_channels: int, out_channels: int = 3, widths: Sequence[int] = (128, 32, 12),
                 width_mult: float = 1.0) -> None:
        super().__init__()
        w = [max(int(round(c * width_mult)), 1) for c in widths]
        if not w:
            raise ValueError('ProgressiveDecoder: widths must name at least the 1x1 reduction\'s channels')
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, w[0], 1, bias=False), nn.BatchNorm2d(w[0]),
                                    nn.ReLU(inplace=True))
        chans = list(w) + [out_channels]
        ups = []
        for cin, cout in zip(chans[:-2], chans[1:-1]):
            ups.append(nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                     nn.ReLU(inplace=True)))
        ups.append(nn.Conv2d(chans[-2], out_channels, 3, padding=1))
        self.ups = nn.ModuleList(ups)

    @staticmethod
    def octave_widths(width: int, in_stride: int, target_stride: int, min_width: int = 16) -> Tuple[int, ...]:
        """``widths`` for a map at ``in_stride`` decoded to ``target_stride``: ``width``, then
        halved (at least ``min_width``) once per x2 step between the strides."""
        steps = max(int(round(math.log2(max(in_stride, 1) / max(target_stride, 1)))), 0)
        widths = [int(width)]
        for _ in range(steps):
            widths.append(max(widths[-1] // 2, min_width))
        return tuple(widths)

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        x = self.run_stage(self.reduce, x, self.reduce)
        size = tuple(int(s) for s in size)
        for up in self.ups:
            def stage(x: Tensor, up: nn.Module = up) -> Tensor:
                if x.shape[-2] < size[0] or x.shape[-1] < size[1]:
                    x = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)
                return up(x)
            x = self.run_stage(stage, x, up)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode='bilinear', align_corners=False)
        return x
