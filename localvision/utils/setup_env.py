"""Registering localvision's components and making mmengine work on the pinned torch."""
from __future__ import annotations

import datetime
import warnings

from mmengine import DefaultScope

from .atomic_io import use_atomic_local_writes
from .checkpoint import allow_mmengine_checkpoints


def register_all_modules(init_default_scope: bool = True) -> None:
    """Import every localvision module that registers components, allow-list mmengine
    checkpoint globals, make local checkpoint writes atomic, and set the default scope.

    Does not import mmpretrain, mmseg or mmdet: the task modules come in through
    ``custom_imports`` (``localvision.cls`` / ``seg`` / ``det``).
    """
    import localvision.engine  # noqa: F401
    import localvision.models  # noqa: F401
    allow_mmengine_checkpoints()
    use_atomic_local_writes()
    if init_default_scope:
        never_created = DefaultScope.get_current_instance() is None or \
            not DefaultScope.check_instance_created('localvision')
        if never_created:
            DefaultScope.get_instance('localvision', scope_name='localvision')
            return
        current = DefaultScope.get_current_instance()
        if current.scope_name != 'localvision':
            warnings.warn(f'The current default scope "{current.scope_name}" is not "localvision"; '
                          'register_all_modules forces it to "localvision".')
            DefaultScope.get_instance(f'localvision-{datetime.datetime.now()}', scope_name='localvision')


# ``custom_imports=['localvision.utils.setup_env']`` in a config: the process-wide parts, without
# touching the default scope (the Runner sets it from the config).
register_all_modules(init_default_scope=False)
