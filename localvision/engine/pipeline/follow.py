"""Weights that flow upstream: objectives that read the next module (MAN's EMA).

An objective with ``reads_next_module`` (MAN) reads the live weights of module k+1 at every
training forward of module k. In module-parallel training module k+1 trains in the next
process, so that process sends those weights back to stage k (:class:`FollowSender`) once before
the first iteration and after every iteration, and stage k's objective reads the copy
(:meth:`LocalObjective.follow`) that :class:`FollowReceiver` keeps current. No gradient goes
upstream; only weights, on their own process group per cut.

**Lag.** ``f_j`` = module k+1's weights after j optimizer steps (iterations). In one process,
iteration t of module k reads ``f_t``. Stage k reads ``f_{t-L}`` (``pipeline.follow_lag`` = L,
never older than the weights at the start or resume point): with L = 0 the run equals the
single-process one (the sync schedule's guarantee holds), and stage k waits at the start of
each iteration until stage k+1 has finished the previous one, so only the micro-batches of one
iteration overlap; with L >= 1 stage k may run up to L iterations ahead, and the objective reads
weights L iterations old (MAN's EMA at m = 0.995 averages over about 200). Waiting never
deadlocks: ``f_{t-L}`` needs only micro-batches stage k has already sent.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn

from localvision.errors import InputError

from .stage import parameter_owners
from .transport import PendingSends, TransportError, take

Tensor = torch.Tensor
END = -1


def followed_parameters(model: nn.Module, k: int) -> Tuple[List[nn.Module], List[nn.Parameter]]:
    """``(objectives, parameters)``: the objectives of unit ``k`` (nested ones included) that read
    the next module's weights, and those weights, each once, in a fixed order (the same on every
    rank: every rank builds the whole model)."""
    objectives = getattr(model, 'objectives', None)
    if objectives is None or k >= len(objectives):
        return [], []
    readers, params, seen = [], [], set()
    for m in objectives[k].modules():
        if not getattr(m, 'reads_next_module', False) or getattr(m, 'trains_next_module', False):
            continue
        ps = list(m.next_module_parameters())
        if ps:
            readers.append(m)
        for p in ps:
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return readers, params


def follow_cuts(model: nn.Module) -> List[int]:
    """The cuts s whose unit s reads unit s+1's weights. Raises :class:`InputError` when an
    objective reads weights that are not module s+1's own, or trains the next module."""
    cuts = []
    k_last = model.num_units - 1
    param_owner = parameter_owners(model)
    objectives = getattr(model, 'objectives', None) or []
    for s in range(len(objectives)):
        trainers = sorted({type(m).__name__ for m in objectives[s].modules()
                           if getattr(m, 'trains_next_module', False)})
        if trainers:
            raise InputError(f'model.local_objective {trainers} trains the next module too (its gradients would have '
                             'to cross back to the process of that module); train it without `pipeline`')
        _, params = followed_parameters(model, s)
        if not params:
            continue
        owners = sorted({param_owner.get(id(p), k_last) for p in params})
        if owners != [s + 1]:
            raise InputError(f'the objective of module {s} reads weights of modules {owners}; with module-parallel '
                             f'training it may read only module {s + 1}\'s (the next stage sends them)')
        cuts.append(s)
    return cuts


