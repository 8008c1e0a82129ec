"""Reconstruction decoders: predict the input image from a module's output map (InfoPro)."""
from __future__ import annotations

from typing import Callable, Sequence

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
