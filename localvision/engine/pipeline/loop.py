"""The iterations of one pipeline stage: receive, forward, send, backward, step; the schedule.

Stage k receives the detached output of stage k-1 (with whatever context later units read:
labels, the image, ContSup's remembered inputs), runs unit k's forward and loss, sends its
detached output on at once, then runs its backward and, when due, its own optimizer step, through
the per-unit step of the single-process executor (``forward_unit_loss``, ``backward_unit``,
``finish_step`` of :mod:`localvision.engine.executors`). Stage 0 reads the data and runs the data
preprocessor.

Schedules (``pipeline.schedule``):

- ``'sync'``: every stage accumulates the gradients of the M micro-batches of a global batch and
  steps once. Parameters equal those of the single-process run (``PerModuleBackward`` with
  ``accumulative_counts=M`` over the same micro-batches), up to float order. No pipeline flush is
  needed: stage k's weights only change by stage k's own step, so stage k can start global batch
  t+1 while stage k+1 still works on batch t and the result is still the sequential one.
- ``'async'``: every stage steps every ``step_every`` micro-batches; no stage ever waits for a
  global batch to end.

Both run under the bounded queue of :mod:`.transport`: stage k is at most ``queue_size``
micro-batches ahead of stage k+1. With ``replicas`` R > 1 the R ranks of a stage all-reduce that
stage's gradients before each step (data parallelism per stage).

**Interrupt.** Ctrl-C or SIGTERM does not kill a stage: stage 0 finishes the iteration in progress
and sends a *stop* message down the pipeline instead of the next micro-batch; every stage drains
what is in flight, reaches the same iteration boundary, and saves its checkpoint there, so
``--resume`` continues with nothing lost.

After every iteration the loop logs, and checkpoints and validates when
:class:`~.intervals.Intervals` says so.
"""
from __future__ import annotations

import json
import os.path as osp
import time
from collections import defaultdict
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import torch
import torch.distributed as dist

from localvision.engine.executors import backward_unit, finish_step, forward_unit_loss
from localvision.structures.local_context import LocalContext
from localvision.utils.memory import PeakMemory, format_bytes

from .data import split_micro
from .intervals import Intervals, step_schedulers
from .stage import sendable_extras
from .transport import Receiver, Sender

if TYPE_CHECKING:
    from .runner import PipelineRunner


class StageLog:
    """A stage's record of every iteration (``stage{k}_replica{r}.jsonl``, readable while training
    runs) and, on replica 0 every ``logger.interval`` iterations, a ``Pipeline(train)`` line."""

    def __init__(self, log_dir: str, stage: int, replica: int, intervals: Intervals) -> None:
        self.stage, self.replica, self.intervals = stage, replica, intervals
        self._file = open(osp.join(log_dir, f'stage{stage}_replica{replica}.jsonl'), 'a')

    def write(self, done: int, stats: Dict[str, float], n: int, seconds: float, lr: Optional[float]) -> None:
        """Iteration ``done``: ``stats`` summed over its ``n`` micro-batches, its time and learning rate."""
        rec = dict(iter=done, stage=self.stage, replica=self.replica, time=seconds, lr=lr)
        rec.update({k: v / n for k, v in stats.items()})
        self._file.write(json.dumps(rec) + '\n')
        self._file.flush()
        if self.replica == 0 and self.intervals.log_due(done):
            body = '  '.join(f'{k}: {v:.4f}' for k, v in rec.items() if k not in ('iter', 'stage', 'replica'))
            print(f'Pipeline(train) [{done}/{self.intervals.total_iters}] stage {self.stage}: {body}', flush=True)

    def close(self) -> None:
        self._file.close()


