"""Auxiliary classifier heads that local objectives put on a module's output map."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

from localvision.registry import AUX_HEADS

Tensor = torch.Tensor


@AUX_HEADS.register_module()
class PoolLinearHead(nn.Module):
    """Global average pool, then one linear layer (the lightest greedy head)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.mean(dim=(2, 3)))


@AUX_HEADS.register_module()
class ConvFCHead(nn.Module):
    """InfoPro's "1c2f" head: conv3x3 - BN - ReLU - pool - FC - ReLU - FC.

    As in the papers' code, the conv widens a thin map and halves its resolution: ``2C``
    channels with stride 2 when ``C < 64``, ``C`` channels with stride 1 otherwise.

    Args:
        in_channels: channels of the module output.
        num_classes: outputs of the last FC.
        hidden: width of the first FC (128 in the papers), times ``width_mult``.
        width_mult: widens the conv and the hidden FC.
        conv_channels: channels of the conv before ``width_mult`` (default: the papers' rule).
    """

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 128, width_mult: float = 1.0,
                 conv_channels: Optional[int] = None) -> None:
        super().__init__()
        thin = in_channels < 64
        conv_channels = conv_channels or (2 * in_channels if thin else in_channels)
        conv_out = max(int(round(conv_channels * width_mult)), 1)
        self.conv = nn.Conv2d(in_channels, conv_out, 3, stride=2 if thin else 1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(conv_out)
        self.act = nn.ReLU(inplace=True)
        hidden = max(int(round(hidden * width_mult)), 1)
        self.fc1 = nn.Linear(conv_out, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.bn(self.conv(x)))
        x = x.mean(dim=(2, 3))
        return self.fc2(torch.relu(self.fc1(x)))


@AUX_HEADS.register_module()
class ConvPoolHead(nn.Module):
    """conv-BN-ReLU layers (a width, kernel and stride each), global average pool, one FC.

    The defaults are InfoPro's ImageNet head (the papers' code, ResNet K=2 cut after layer2's
    first block): conv1x1 to 128, conv3x3 stride 2 to 256, conv3x3 stride 2 to 512, conv1x1 to
    2048, pool, FC. The two strided convs keep it cheap on a large map.

    Args:
        in_channels: channels of the module output.
        num_classes: outputs of the FC.
        widths / kernels / strides: one entry per conv layer.
        width_mult: multiplies ``widths``.
    """

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int] = (128, 256, 512, 2048),
                 kernels: Sequence[int] = (1, 3, 3, 1), strides: Sequence[int] = (1, 2, 2, 1),
                 width_mult: float = 1.0) -> None:
        super().__init__()
        if not len(widths) == len(kernels) == len(strides):
            raise ValueError(f'ConvPoolHead: widths {tuple(widths)}, kernels {tuple(kernels)} and strides '
                             f'{tuple(strides)} must have one entry per conv layer')
        layers = []
        c = in_channels
        for width, k, s in zip(widths, kernels, strides):
            width = max(int(round(width * width_mult)), 1)
            layers += [nn.Conv2d(c, width, k, stride=s, padding=k // 2, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            c = width
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.convs(x).mean(dim=(2, 3)))
