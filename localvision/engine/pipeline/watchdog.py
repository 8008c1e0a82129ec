"""Failure propagation across the pipeline: a module that raises or dies stops every rank.

Without it, the neighbours of a failed stage would wait in ``recv`` until the process group's
timeout (30 minutes by default). Every rank runs a :class:`Watchdog` thread that talks to the
job's rendezvous store (the TCP store ``torch.distributed`` was initialised with; torchrun's agent
hosts it, so it outlives the workers):

- a rank whose module raises writes ``fail/<rank>`` (the message names the stage, the module's
  blocks and the error) before it exits; every other rank's watchdog sees it within a fraction
  of a second, prints ``stopping: <that message>`` and exits with status 1;
- every rank writes a heartbeat; a rank whose heartbeat is older than ``heartbeat_timeout``
  (killed, stuck) is reported the same way by the others;
- a rank that cannot reach the store any more (the process hosting it died) stops too.

It also spreads a *stop request* (Ctrl-C / SIGTERM that reached any rank, read from
``stop_source``): every rank's :attr:`Watchdog.stop_requested` becomes the reason, and stage 0 ends
the run at the next iteration boundary with a checkpoint.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from datetime import timedelta
from typing import Callable, Optional

import torch.distributed as dist


def _client(timeout_s: float = 30.0):
    host = os.environ.get('MASTER_ADDR', '127.0.0.1')
    port = int(os.environ.get('MASTER_PORT', '29500'))
    return dist.TCPStore(host, port, is_master=False, timeout=timedelta(seconds=timeout_s))


class PipelineAbort(RuntimeError):
    """Raised in the main thread when another rank failed (the watchdog's message is the cause)."""


class Watchdog:
    """See the module doc. ``describe(rank)`` names the stage / module a rank runs."""

    def __init__(self, rank: int, world_size: int, describe: Callable[[int], str],
                 heartbeat_timeout: float = 15.0, interval: float = 0.25, exit_on_failure: bool = True,
                 stop_source: Optional[Callable[[], Optional[str]]] = None) -> None:
        self.rank, self.world = rank, world_size
        self.describe = describe
        self.heartbeat_timeout = heartbeat_timeout
        self.interval = interval
        self.exit_on_failure = exit_on_failure
        run = os.environ.get('TORCHELASTIC_RUN_ID', 'local')
        self.prefix = f"lv_pipeline/{run}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
        self._store = _client()          # used by the watchdog thread only
        self._main = _client()           # used by the main thread only
        self._stop = threading.Event()
        self._done = False
        self._own_failure = False
        self.abort_message: Optional[str] = None
        self.stop_requested: Optional[str] = None  # why the run should end early (set by any rank)
        self.stop_source = stop_source  # polled: this rank's own stop request (a signal), or None
        self._stop_published = False
        self._thread = threading.Thread(target=self._loop, name='lv-pipeline-watchdog', daemon=True)
        # without torchrun's agent, rank 0's process hosts the store: it must outlive the others' reads
        self._leave_lock, self._left = threading.Lock(), False
        self.hosts_store = rank == 0 and os.environ.get('TORCHELASTIC_USE_AGENT_STORE') != 'True'
        self._main.set(self._key(f'hb/{rank}'), str(time.time()))

    def _key(self, k: str) -> str:
        return self.prefix + k

    # -- main thread -------------------------------------------------------------------------
    def start(self) -> 'Watchdog':
        self._thread.start()
        return self

    def report_failure(self, message: str) -> None:
        """Publish this rank's failure (the first line others print)."""
        self._own_failure = True
        try:
            self._main.set(self._key(f'fail/{self.rank}'), json.dumps(dict(t=time.time(), msg=message)))
            self._main.add(self._key('nfail'), 1)
        except Exception:  # noqa: BLE001 - the store may be gone; torchrun still stops the job
            pass

    def other_failure(self, wait_s: float = 0.0) -> Optional[str]:
        """The earliest failure another rank reported, waiting up to ``wait_s`` for one."""
        deadline = time.time() + wait_s
        while True:
            try:
                msg = self._earliest(self._main, exclude_self=True)
            except Exception:  # noqa: BLE001
                msg = None
            if msg is not None or time.time() >= deadline:
                return msg
            time.sleep(0.1)

    def check_abort(self) -> None:
        """Raise :class:`PipelineAbort` if the watchdog found a failure elsewhere."""
        if self.abort_message is not None:
            raise PipelineAbort(self.abort_message)

    def leave(self, store=None, linger_s: float = 3.0) -> None:
        """Before exiting on a failure: count this rank as stopped; the rank hosting the store
        waits (up to ``linger_s``) until every other rank has stopped, so they all read the message."""
        store = store or self._main
        with self._leave_lock:
            first, self._left = not self._left, True
        try:
            if first:
                store.add(self._key('nstopped'), 1)
            if self.hosts_store:
                deadline = time.time() + linger_s
                while time.time() < deadline:
                    dead = sum(store.check([self._key(f'dead/{r}')]) for r in range(self.world))
                    if int(store.add(self._key('nstopped'), 0)) >= self.world - dead:
                        break
                    time.sleep(0.05)
        except Exception:  # noqa: BLE001
            pass

    def count(self, name: str) -> int:
        """Add one to the job-wide counter ``name`` and return its new value (main thread)."""
        return int(self._main.add(self._key(name), 1))

    def mark_dead(self, rank: int) -> None:
        """Record that ``rank`` vanished (it will never count itself as stopped)."""
        try:
            self._main.set(self._key(f'dead/{rank}'), '1')
        except Exception:  # noqa: BLE001
            pass

    def mark_done(self) -> None:
        self._done = True
        try:
            self._main.set(self._key(f'done/{self.rank}'), '1')
        except Exception:  # noqa: BLE001
            pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    # -- the thread --------------------------------------------------------------------------
    def _earliest(self, store, exclude_self: bool) -> Optional[str]:
        if int(store.add(self._key('nfail'), 0)) == 0:
            return None
        found = []
        for r in range(self.world):
            if exclude_self and r == self.rank:
                continue
            key = self._key(f'fail/{r}')
            if store.check([key]):
                found.append(json.loads(store.get(key).decode()))
        if not found:
            return None
        return min(found, key=lambda d: d['t'])['msg']

    def _stale(self, store) -> Optional[str]:
        now = time.time()
        for r in range(self.world):
            if r == self.rank or store.check([self._key(f'done/{r}')]):
                continue
            key = self._key(f'hb/{r}')
            if not store.check([key]):
                continue
            age = now - float(store.get(key).decode())
            if age > self.heartbeat_timeout:
                return (f'{self.describe(r)} stopped responding (no heartbeat for {age:.0f} s: killed, '
                        'out of memory or stuck)')
        return None

    def _sync_stop(self, store) -> None:
        local = self.stop_source() if self.stop_source is not None else None
        if local is not None and not self._stop_published:
            store.compare_set(self._key('stop'), '', local)  # the first request wins
            self._stop_published = True
        if self.stop_requested is None and store.check([self._key('stop')]):
            self.stop_requested = store.get(self._key('stop')).decode()

    def _abort(self, message: str) -> None:
        self.abort_message = message
        if self._own_failure:
            return  # this rank's main thread is reporting its own error
        print(f'[pipeline {self.describe(self.rank)}] stopping: {message}', file=sys.stderr, flush=True)
        if self.exit_on_failure:
            sys.stdout.flush()
            self.leave(self._store)
            os._exit(1)

    def _loop(self) -> None:
        last_stale_check = 0.0
        while not self._stop.wait(self.interval):
            try:
                self._store.set(self._key(f'hb/{self.rank}'), str(time.time()))
                self._sync_stop(self._store)
                msg = self._earliest(self._store, exclude_self=True)
                if msg is None and time.time() - last_stale_check > 1.0:
                    last_stale_check = time.time()
                    msg = self._stale(self._store)
            except Exception as e:  # noqa: BLE001
                if self._done:
                    return
                msg = f'lost contact with the job store ({type(e).__name__}: {e}); the rank hosting it died?'
            if msg is not None:
                self._abort(msg)
                return
