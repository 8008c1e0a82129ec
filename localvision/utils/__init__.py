"""Utilities: safe checkpoint loading, device choice, registration."""
from .checkpoint import allow_mmengine_checkpoints, check_checkpoint, check_fits, mmengine_safe_globals, read_state_dict
from .device import default_device, default_dist_backend, resolve_dist_cfg

__all__ = ['allow_mmengine_checkpoints', 'check_checkpoint', 'check_fits', 'mmengine_safe_globals', 'read_state_dict',
           'default_device', 'default_dist_backend', 'resolve_dist_cfg']
