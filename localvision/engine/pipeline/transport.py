"""Point-to-point messages between neighbouring stages, with a bounded queue.

A message is any nest of dicts / lists / tuples holding tensors and small picklable values (the
detached activation, the labels, the image, ContSup's remembered module inputs...). On the wire:

1. a fixed-size header (``HEADER_BYTES`` uint8): length + pickled skeleton (the nest with every
   tensor replaced by its index, shape and dtype) and the control fields (step, micro-batch);
   a longer skeleton follows as a second message of the announced length;
2. the tensors, one ``isend`` each, in order.

**Bounded queue (credits).** Stage s+1 hands one credit back to stage s each time it *takes* a
micro-batch to compute on it. Stage s sends micro-batch i only after it holds the credit of
micro-batch ``i - Q``, so it is never more than Q micro-batches ahead of stage s+1: a slow
module throttles its upstream instead of letting queues (memory) grow. This holds whatever the
backend does with eager sends. The receiving side runs a thread that receives messages as soon
as they are sent (the transfer overlaps the compute of the current micro-batch); it holds at most
Q of them.
"""
from __future__ import annotations

import pickle
import queue
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

Tensor = torch.Tensor
HEADER_BYTES = 4096
LOG_LIMIT = 100_000  # instrumentation entries kept (message index, time)
_LEN = 8


class _Slot:
    """Where a tensor sat in the nest (pickled in the skeleton)."""
    __slots__ = ('index',)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self):
        return (_Slot, (self.index,))


def pack(obj: Any) -> Tuple[Any, List[Tensor]]:
    """``(skeleton, tensors)``: the nest with tensors replaced by :class:`_Slot` s."""
    tensors: List[Tensor] = []

    def walk(o):
        if isinstance(o, Tensor):
            tensors.append(o.detach())
            return _Slot(len(tensors) - 1)
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)) and type(o) in (list, tuple):
            return type(o)(walk(v) for v in o)
        if hasattr(o, 'cpu') and callable(o.cpu) and not isinstance(o, torch.nn.Module):
            # data samples (mmengine BaseDataElement) travel pickled: on the CPU, so that unpickling
            # never touches the sender's GPU; the receiver moves them to its own device
            return o.cpu()
        return o
    return walk(obj), tensors


def unpack(skeleton: Any, tensors: List[Tensor]) -> Any:
    def walk(o):
        if isinstance(o, _Slot):
            return tensors[o.index]
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)) and type(o) in (list, tuple):
            return type(o)(walk(v) for v in o)
        return o
    return walk(skeleton)


