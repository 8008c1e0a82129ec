"""Ending a run on Ctrl-C / SIGTERM at an iteration boundary, with nothing trained lost.

A signal only sets a flag (:class:`StopOnSignal`); :class:`StopAtIterationHook` checks it after
every training iteration (all ranks agree through one tiny all-reduce, so a signal that reaches a
single rank stops them all at the same iteration) and raises :class:`TrainingInterrupted`.
``tools/train.py`` then saves a checkpoint of exactly the iterations that finished, which
``--resume`` continues; :class:`LocalEpochBasedTrainLoop` resumes mid-epoch by skipping the
batches of that epoch already trained (mmengine's epoch loop would restart the epoch, or skip the
rest of it). A second Ctrl-C stops at once, without saving.

Why not stop on the ``KeyboardInterrupt`` itself: it can arrive in the middle of an iteration,
after some modules stepped and before others did (``PerModuleBackward(step_each_module=True)``
or ``step_in_backward=True``), and a checkpoint of that state would be neither iteration.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Optional

import torch
from mmengine.hooks import Hook
from mmengine.registry import LOOPS
from mmengine.runner import EpochBasedTrainLoop


class TrainingInterrupted(Exception):
    """Raised after the iteration in which a stop was requested; ``signal`` names the request."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f'stopped by {signal_name}')
        self.signal = signal_name


def _ignore(signum, frame) -> None:
    """A Python-level no-op handler (SIG_DFL would make an already tripped signal print a warning)."""


class StopOnSignal:
    """Context manager: SIGINT / SIGTERM set :attr:`requested` instead of killing the process
    (a second SIGINT raises ``KeyboardInterrupt``: stop now). Outside the main thread it does nothing."""

    def __init__(self, announce: bool = True) -> None:
        self.requested: Optional[str] = None
        self.announce = announce
        self._previous = {}

    def _handler(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.requested is None:
            if self.announce:
                print(f'{name}: finishing the iteration in progress, then saving a checkpoint '
                      '(Ctrl-C again stops at once, without saving)', file=sys.stderr, flush=True)
            # a signal sent to the whole process group (a scheduler's SIGTERM) also kills the data
            # loader's workers, and torch's SIGCHLD handler would raise that in the middle of the
            # iteration; no more data is needed before the stop, so worker deaths are ignored now
            self._previous.setdefault(signal.SIGCHLD, signal.getsignal(signal.SIGCHLD))
            signal.signal(signal.SIGCHLD, _ignore)
        self.requested = self.requested or name

    def __enter__(self) -> 'StopOnSignal':
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def data_loader_stopped(self, error: BaseException) -> bool:
        """Whether ``error`` is the data loader noticing, while waiting for a batch, that the
        stop signal also ended its workers (the iteration had not started: nothing is lost):
        torch's "DataLoader worker ... exited" error, or the end of the connection to a worker
        (``EOFError`` / ``ConnectionError``) raised inside the data loader's fetch."""
        if self.requested is None:
            return False
        if isinstance(error, RuntimeError):
            return 'DataLoader worker' in str(error)
        if isinstance(error, (EOFError, ConnectionError)):
            tb = error.__traceback__
            while tb is not None:
                if tb.tb_frame.f_code.co_filename.endswith(os.path.join('torch', 'utils', 'data', 'dataloader.py')):
                    return True
                tb = tb.tb_next
        return False


class StopAtIterationHook(Hook):
    """After each training iteration: if any rank's :class:`StopOnSignal` was triggered, raise
    :class:`TrainingInterrupted` on every rank (after the logger and checkpoint hooks ran)."""

    priority = 'LOWEST'

    def __init__(self, stop: StopOnSignal) -> None:
        self.stop = stop

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        from mmengine.dist import all_reduce, get_world_size
        requested = self.stop.requested is not None
        if get_world_size() > 1:
            flag = torch.tensor([int(requested)])
            all_reduce(flag, op='max')
            requested = bool(flag.item())
        if requested:
            raise TrainingInterrupted(self.stop.requested or 'a signal on another rank')


@LOOPS.register_module()
class LocalEpochBasedTrainLoop(EpochBasedTrainLoop):
    """mmengine's ``EpochBasedTrainLoop`` that resumes in the middle of an epoch: when the
    checkpoint's iteration lies inside its epoch, the batches of that epoch already trained are
    skipped (the sampler gives the same order for the same epoch and seed), as mmengine's
    ``IterBasedTrainLoop`` does. Without such a checkpoint it is mmengine's loop."""

    def run_epoch(self) -> None:
        n = len(self.dataloader)
        done = self._iter - self._epoch * n
        if done <= 0:
            return super().run_epoch()
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        if done < n:
            self.runner.logger.info(f'resuming inside epoch {self._epoch + 1}: skipping its {done} '
                                    'batches already trained')
            batches = iter(self.dataloader)
            for _ in range(done):
                next(batches)
            for idx, data_batch in enumerate(batches, start=done):
                self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1