class FollowSender:
    """Stage k+1: sends its weights that stage k's objectives read, ``f_j`` after iteration j-1.

    Args:
        params: :func:`followed_parameters` of unit k (this stage's own, live).
        group: the cut's follow process group; dst: global rank of stage k.
        first, last: the indices j to send (``f_first`` at the start, up to ``f_last``).
    """

    def __init__(self, params: List[nn.Parameter], group, dst: int, comm_device: torch.device,
                 first: int, last: int) -> None:
        self.params, self.group, self.dst, self.comm_device = params, group, dst, comm_device
        self.first, self.last = first, last
        self._sends = PendingSends(dst, group, what='sending weights')
        self.sent: List[int] = []

    def _send(self, index: int, tensors: List[Tensor]) -> None:
        bufs = [torch.tensor([index], dtype=torch.int64, device=self.comm_device)]
        bufs += [t.detach().to(self.comm_device, copy=True).contiguous() for t in tensors]
        self._sends.start(bufs)
        self._sends.reap(limit=2)

    def after(self, done: int) -> None:
        """Called with ``done`` = iterations finished (``first`` before the first one)."""
        if self.first <= done <= self.last:
            self._send(done, list(self.params))
            self.sent.append(done)

    def close(self) -> None:
        """Tell stage k that nothing follows, and wait for every send."""
        self._send(END, [])
        self._sends.reap(limit=0)


class FollowReceiver:
    """Stage k: receives ``f_j`` on a background thread; :meth:`wait_for` copies ``f_j`` into the
    tensors the objectives follow.

    Args:
        readers, params: :func:`followed_parameters` of unit k, before module k+1's weights are
            released here (their shapes and dtypes are read); the readers are made to follow.
        group: the cut's follow process group; src: global rank of stage k+1.
        device: where the objectives run.
        check_abort: called while waiting; raises to abandon the wait (watchdog).
    """

    def __init__(self, readers: List[nn.Module], params: List[nn.Parameter], group, src: int,
                 comm_device: torch.device, device: torch.device,
                 check_abort: Optional[Callable[[], None]] = None) -> None:
        self.group, self.src, self.comm_device = group, src, comm_device
        self.check_abort = check_abort
        self.shapes = [(tuple(p.shape), p.dtype) for p in params]
        self.copy = [torch.empty(s, dtype=d, device=device) for s, d in self.shapes]
        index = {id(p): i for i, p in enumerate(params)}
        for r in readers:  # each reader follows its own parameters, in its own order
            r.follow([self.copy[index[id(p)]] for p in r.next_module_parameters()])
        self.current: Optional[int] = None
        self.wait_s = 0.0
        self.log: List[Tuple[int, int]] = []  # (weights index j, the first iteration that read f_j)
        self._q: 'queue.Queue' = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=f'lv-pipeline-follow-from-{src}', daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            while True:
                if self.comm_device.type == 'cuda':
                    torch.cuda.set_device(self.comm_device)
                head = torch.empty(1, dtype=torch.int64, device=self.comm_device)
                dist.recv(head, src=self.src, group=self.group)
                index = int(head.item())
                if index == END:
                    self._q.put((END, None))
                    return
                tensors = []
                for shape, dtype in self.shapes:
                    t = torch.empty(shape, dtype=dtype, device=self.comm_device)
                    dist.recv(t, src=self.src, group=self.group)
                    tensors.append(t)
                self._q.put((index, tensors))
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            self._q.put(TransportError(f'receiving weights from rank {self.src} failed: {type(e).__name__}: {e}',
                                       self.src))

    def _take(self) -> Tuple[int, Any]:
        item, waited = take(self._q, self.check_abort)
        self.wait_s += waited
        return item

    @torch.no_grad()
    def wait_for(self, index: int, iteration: int) -> None:
        """Make the objectives read ``f_index`` (waits until it has arrived; they come in order)."""
        while self.current is None or self.current < index:
            got, tensors = self._take()
            if got == END:
                raise TransportError(f'rank {self.src} ended before sending the weights of iteration {index}',
                                     self.src)
            if got >= index:  # older ones are never read again
                for c, t in zip(self.copy, tensors):
                    c.copy_(t)
            self.current = got
        if not self.log or self.log[-1][0] != self.current:
            self.log.append((self.current, iteration))

    def close(self) -> None:
        """Receive what is left up to the end mark (the sender waits for it), then stop."""
        while True:
            got, _ = self._take()
            if got == END:
                break
        self._thread.join(timeout=5.0)
