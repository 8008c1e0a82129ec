"""Utilities: safe checkpoint loading, device choice, registration."""
from .checkpoint import allow_mmengine_checkpoints, check_checkpoint, mmengine_safe_globals
from .device import default_device, default_dist_backend, resolve_dist_cfg

__all__ = ['allow_mmengine_checkpoints', 'check_checkpoint', 'mmengine_safe_globals', 'default_device',
           'default_dist_backend', 'resolve_dist_cfg']
