"""What every local objective sees and how objectives are built for the modules of a split."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from localvision.errors import InputError
from localvision.registry import OBJECTIVES
from localvision.structures.local_context import LocalContext

Tensor = torch.Tensor


def pixel_stats(data_preprocessor: Optional[nn.Module]) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """``(mean, std)`` buffers of an mmengine-style data preprocessor, each ``(C, 1, 1)``.

    ``(None, None)`` when the preprocessor does not normalise (``mean=None``) or has no such
    buffers; works for ``ImgDataPreprocessor`` and its mmseg / mmdet subclasses.
    """
    if data_preprocessor is None or not getattr(data_preprocessor, '_enable_normalize', True):
        return None, None
    mean, std = getattr(data_preprocessor, 'mean', None), getattr(data_preprocessor, 'std', None)
    if not isinstance(mean, Tensor) or not isinstance(std, Tensor):
        return None, None
    return mean.detach(), std.detach()


def he_fan_out_init(module: nn.Module) -> None:
    """What the InfoPro / ContSup code does for every conv of the network, auxiliary nets
    included: weights ~ N(0, 2 / (k * k * out_channels)) (He, fan-out), BatchNorm weight 1 and
    bias 0; linear layers keep PyTorch's default. A sub-net with its own ``init_weights`` (e.g. a
    detection head's focal-loss prior) runs it afterwards."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if m is not module and callable(getattr(m, 'init_weights', None)):
            m.init_weights()


class LocalObjective(nn.Module):
    """Base of the local objectives: trains module k from the map it hands on.

    Subclasses build their auxiliary nets in ``__init__`` from ``in_channels`` (the module's
    output channels) and implement ``loss(feat, ctx) -> dict`` returning losses whose keys
    contain ``loss`` (summed for backward) and, optionally, other logged values.

    ``takes_blocks = True``: the objective builds on the blocks after its cut (it is given
    ``blocks``, a ``LaterBlocks``, and the module output as the block hands it on).
    ``reads_next_module = True``: it reads the live weights of the next module every step
    (:meth:`next_module_parameters`); module-parallel training, where that module trains in
    another process, sends them to it (:meth:`follow`).
    ``trains_next_module = True``: its loss also reaches the next module's weights (HPFF's
    cascade), so gradients are complete only at the end of the iteration (one optimizer step).
    ``nested_objectives``: arguments holding objective configs it builds on; the local model fills
    those left ``None`` with the task's greedy objective.
    """

    takes_blocks: bool = False
    reads_next_module: bool = False
    trains_next_module: bool = False
    nested_objectives: Tuple[str, ...] = ()

    def __init__(self, in_channels: int, num_classes: int, module_index: int = 0,
                 num_modules: int = 1, in_stride: int = 1) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.in_stride = int(in_stride)
        self.num_classes = num_classes
        self.module_index = module_index
        self.num_modules = num_modules

    def init_weights(self) -> None:
        """The papers' initialisation of the auxiliary nets (:func:`he_fan_out_init`); objectives
        whose nets need another (e.g. a focal-loss prior) override it."""
        he_fan_out_init(self)

    def next_module_parameters(self) -> List[nn.Parameter]:
        """The next module's live parameters this objective reads (``reads_next_module``)."""
        return []

    def follow(self, source: Optional[List[Tensor]]) -> None:
        """Read ``source`` (tensors shaped like :meth:`next_module_parameters`, kept current by
        the caller) instead of the live parameters; ``None``: the live parameters again."""
        if self.next_module_parameters():
            raise NotImplementedError(f'{type(self).__name__} reads the next module but cannot follow a copy')

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


def objective_class(objective_type) -> Optional[type]:
    """The class registered as ``objective_type`` (``None`` for anything else)."""
    return OBJECTIVES.get(objective_type) if isinstance(objective_type, str) else None


def takes_blocks(objective_type) -> bool:
    """Whether the objective registered as ``objective_type`` builds on the blocks after its cut
    (``LocalObjective.takes_blocks``: AugLocal, MAN, HPFF); such an objective gets the module output
    as the block hands it on (a map, an NHWC map or tokens), the others an NCHW map."""
    return bool(getattr(objective_class(objective_type), 'takes_blocks', False))


def build_objective(cfg: dict, in_channels: int, num_classes: int, module_index: int,
                    num_modules: int, in_stride: int = 1, blocks=None) -> LocalObjective:
    """The objective of local module ``module_index``, sized from the map it sees (channels,
    stride w.r.t. the image); ``blocks`` (a :class:`~localvision.models.split.block_copies.LaterBlocks`)
    goes to objectives that build on the blocks after the cut."""
    cfg = dict(cfg, in_channels=in_channels, num_classes=num_classes, module_index=module_index,
               num_modules=num_modules)
    cfg.setdefault('in_stride', in_stride)
    if takes_blocks(cfg.get('type')):
        if blocks is None:
            raise InputError(f"{cfg.get('type')} builds on the backbone's blocks after the cut; build it through a "
                             'local model (model.local_objective)')
        cfg['blocks'] = blocks
    objective = OBJECTIVES.build(cfg)
    objective.init_weights()
    return objective


def scheduled_value(value: Union[float, Sequence[float]], module_index: int, num_modules: int,
                    field_name: str) -> float:
    """The value of a per-module weight for local module ``module_index`` of a K-module split.

    ``value`` is a number (used as is), a pair ``(first, last)`` for the first and the last
    local module (modules 0 and K-2), interpolated linearly with ``ratio = k / (K-2)``, or a
    list of K-1 numbers, one per local module. With K-1 = 2 both readings of a pair agree;
    with K = 2 a pair gives its first value.
    """
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (int, float)) for v in value):
        raise InputError(f'{field_name}={value!r} must be a number, a (first, last) pair or a list of K-1 numbers')
    num_local = max(num_modules - 1, 1)
    values = [float(v) for v in value]
    if len(values) == 2:
        ratio = module_index / (num_local - 1) if num_local > 1 else 0.0
        return values[0] * (1.0 - ratio) + values[1] * ratio
    if len(values) == num_local:
        return values[module_index]
    raise InputError(f'{field_name} has {len(values)} values but the split has {num_local} local modules; '
                     f'give a number, a (first, last) pair or exactly K-1={num_local} values')


def check_aux_head_type(cfg: dict, field_name: str = 'model.local_objective.head') -> None:
    """One clear error when ``cfg['type']`` is not a registered auxiliary net."""
    from localvision.registry import AUX_HEADS
    import localvision.models.objectives  # noqa: F401  (fills the registry)
    allowed = sorted(AUX_HEADS.module_dict)
    if cfg.get('type') not in allowed:
        raise InputError(f"{field_name}.type={cfg.get('type')!r} is not a registered auxiliary net; allowed: {allowed}")


def build_aux_head(cfg: dict, field_name: str = 'model.local_objective.head', **fill) -> nn.Module:
    """Build an auxiliary net from ``AUX_HEADS`` with ``fill`` (channels, classes) filled in."""
    from localvision.registry import AUX_HEADS
    check_aux_head_type(cfg, field_name)
    return AUX_HEADS.build(dict(cfg, **fill))