class StageLoop:
    """Runs a set-up :class:`~.runner.PipelineRunner`'s stage from its start to its last iteration
    (or to the iteration boundary where a stop arrives). See the module doc."""

    def __init__(self, runner: 'PipelineRunner') -> None:
        self.runner = runner
        self.position: tuple = (None, None)  # (iteration, micro-batch) in progress, for failure messages
        self.interrupted_at: Optional[int] = None
        self.send: Optional[Sender] = None
        self.recv: Optional[Receiver] = None
        self.compute_s = self.data_s = self.step_s = 0.0
        self.memory: Optional[Dict[str, Any]] = None

    def run(self) -> Dict[str, Any]:
        """Train; returns this rank's summary (also written to ``summary_rank{rank}.json``)."""
        r = self.runner
        topo, total = r.topo, r.intervals.total_iters
        if not topo.is_first:
            n_msgs = (total - r.start_iter) * r.pc.micro_batches
            self.recv = Receiver(topo.in_link, topo.prev_rank, topo.in_credit, n_msgs, r.comm_device, r.device,
                                 check_abort=r.watchdog.check_abort)
        if not topo.is_last:
            self.send = Sender(topo.out_link, topo.next_rank, topo.out_credit, r.pc.queue_size, r.comm_device)
        log = StageLog(r.log_dir, r.stage, topo.replica, r.intervals)
        t_start = time.perf_counter()
        ends: List[float] = []
        for it in range(r.start_iter, total):
            t_it = time.perf_counter()
            if topo.is_first and self._stop_requested():
                self._stop_at(it)
                break
            micro = self._read_batch() if topo.is_first else None
            profile = it == r.profile_memory_iter  # the live-tensor (CPU) or allocator (CUDA) peak
            with PeakMemory(r.device, (r.model, r.optim_wrapper.optimizer)) if profile else nullcontext() as mem:
                stats = self._iteration(it, micro)
            if mem is not None:
                self.memory = dict(peak_bytes=mem.peak_bytes, device=str(r.device), iteration=it)
                print(f'Pipeline(memory) stage {r.stage} replica {topo.replica}: peak training memory '
                      f'(iteration {it}, {r.device}): {format_bytes(mem.peak_bytes)}', flush=True)
            if self.interrupted_at is not None:
                break
            done = it + 1
            if r.follow_out is not None:  # the previous stage's objectives read these weights (MAN)
                r.follow_out.after(done)
            if r.intervals.epoch_ends(done):
                step_schedulers(r.schedulers, by_epoch=True)
            ends.append(time.perf_counter())
            log.write(done, stats, r.pc.micro_batches, time.perf_counter() - t_it, self._lr())
            self._checkpoint_and_validate(done)
        self.position = ('end', None)
        if self.interrupted_at is not None and self.interrupted_at > r.start_iter \
                and r.checkpointer.saved_at != self.interrupted_at:
            r.checkpointer.save(self.interrupted_at)  # the same boundary on every stage
        for link in (self.send, self.recv, r.follow_out, r.follow_in):
            if link is not None:
                link.close()
        log.close()
        return self._summary(time.perf_counter() - t_start, [t - t_start for t in ends])

    # -- one iteration ---------------------------------------------------------------------------
    def _read_batch(self) -> List[Dict[str, Any]]:
        """Stage 0: the next global batch, preprocessed and cut into micro-batches."""
        r = self.runner
        t0 = time.perf_counter()
        with r.optim_wrapper.optim_context(r.model):
            data = r.model.data_preprocessor(next(r.batches), True)
        micro = split_micro(data, r.pc.micro_batches)
        self.data_s += time.perf_counter() - t0
        return micro

    def _iteration(self, it: int, micro: Optional[List[Dict[str, Any]]]) -> Dict[str, float]:
        """The M micro-batches of iteration ``it``; returns the summed log values."""
        stats: Dict[str, float] = defaultdict(float)
        for j in range(self.runner.pc.micro_batches):
            self.position = (it, j)
            if not self._micro_batch(it, j, micro, stats):
                break
        return stats

    def _micro_batch(self, it: int, j: int, micro: Optional[List[Dict[str, Any]]], stats: Dict[str, float]) -> bool:
        """Micro-batch ``j`` of iteration ``it`` through this stage; ``False``: a stop came instead."""
        r = self.runner
        ow = r.optim_wrapper
        if micro is not None:
            ctx = r.model.make_context(micro[j]['inputs'], micro[j]['data_samples'])
            h = ctx.inputs
        else:
            control, msg = self.recv.get()
            if control.get('stop') is not None and (control['stop'], j) == (it, 0):
                self._stop_at(it)
                return False
            if (control.get('iter'), control.get('micro')) != (it, j):
                raise RuntimeError(f'pipeline out of step: expected iteration {it} micro-batch {j}, '
                                   f'received {control}')
            ctx = self._context_from(msg)
            h = msg['h']
        if r.follow_in is not None:  # the next module's weights as of pipeline.follow_lag iterations ago
            r.follow_in.wait_for(max(it - r.pc.follow_lag, r.start_iter), it)
        t0 = time.perf_counter()
        out, loss, log_vars = forward_unit_loss(r.model, r.stage, h, ctx, ow)
        if self.send is not None:
            self.send.send(dict(h=out.detach(), ctx={f: getattr(ctx, f) for f in r.send_fields},
                                extras=sendable_extras(ctx.extras)), control=dict(iter=it, micro=j))
        backward_unit(ow, loss)
        del out, ctx, h
        self.compute_s += time.perf_counter() - t0
        for name, v in log_vars.items():
            stats[name] += float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
        if ow.should_update():
            t0 = time.perf_counter()
            if r.grad_sync is not None:
                r.grad_sync.launch(0)
            finish_step(ow, r.grad_sync)
            self.step_s += time.perf_counter() - t0
        if (j + 1) % r.pc.micros_per_step == 0:
            step_schedulers(r.schedulers, by_epoch=False)
        return True

    def _context_from(self, msg: Dict[str, Any]) -> LocalContext:
        fields = dict(msg['ctx'])
        if 'inputs' not in fields:
            fields['inputs'] = torch.empty(0, device=self.runner.device)
        return LocalContext(**fields, extras=msg['extras'])

    def _lr(self) -> Optional[float]:
        ow = self.runner.optim_wrapper
        return ow.get_lr()['lr'][0] if ow.param_groups else None

    def _checkpoint_and_validate(self, done: int) -> None:
        r = self.runner
        val_due = r.intervals.val_due(done)
        if r.intervals.checkpoint_due(done) or val_due:
            r.checkpointer.save(done)
        if val_due and r.validator is not None:
            r.validator(done)

    # -- stopping --------------------------------------------------------------------------------
    def _stop_requested(self) -> bool:
        """Stage 0 at an iteration boundary: end the run here? (every replica decides the same)"""
        r = self.runner
        stop = r.signals.requested is not None or r.watchdog.stop_requested is not None
        if r.topo.replicas > 1:
            flag = torch.tensor([int(stop)], device=r.comm_device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=r.topo.dp_group)
            stop = bool(flag.item())
        return stop

    def _stop_at(self, it: int) -> None:
        """End the run before iteration ``it``; tell the next stage (a stop in place of its data)."""
        self.interrupted_at = it
        if self.send is not None:
            self.send.send({}, control=dict(stop=it))

    # -- the end ---------------------------------------------------------------------------------
    def _summary(self, wall_s: float, iter_end_times: List[float]) -> Dict[str, Any]:
        r, send, recv = self.runner, self.send, self.recv
        summary: Dict[str, Any] = dict(
            stage=r.stage, replica=r.topo.replica, rank=r.rank, iters=r.intervals.total_iters - r.start_iter,
            micro_batches=r.pc.micro_batches, wall_s=wall_s, compute_s=self.compute_s, data_s=self.data_s,
            step_s=self.step_s, iter_end_times=iter_end_times,
            recv_wait_s=recv.wait_s if recv else 0.0, credit_wait_s=send.credit_wait_s if send else 0.0,
            sent_log=send.log if send else [], taken_log=recv.log if recv else [],
            queue_size=r.pc.queue_size, freed_bytes=r.freed_bytes, interrupted_at=self.interrupted_at,
            owned_param_bytes=sum(p.numel() * p.element_size() for p in r.owned_params),
            follow_log=r.follow_in.log if r.follow_in else [], follow_wait_s=r.follow_in.wait_s if r.follow_in else 0.0,
            follow_sent=r.follow_out.sent if r.follow_out else [])
        if self.memory is not None:
            summary['memory'] = self.memory
        if r.validator is not None and r.validator.history:
            summary['val_history'] = r.validator.history
        with open(osp.join(r.log_dir, f'summary_rank{r.rank}.json'), 'w') as f:
            json.dump(summary, f)
        return summary