def move_to(obj: Any, device: torch.device) -> Any:
    """Tensors (and objects with ``.to``, e.g. data samples) of a nest on ``device``."""
    if isinstance(obj, Tensor):
        return obj if obj.device == device else obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: move_to(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        return type(obj)(move_to(v, device) for v in obj)
    if hasattr(obj, 'to') and callable(obj.to) and not isinstance(obj, torch.nn.Module):
        try:
            return obj.to(device)
        except TypeError:
            return obj
    return obj


class TransportError(RuntimeError):
    """A send or receive failed: usually the neighbour (global rank ``peer``) died; its own error,
    if it could report one, is the real cause."""

    def __init__(self, message: str, peer: Optional[int] = None) -> None:
        super().__init__(message)
        self.peer = peer


def take(q: 'queue.Queue', check_abort: Optional[Callable[[], None]]) -> Tuple[Any, float]:
    """``(item, seconds waited)``: the next item a receiving thread put on ``q`` (calling
    ``check_abort`` while waiting); an exception put there is raised."""
    t0 = time.perf_counter()
    while True:
        try:
            item = q.get(timeout=0.2)
            break
        except queue.Empty:
            if check_abort is not None:
                check_abort()
    if isinstance(item, BaseException):
        raise item
    return item, time.perf_counter() - t0


class PendingSends:
    """``isend`` s to one rank on one group, kept with their buffers until they complete."""

    def __init__(self, dst: int, group, what: str = 'sending') -> None:
        self.dst, self.group, self.what = dst, group, what
        self._works: List[Tuple[list, list]] = []

    def start(self, bufs: List[Tensor]) -> None:
        try:
            works = [dist.isend(b, dst=self.dst, group=self.group) for b in bufs]
        except Exception as e:  # noqa: BLE001
            raise TransportError(f'{self.what} to rank {self.dst} failed: {e}', self.dst) from e
        self._works.append((works, bufs))

    def reap(self, limit: int) -> None:
        """Wait for the oldest messages until at most ``limit`` are in flight."""
        while len(self._works) > limit:
            works, _ = self._works.pop(0)
            for w in works:
                try:
                    w.wait()
                except Exception as e:  # noqa: BLE001
                    raise TransportError(f'{self.what} to rank {self.dst} failed: {e}', self.dst) from e


def _encode_header(payload: bytes, device) -> Tuple[Tensor, Optional[Tensor]]:
    n = len(payload)
    head = torch.zeros(HEADER_BYTES, dtype=torch.uint8)
    head[:_LEN] = torch.tensor(list(n.to_bytes(_LEN, 'little')), dtype=torch.uint8)
    first = payload[:HEADER_BYTES - _LEN]
    head[_LEN:_LEN + len(first)] = torch.frombuffer(bytearray(first), dtype=torch.uint8)
    rest = None
    if n > HEADER_BYTES - _LEN:
        rest = torch.frombuffer(bytearray(payload[HEADER_BYTES - _LEN:]), dtype=torch.uint8).clone()
    return head.to(device), (rest.to(device) if rest is not None else None)


class Sender:
    """Sends messages downstream (stage s -> s+1) under the credit rule (see the module doc).

    Args:
        link: process group of the link; dst: global rank of the next stage.
        credit_group: process group the credits come back on.
        queue_size: Q.
        comm_device: where tensors must be for the backend (CPU for gloo, the GPU for nccl).
        on_wait: called with the seconds spent waiting for a credit (instrumentation).
    """

    def __init__(self, link, dst: int, credit_group, queue_size: int, comm_device: torch.device) -> None:
        self.link, self.dst, self.credit_group = link, dst, credit_group
        self.queue_size = queue_size
        self.comm_device = comm_device
        self.sent = 0
        self.credits = 0
        self.credit_wait_s = 0.0
        self._sends = PendingSends(dst, link)
        self._credit_buf = torch.zeros(1, dtype=torch.int64, device=comm_device)
        self.log: List[Tuple[int, float, int]] = []  # (message index, time sent, credits held)

    def _take_credit(self) -> None:
        t0 = time.perf_counter()
        try:
            dist.recv(self._credit_buf, src=self.dst, group=self.credit_group)
        except Exception as e:  # noqa: BLE001
            raise TransportError(f'waiting for a credit from rank {self.dst} failed: {e}', self.dst) from e
        got = int(self._credit_buf.item())
        if got != self.credits:
            raise TransportError(f'credit {got} from rank {self.dst} arrived out of order (expected {self.credits})',
                                 self.dst)
        self.credits += 1
        self.credit_wait_s += time.perf_counter() - t0

    def send(self, obj: Any, control: Dict[str, Any]) -> None:
        while self.sent - self.credits >= self.queue_size:
            self._take_credit()
        skeleton, tensors = pack(obj)
        wire = []
        for t in tensors:
            t = t.contiguous()
            if t.device != self.comm_device:
                t = t.to(self.comm_device)
            wire.append(t)
        meta = dict(skeleton=skeleton, tensors=[(tuple(t.shape), t.dtype) for t in wire], control=control)
        head, rest = _encode_header(pickle.dumps(meta, protocol=pickle.HIGHEST_PROTOCOL), self.comm_device)
        bufs = [head] + ([rest] if rest is not None else []) + wire
        self._sends.start(bufs)
        if len(self.log) < LOG_LIMIT:
            self.log.append((self.sent, time.monotonic(), self.credits))
        self.sent += 1
        self._sends.reap(limit=self.queue_size)

    def close(self) -> None:
        """Wait for every send and collect every outstanding credit (the receiver's credit sends
        then complete too)."""
        self._sends.reap(limit=0)
        while self.credits < self.sent:
            self._take_credit()


class Receiver:
    """Receives messages from upstream on a background thread; ``get()`` hands them out in order
    and returns the credit of each message it hands out.

    Args:
        expected: number of messages to receive (the thread ends after the last one, or after a
            message whose control has ``stop``: upstream ended the run early).
        device: where the main thread wants the tensors.
        check_abort: called while waiting; raises to abandon the wait (watchdog).
    """

    def __init__(self, link, src: int, credit_group, expected: int, comm_device: torch.device,
                 device: torch.device, check_abort: Optional[Callable[[], None]] = None) -> None:
        self.link, self.src, self.credit_group = link, src, credit_group
        self.expected = expected
        self.comm_device, self.device = comm_device, device
        self.check_abort = check_abort
        self.taken = 0
        self.wait_s = 0.0
        self._q: 'queue.Queue' = queue.Queue()
        self._credit_works: List[Tuple[Any, Tensor]] = []
        self.log: List[Tuple[int, float]] = []  # (message index, time taken)
        self._thread = threading.Thread(target=self._loop, name=f'lv-pipeline-recv-from-{src}', daemon=True)
        if expected > 0:
            self._thread.start()

    def _recv_one(self) -> Any:
        if self.comm_device.type == 'cuda':
            torch.cuda.set_device(self.comm_device)
        head = torch.empty(HEADER_BYTES, dtype=torch.uint8, device=self.comm_device)
        dist.recv(head, src=self.src, group=self.link)
        head = head.cpu()
        n = int.from_bytes(bytes(head[:_LEN].tolist()), 'little')
        payload = bytes(head[_LEN:_LEN + min(n, HEADER_BYTES - _LEN)].numpy().tobytes())
        if n > HEADER_BYTES - _LEN:
            rest = torch.empty(n - (HEADER_BYTES - _LEN), dtype=torch.uint8, device=self.comm_device)
            dist.recv(rest, src=self.src, group=self.link)
            payload += rest.cpu().numpy().tobytes()
        meta = pickle.loads(payload)
        tensors = []
        for shape, dtype in meta['tensors']:
            t = torch.empty(shape, dtype=dtype, device=self.comm_device)
            dist.recv(t, src=self.src, group=self.link)
            tensors.append(t)
        return meta['control'], unpack(meta['skeleton'], tensors)

    def _loop(self) -> None:
        try:
            for _ in range(self.expected):
                item = self._recv_one()
                self._q.put(item)
                if item[0].get('stop') is not None:  # upstream stopped early (interrupt): nothing follows
                    break
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            self._q.put(TransportError(f'receiving from rank {self.src} failed: {type(e).__name__}: {e}', self.src))

    def get(self) -> Tuple[Dict[str, Any], Any]:
        (control, obj), waited = take(self._q, self.check_abort)
        self.wait_s += waited
        if len(self.log) < LOG_LIMIT:
            self.log.append((self.taken, time.monotonic()))
        credit = torch.tensor([self.taken], dtype=torch.int64, device=self.comm_device)
        try:  # the upstream may have died right after its last send: its own report is the cause
            self._credit_works.append((dist.isend(credit, dst=self.src, group=self.credit_group), credit))
            self._credit_works = [(w, c) for w, c in self._credit_works if not w.is_completed()]
        except Exception as e:  # noqa: BLE001
            raise TransportError(f'returning a credit to rank {self.src} failed: {e}', self.src) from e
        self.taken += 1
        return control, move_to(obj, self.device)

    def close(self) -> None:
        try:
            for w, _ in self._credit_works:
                w.wait()
        except Exception as e:  # noqa: BLE001
            raise TransportError(f'returning a credit to rank {self.src} failed: {e}', self.src) from e
        self._credit_works.clear()
        self._thread.join(timeout=5.0) if self._thread.is_alive() else None
