"""Base of task models whose backbone is split into K gradient-isolated units."""
from __future__ import annotations

from localvision.errors import InputError

from typing import Dict, List, Optional, Tuple

import torch
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper

from localvision.registry import EXECUTORS

from .objectives.base import LocalContext

Tensor = torch.Tensor


def build_executor(cfg: Optional[dict]):
    import localvision.engine  # noqa: F401  (fills the registry)
    cfg = dict(cfg or dict(type='PerModuleBackward'))
    allowed = sorted(EXECUTORS.module_dict)
    if cfg.get('type') not in allowed:
        raise InputError(f"model.executor.type={cfg.get('type')!r} is unknown; allowed: {allowed}")
    return EXECUTORS.build(cfg)


class LocalLearningModel(BaseModel):
    """An mmengine model trained unit by unit (see :mod:`localvision.engine.executors`).

    Subclasses implement ``num_units``, ``make_context(inputs, data_samples)`` and
    ``forward_unit(k, h, ctx) -> (h_out, losses)``; ``train_step`` hands them to the executor
    (``model.executor`` in the config, ``PerModuleBackward`` by default). With one unit this is
    plain end-to-end training through the same code.
    """

    def __init__(self, executor: Optional[dict] = None, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.executor = build_executor(executor)

    @property
    def num_units(self) -> int:
        raise NotImplementedError

    def make_context(self, inputs: Tensor, data_samples: Optional[list]) -> LocalContext:
        raise NotImplementedError

    def forward_unit(self, k: int, h: Tensor, ctx: LocalContext) -> Tuple[Tensor, Dict[str, Tensor]]:
        raise NotImplementedError

    def unit_parameters(self, k: int) -> List[torch.nn.Parameter]:
        """Parameters trained by unit k's loss."""
        raise NotImplementedError

    def forward_all_units(self, ctx: LocalContext) -> Dict[str, Tensor]:
        """All units with their losses; inputs detached at the cuts (no graph crosses a cut)."""
        h, losses = ctx.inputs, {}
        for k in range(self.num_units):
            out, unit_losses = self.forward_unit(k, h, ctx)
            losses.update(unit_losses)
            h = out.detach()
        return losses

    def loss(self, inputs: Tensor, data_samples: list) -> Dict[str, Tensor]:
        return self.forward_all_units(self.make_context(inputs, data_samples))

    def train_step(self, data, optim_wrapper: OptimWrapper, grad_sync=None) -> Dict[str, Tensor]:
        """One iteration through the executor; ``grad_sync`` is given by the data-parallel wrapper."""
        with optim_wrapper.optim_context(self):
            data = self.data_preprocessor(data, True)
        ctx = self.make_context(data['inputs'], data['data_samples'])
        return self.executor(self, ctx, optim_wrapper, grad_sync=grad_sync)
