"""A simple feature pyramid from a single-scale map (ViTDet's, Li et al. 2022), as an mmdet neck.

mmdet 3.3 ships no such neck in its package (ViTDet's ``SimpleFPN`` lives in ``projects/``, which
is not installed), so this is a small one: the last backbone level (e.g. a ViT's stride-16 map)
is rescaled by each factor in ``scale_factors`` (x2: one ConvTranspose 2x2, x4: two with a GELU
between; 1: identity; 1/2, 1/4...: max-pool), then each branch gets conv1x1 and conv3x3
to ``out_channels`` (with an optional norm), giving one output per factor, finest first.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmdet.registry import MODELS
from mmengine.model import BaseModule

from localvision.errors import InputError

Tensor = torch.Tensor


@MODELS.register_module()
class SimplePyramid(BaseModule):
    """Multi-scale outputs from one map.

    Args:
        in_channels: channels of the input map (an int, or a list whose last entry is used: the
            detector passes every backbone level and this neck reads the last one).
        out_channels: channels of every output.
        scale_factors: rescaling of each output relative to the input, finest first; powers of 2
            (e.g. ``(2, 1, 0.5, 0.25, 0.125)`` turns a stride-16 map into strides 8..128).
        norm_cfg: norm after each conv (e.g. ``dict(type='GN', num_groups=32)``), or None.
    """

    def __init__(self, in_channels, out_channels: int = 256, scale_factors: Sequence[float] = (4, 2, 1, 0.5),
                 norm_cfg: Optional[dict] = None, init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if isinstance(in_channels, (list, tuple)):
            in_channels = in_channels[-1]
        self.in_channels = int(in_channels)
        self.out_channels = out_channels
        self.scale_factors = tuple(float(s) for s in scale_factors)
        self.stages = nn.ModuleList()
        for s in self.scale_factors:
            octaves = math.log2(s)
            if abs(octaves - round(octaves)) > 1e-6:
                raise InputError(f'neck.scale_factors={list(scale_factors)}: {s} is not a power of 2')
            octaves = int(round(octaves))
            layers: List[nn.Module] = []
            c = self.in_channels
            for i in range(max(octaves, 0)):
                c2 = max(c // 2, 32)
                layers.append(nn.ConvTranspose2d(c, c2, 2, stride=2))
                if i < octaves - 1:
                    layers.append(nn.GELU())
                c = c2
            if octaves < 0:
                k = 2 ** (-octaves)
                layers.append(nn.MaxPool2d(k, k, ceil_mode=True))
            layers.append(ConvModule(c, out_channels, 1, norm_cfg=norm_cfg, act_cfg=None, bias=norm_cfg is None))
            layers.append(ConvModule(out_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg, act_cfg=None,
                                     bias=norm_cfg is None))
            self.stages.append(nn.Sequential(*layers))

    def forward(self, inputs) -> Tuple[Tensor, ...]:
        x = inputs[-1] if isinstance(inputs, (list, tuple)) else inputs
        return tuple(stage(x) for stage in self.stages)
