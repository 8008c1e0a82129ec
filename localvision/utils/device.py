"""Device and distributed-backend choice: CUDA when present, CPU otherwise."""
from __future__ import annotations

from localvision.errors import InputError

import torch


def default_device() -> str:
    """``'cuda'`` when a CUDA device is usable, else ``'cpu'``."""
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def default_dist_backend() -> str:
    """``'nccl'`` with CUDA, ``'gloo'`` without."""
    return 'nccl' if torch.cuda.is_available() else 'gloo'


def resolve_dist_cfg(cfg) -> None:
    """Fill ``cfg.env_cfg.dist_cfg.backend`` when it is missing or ``'auto'``."""
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    if dist_cfg.get('backend') in (None, 'auto'):
        dist_cfg['backend'] = default_dist_backend()
    elif dist_cfg['backend'] == 'nccl' and not torch.cuda.is_available():
        raise InputError("env_cfg.dist_cfg.backend='nccl' needs CUDA; none is available here "
                         "(use 'gloo' or 'auto')")
