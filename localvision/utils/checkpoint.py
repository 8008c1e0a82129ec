"""Loading mmengine checkpoints safely on torch >= 2.6 (``weights_only=True`` by default).

mmengine 0.10.7 checkpoints hold, besides tensors, the message hub's ``HistoryBuffer`` objects
and numpy arrays / scalars, which the restricted unpickler refuses. Rather than load with
``weights_only=False`` (arbitrary code execution for a file one may not trust), we allow-list
exactly the globals such checkpoints need.

One of them is ``builtins.getattr``: a ``HistoryBuffer`` pickles its statistics methods as
``getattr(HistoryBuffer, 'min')``. The real ``getattr`` is not allow-listed; under that name the
unpickler gets :func:`history_buffer_getattr`, which resolves only those methods.
"""
from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from typing import Dict, List, Tuple

import numpy as np
import torch

_registered = False


def history_buffer_getattr(obj: object, name: str) -> object:
    """``getattr`` restricted to the statistics methods of mmengine's ``HistoryBuffer``."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and name in HistoryBuffer._statistics_methods:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f'getattr({obj!r}, {name!r}) is not allowed in a checkpoint')


def mmengine_safe_globals() -> List[object]:
    """The classes and functions an mmengine checkpoint's pickle refers to."""
    from mmengine.logging.history_buffer import HistoryBuffer
    HistoryBuffer()  # registers the default statistics methods (min, max, current, mean)
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = {type(np.dtype(c)) for c in '?bBhHiIlLqQefdgFDGUSO'}
    return [HistoryBuffer, (history_buffer_getattr, 'builtins.getattr'), np.ndarray, np.dtype, _reconstruct,
            scalar, *sorted(dtype_classes, key=str)]


def allow_mmengine_checkpoints() -> None:
    """Allow-list :func:`mmengine_safe_globals` for ``torch.load(weights_only=True)`` (idempotent)."""
    global _registered
    if not _registered:
        torch.serialization.add_safe_globals(mmengine_safe_globals())
        _registered = True


def check_checkpoint(path: str) -> None:
    """Fail with one clear line if ``path`` is missing or not a readable checkpoint."""
    import os

    from localvision.errors import InputError, MissingDataError
    if not os.path.isfile(path):
        raise MissingDataError(f'checkpoint {path} does not exist')
    allow_mmengine_checkpoints()
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here means the file is unusable
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f'checkpoint {path} cannot be loaded (corrupt or not a torch checkpoint): '
                           f'{type(e).__name__}: {msg}') from None
    if not isinstance(ckpt, dict):
        raise InputError(f'checkpoint {path} holds a {type(ckpt).__name__}, not a state dict')


#: state-dict prefixes of the auxiliary nets of local learning: trained, saved, never read by a prediction
TRAINING_ONLY = ('objectives.',)


def read_state_dict(path: str) -> Tuple[dict, Dict[str, torch.Tensor]]:
    """The checkpoint at ``path`` and its state dict (a ``module.`` prefix of a wrapped model
    removed, as mmengine's ``load_checkpoint`` does)."""
    from mmengine.runner import CheckpointLoader
    allow_mmengine_checkpoints()
    ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else ckpt
    metadata = getattr(state, '_metadata', OrderedDict())
    state = OrderedDict((re.sub(r'^module\.', '', k), v) for k, v in state.items())
    state._metadata = metadata
    return ckpt, state


def check_fits(model: torch.nn.Module, state: Dict[str, torch.Tensor], path: str,
               ignore: Tuple[str, ...] = TRAINING_ONLY) -> None:
    """Raise :class:`InputError` unless ``state`` holds every weight of ``model`` under its name and
    shape, and nothing else; keys starting with ``ignore`` aside (by default the auxiliary nets,
    which no prediction reads: an end-to-end checkpoint tests under its local-learning config and
    back; a resumed run passes ``()``). mmengine loads what it can and warns; training or
    predicting with half-loaded weights would be a silently wrong run."""
    check_state_fits(model.state_dict(), state, path, ignore)


def check_state_fits(own: Dict[str, torch.Tensor], state: Dict[str, torch.Tensor], path: str,
                     ignore: Tuple[str, ...] = ()) -> None:
    """:func:`check_fits` on the expected state dict ``own`` (e.g. one module-parallel stage's)."""
    from localvision.errors import InputError
    ignore = tuple(ignore)
    own = {k: v for k, v in own.items() if not (ignore and k.startswith(ignore))}
    theirs = {k: v for k, v in state.items() if not (ignore and k.startswith(ignore))}
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in theirs if k not in own]
    shaped = [k for k in own if k in theirs and tuple(own[k].shape) != tuple(getattr(theirs[k], 'shape', ()))]
    parts = [f'{len(keys)} {what} (e.g. {keys[0]})' for keys, what in (
        (missing, 'weights of the model missing'), (unexpected, 'weights the model lacks'),
        (shaped, 'weights of another shape')) if keys]
    if parts:
        raise InputError(f'checkpoint {path} does not fit the model of the config: {", ".join(parts)}; use the '
                         'config it was trained with')
