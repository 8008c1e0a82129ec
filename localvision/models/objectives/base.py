"""What every local objective sees and how objectives are built for the modules of a split."""
from __future__ import annotations

from localvision.errors import InputError

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from localvision.registry import OBJECTIVES

Tensor = torch.Tensor


@dataclass
class LocalContext:
    """The batch as the local objectives of one iteration see it.

    Attributes:
        inputs: the preprocessed (normalised) batch fed to module 0, (B, C, H, W).
        targets: the task targets: class indices (B,) for classification; task models put
            their own (segmentation maps, boxes) here.
        data_samples: the batch's data samples, for objectives that need more.
        img_hw: the input's spatial size.
        extras: anything a task adds for its objectives (e.g. the un-normalised image).
    """

    inputs: Tensor
    targets: Any = None
    data_samples: Optional[list] = None
    img_hw: Tuple[int, int] = (0, 0)
    extras: Dict[str, Any] = field(default_factory=dict)


class LocalObjective(nn.Module):
    """Base of the local objectives: trains module k from the map it hands on.

    Subclasses build their auxiliary nets in ``__init__`` from ``in_channels`` (the module's
    output channels) and implement ``loss(feat, ctx) -> dict`` returning losses whose keys
    contain ``loss`` (summed for backward) and, optionally, other logged values.
    """

    def __init__(self, in_channels: int, num_classes: int, module_index: int = 0,
                 num_modules: int = 1) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.module_index = module_index
        self.num_modules = num_modules

    def loss(self, feat: Tensor, ctx: LocalContext) -> Dict[str, Tensor]:
        raise NotImplementedError(f'{type(self).__name__} must implement loss(feat, ctx)')

    def forward(self, feat: Tensor, ctx: LocalContext) -> Dict[str, Tensor]:
        return self.loss(feat, ctx)


def registered_objectives() -> List[str]:
    import localvision.models.objectives  # noqa: F401  (fills the registry)
    return sorted(OBJECTIVES.module_dict)


def per_module_configs(cfg: Union[dict, Sequence[dict], None], num_local: int,
                       field_name: str = 'model.local_objective') -> List[dict]:
    """One objective config per local module: a dict shared by all, or a list of K-1 dicts.

    Every ``type`` is checked against the registry here, at build time, so a typo fails with
    one line naming the field and the allowed values before any training starts.
    """
    if num_local == 0:
        return []
    if cfg is None:
        raise InputError(f'{field_name} is required when the split has more than one module')
    cfgs = [dict(c) for c in cfg] if isinstance(cfg, (list, tuple)) else [dict(cfg) for _ in range(num_local)]
    if len(cfgs) != num_local:
        raise InputError(f'{field_name} lists {len(cfgs)} objectives but the split has {num_local} '
                         f'local modules (K-1); give one dict for all or exactly K-1')
    allowed = registered_objectives()
    for i, c in enumerate(cfgs):
        t = c.get('type')
        if t not in allowed:
            where = f'{field_name}[{i}]' if isinstance(cfg, (list, tuple)) else field_name
            raise InputError(f"{where}.type={t!r} is not a registered local objective; allowed: {allowed}")
    return cfgs


def build_objective(cfg: dict, in_channels: int, num_classes: int, module_index: int,
                    num_modules: int) -> LocalObjective:
    cfg = dict(cfg, in_channels=in_channels, num_classes=num_classes, module_index=module_index,
               num_modules=num_modules)
    return OBJECTIVES.build(cfg)
