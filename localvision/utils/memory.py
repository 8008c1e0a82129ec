"""Peak training memory of live tensors, on CPU (exact tracker) and CUDA (allocator).

On CUDA the caching allocator keeps statistics (``torch.cuda.max_memory_allocated``).
On CPU there is none, so :class:`LiveTensorMemoryTracker` counts, exactly, the bytes of
the tensor *storages* that are alive: a ``TorchDispatchMode`` sees every ATen op (forward
and backward, including factory functions); the first time an op returns a tensor
whose storage it has not seen, the storage's ``nbytes()`` is added, and a weak
reference callback subtracts it again when the storage is freed.  Views share their
base's storage and in-place ops return a known storage, so neither adds anything.

Both paths count "bytes of live tensors, including the model/optimizer baseline", so
the numbers are comparable in kind (CUDA additionally counts allocator rounding to
512 bytes, library workspaces and everything else that lives on the device).

Example::

    with LiveTensorMemoryTracker(baseline=(model, optimizer, batch)) as tracker:
        train_step(model, optimizer, batch)
    print(format_bytes(tracker.peak_bytes), format_bytes(tracker.baseline_bytes))
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["LiveTensorMemoryTracker", "PeakMemory", "measure_peak_memory", "format_bytes"]


class _StorageRef(weakref.ref):
    """Weak reference to a tracked ``UntypedStorage`` with its counted size and device."""

    __slots__ = ("key", "nbytes", "device")

    key: int
    nbytes: int
    device: str


def _iter_baseline_tensors(obj: Any) -> Iterator[Tensor]:
    """Yield the tensors that ``obj`` keeps alive (params, grads, buffers, optimizer state)."""
    if isinstance(obj, Tensor):
        yield obj
        if obj.grad is not None:
            yield obj.grad
    elif isinstance(obj, torch.nn.Module):
        for p in obj.parameters():
            yield from _iter_baseline_tensors(p)
        yield from obj.buffers()
    elif isinstance(obj, torch.optim.Optimizer):
        for group in obj.param_groups:
            for p in group["params"]:
                yield from _iter_baseline_tensors(p)
        for state in obj.state.values():
            yield from _iter_baseline_tensors(state)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _iter_baseline_tensors(v)
    elif isinstance(obj, Iterable) and not isinstance(obj, (str, bytes)):
        for v in obj:
            yield from _iter_baseline_tensors(v)


class LiveTensorMemoryTracker(TorchDispatchMode):
    """Exact byte count of live tensor storages created while the mode is active.

    ``baseline``: tensors, modules (parameters, their ``.grad``, buffers), optimizers
    (parameters, grads, state tensors) or nested lists/dicts of them; their storages are
    counted at ``__enter__`` (deduplicated) and tracked like any other storage, so e.g.
    grads freed by ``zero_grad(set_to_none=True)`` are subtracted.

    Counters are kept per device type (``current_by_device``/``peak_by_device``) and for
    all real devices together (``current_bytes``/``peak_bytes``; ``meta`` is excluded).
    Frees keep being subtracted after ``__exit__``; new storages are only seen inside.

    Not seen: storages that existed before ``__enter__`` and are not in ``baseline``
    until an op returns them (a view, in-place or ``out=`` op), so pass the inputs as
    baseline too; kernel-internal scratch buffers; tensors created in other threads
    (the mode is thread-local; autograd's engine threads inherit it); code compiled by
    ``torch.compile`` (its kernels bypass the dispatcher); ``UntypedStorage.resize_``
    called directly (seen only when an op next returns that storage).
    """

    def __init__(self, baseline: Iterable[Any] | Any = ()) -> None:
        super().__init__()
        self._baseline_objs = baseline
        self._live: dict[int, _StorageRef] = {}  # id(storage) -> weak ref with size
        self.current_by_device: dict[str, int] = {}
        self.peak_by_device: dict[str, int] = {}
        self.baseline_by_device: dict[str, int] = {}
        self._current = 0  # all devices except meta
        self._peak = 0
        self._baseline = 0

    # -- results -----------------------------------------------------------------
    @property
    def current_bytes(self) -> int:
        """Bytes of tracked storages alive now (all devices but ``meta``)."""
        return self._current

    @property
    def peak_bytes(self) -> int:
        """Highest ``current_bytes`` seen, baseline included."""
        return self._peak

    @property
    def baseline_bytes(self) -> int:
        """Bytes of the baseline storages counted at ``__enter__``."""
        return self._baseline

    def reset_peak(self) -> None:
        """Set the peaks to the current values (like ``torch.cuda.reset_peak_memory_stats``)."""
        self._peak = self._current
        self.peak_by_device = dict(self.current_by_device)

    # -- mode --------------------------------------------------------------------
    def __enter__(self) -> LiveTensorMemoryTracker:
        before_by_device, before = dict(self.current_by_device), self._current
        for t in _iter_baseline_tensors(self._baseline_objs):
            self._track(t)
        for dev, n in self.current_by_device.items():
            added = n - before_by_device.get(dev, 0)
            if added:
                self.baseline_by_device[dev] = self.baseline_by_device.get(dev, 0) + added
        self._baseline += self._current - before
        return super().__enter__()  # type: ignore[return-value]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **kwargs) if kwargs else func(*args)
        if isinstance(out, Tensor):
            self._track(out)
        elif isinstance(out, (tuple, list)):  # multi-output ops; at most one level of nesting
            for o in out:
                if isinstance(o, Tensor):
                    self._track(o)
                elif isinstance(o, (tuple, list)):
                    for t in o:
                        if isinstance(t, Tensor):
                            self._track(t)
        return out

    # -- bookkeeping (hot path) ---------------------------------------------------
    def _track(self, t: Tensor) -> None:
        """Count ``t``'s storage if new; re-read its size if known (it may have been resized)."""
        try:
            s = t.untyped_storage()
        except (RuntimeError, NotImplementedError, TypeError):
            return  # sparse / nested / wrapper subclass without a storage: not counted
        ref = self._live.get(id(s))
        if ref is None:
            ref = _StorageRef(s, self._on_free)
            ref.key, ref.nbytes = id(s), s.nbytes()
            ref.device = "cpu" if t.is_cpu else "cuda" if t.is_cuda else s.device.type
            self._live[ref.key] = ref
            self._add(ref.device, ref.nbytes)
        else:
            n = s.nbytes()
            if n != ref.nbytes:  # resized in place (resize_, out= ops)
                self._add(ref.device, n - ref.nbytes)
                ref.nbytes = n

    def _add(self, dev: str, n: int) -> None:
        cur = self.current_by_device.get(dev, 0) + n
        self.current_by_device[dev] = cur
        if cur > self.peak_by_device.get(dev, 0):
            self.peak_by_device[dev] = cur
        if dev != "meta":
            cur = self._current = self._current + n
            if cur > self._peak:
                self._peak = cur

    def _on_free(self, ref: _StorageRef) -> None:
        """Weakref callback: the storage was deallocated."""
        if self._live.pop(ref.key, None) is ref:
            self.current_by_device[ref.device] -= ref.nbytes
            if ref.device != "meta":
                self._current -= ref.nbytes


class PeakMemory:
    """Context manager: peak bytes of live tensors on ``device`` while inside (``.peak_bytes``).

    CUDA: ``torch.cuda.max_memory_allocated`` after resetting the peak (everything allocated on
    the device counts, so ``baseline`` is ignored). Other devices:
    :class:`LiveTensorMemoryTracker` with ``baseline`` (pass model, optimizer and any input
    tensors that exist before entering).
    """

    def __init__(self, device: str | torch.device, baseline: Iterable[Any] | Any = ()) -> None:
        self.device = torch.device(device)
        self.baseline = baseline
        self.peak_bytes = 0
        self._tracker: LiveTensorMemoryTracker | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._tracker = LiveTensorMemoryTracker(baseline=self.baseline).__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        else:
            self._tracker.__exit__(*exc)
            self.peak_bytes = self._tracker.peak_by_device.get(self.device.type, 0)
            self._tracker = None


def measure_peak_memory(fn: Callable[[], Any], *, device: str | torch.device, baseline: Iterable[Any] | Any = ()) -> int:
    """Peak bytes of live tensors on ``device`` while running ``fn()`` (see :class:`PeakMemory`)."""
    with PeakMemory(device, baseline) as peak:
        fn()
    return peak.peak_bytes


def format_bytes(n: float) -> str:
    """Human-readable binary size: ``'512 B'``, ``'1.5 KiB'``, ``'12.0 MiB'``, ``'2.3 GiB'``."""
    sign = "-" if n < 0 else ""
    n = abs(n)
    if n < 1024:
        return f"{sign}{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            break
    return f"{sign}{n:.1f} {unit}"
