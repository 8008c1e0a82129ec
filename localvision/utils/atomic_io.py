"""Atomic local file writes for mmengine (checkpoints, ``last_checkpoint``): never half-written.

mmengine's ``LocalBackend.put`` opens the target and writes into it, so a process killed while
saving leaves a truncated checkpoint. :class:`AtomicLocalBackend` writes to a temporary file in
the same folder, fsyncs it and renames it over the target (``os.replace`` is atomic).
"""
from __future__ import annotations

import os
import os.path as osp
import tempfile
from pathlib import Path
from typing import Union

from mmengine.fileio.backends import LocalBackend, register_backend


class AtomicLocalBackend(LocalBackend):
    """``LocalBackend`` whose ``put`` / ``put_text`` replace the target atomically."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        filepath = str(filepath)
        folder = osp.dirname(osp.abspath(filepath))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(filepath)}.', suffix='.tmp', dir=folder)
        try:
            with os.fdopen(fd, 'wb') as f:
                f.write(obj)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, filepath)
        except BaseException:
            if osp.exists(tmp):
                os.remove(tmp)
            raise

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)


_registered = False


def use_atomic_local_writes() -> None:
    """Make mmengine's default local backend :class:`AtomicLocalBackend` (idempotent)."""
    global _registered
    if _registered:
        return
    register_backend('local', AtomicLocalBackend, force=True, prefixes='')
    from mmengine.fileio import io as mmengine_io
    for key, inst in list(mmengine_io.backend_instances.items()):
        if type(inst) is LocalBackend:  # instances made before: drop them so the new class is used
            del mmengine_io.backend_instances[key]
    _registered = True
