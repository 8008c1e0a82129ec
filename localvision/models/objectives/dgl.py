"""DGL (Belilovsky et al., ICML 2020): greedy cross-entropy through a stronger auxiliary net."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from localvision.registry import AUX_HEADS, OBJECTIVES

from .base import check_aux_head_type
from .greedy import Greedy

Tensor = torch.Tensor


@AUX_HEADS.register_module()
class DGLHead(nn.Module):
    """DGL's auxiliary classifier: conv3x3-BN-ReLU layers, average pool to a small grid, MLP.

    Args:
        in_channels: channels of the module output.
        num_classes: outputs.
        num_convs: conv3x3-BN-ReLU layers at the module's resolution.
        width_mult: their width is ``in_channels * width_mult``.
        pool_size: the adaptive average pool's output grid (2 -> 2x2, as in DGL).
        num_hidden_fc: hidden FC-BN-ReLU layers before the classifier (0: one linear layer).
        hidden_fc: width of the hidden FC layers, times ``width_mult``.
    """

    def __init__(self, in_channels: int, num_classes: int, num_convs: int = 2, width_mult: float = 1.0,
                 pool_size: int = 2, num_hidden_fc: int = 0, hidden_fc: int = 256) -> None:
        super().__init__()
        width = max(int(round(in_channels * width_mult)), 1)
        layers = []
        c = in_channels
        for _ in range(num_convs):
            layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            c = width
        self.convs = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        fcs = []
        f = c * pool_size * pool_size
        hidden = max(int(round(hidden_fc * width_mult)), 1)
        for _ in range(num_hidden_fc):
            fcs += [nn.Linear(f, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
            f = hidden
        fcs.append(nn.Linear(f, num_classes))
        self.fc = nn.Sequential(*fcs)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.convs(x)), 1))


@OBJECTIVES.register_module()
class DGL(Greedy):
    """Cross-entropy of :class:`DGLHead` (or any ``head``) on the module's output.

    Args:
        head: auxiliary head config, ``DGLHead`` by default.
        width_mult: widens the default head (ignored when ``head`` is given).
        loss_weight: multiplies the loss.
    """

    def __init__(self, in_channels: int, num_classes: int, head: Optional[dict] = None, width_mult: float = 1.0,
                 loss_weight: float = 1.0, **kwargs) -> None:
        head = dict(head or dict(type='DGLHead', width_mult=width_mult))
        check_aux_head_type(head, 'model.local_objective.head')
        super().__init__(in_channels, num_classes, head=head, loss_weight=loss_weight, **kwargs)
