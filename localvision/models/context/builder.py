"""The registry of context supplies and how a task model builds one from its config."""
from __future__ import annotations

from typing import Optional, Sequence

from mmengine.registry import Registry

from localvision.errors import InputError
from localvision.registry import SCOPE

# No parent: builds the same way whatever the config's default scope is.
CONTEXTS = Registry('context supply', scope=SCOPE, locations=['localvision.models.context'])


def registered_contexts() -> list:
    import localvision.models.context  # noqa: F401  (fills the registry)
    return sorted(CONTEXTS.module_dict)


def build_context(cfg: Optional[dict], in_channels: Sequence[int], out_channels: Sequence[int],
                  reductions: Optional[Sequence[int]] = None, field_name: str = 'model.context'):
    """Build the context supply of a K-module split, or ``None`` when ``cfg`` is ``None``.

    Args:
        cfg: e.g. ``dict(type='ContSup', variant='R1E')``.
        in_channels: channels of each module's input (``in_channels[0]``: the image's).
        out_channels: channels of each module's output map.
        reductions: downsampling factor of each module's output w.r.t. the image.
        field_name: how the config calls this field, for error messages.
    """
    if cfg is None:
        return None
    cfg = dict(cfg)
    allowed = registered_contexts()
    if cfg.get('type') not in allowed:
        raise InputError(f"{field_name}.type={cfg.get('type')!r} is not a registered context supply; "
                         f'allowed: {allowed}')
    cfg.update(in_channels=list(in_channels), out_channels=list(out_channels),
               reductions=None if reductions is None else list(reductions), field_name=field_name)
    return CONTEXTS.build(cfg)
