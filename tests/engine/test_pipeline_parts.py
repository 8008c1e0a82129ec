"""The parts of a pipeline stage that need no process group: intervals, schedulers, data position,
RNG, and the per-unit step it shares with the single-process executor."""
import pickle
import random

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper

from localvision.engine.executors import backward_unit, finish_step, forward_unit_loss
from localvision.engine.pipeline.data import ReplicaSampler, TrainBatches, rng_state, set_rng_state
from localvision.engine.pipeline.intervals import Intervals, build_param_schedulers
from localvision.errors import InputError


def cfg(**kw):
    base = dict(train_cfg=dict(max_epochs=3, val_interval=2), val_dataloader=dict(batch_size=1),
                val_evaluator=dict(type='Accuracy'),
                default_hooks=dict(checkpoint=dict(interval=1), logger=dict(interval=5)))
    base.update(kw)
    return Config(base)


def test_epoch_based_intervals_count_global_batches():
    iv = Intervals.from_cfg(cfg(), iters_per_epoch=4)
    assert (iv.total_iters, iv.by_epoch, iv.checkpoint_every) == (12, True, 4)
    assert [d for d in range(1, 13) if iv.checkpoint_due(d)] == [4, 8, 12]
    assert [d for d in range(1, 13) if iv.val_due(d)] == [8]  # epoch 2; the end is validated on the export
    assert [d for d in range(1, 13) if iv.log_due(d)] == [5, 10, 12]
    assert [d for d in range(1, 13) if iv.epoch_ends(d)] == [4, 8, 12]


def test_iteration_based_intervals():
    iv = Intervals.from_cfg(cfg(train_cfg=dict(max_iters=10, val_interval=5, val_begin=6),
                                default_hooks=dict(checkpoint=dict(interval=3, by_epoch=False))), iters_per_epoch=4)
    assert (iv.total_iters, iv.by_epoch, iv.log_every) == (10, False, 10)
    assert [d for d in range(1, 11) if iv.checkpoint_due(d)] == [3, 6, 9, 10]
    assert [d for d in range(1, 11) if iv.val_due(d)] == []  # 5 is before val_begin, 10 is the end
    assert not any(iv.epoch_ends(d) for d in range(1, 11))
    assert not Intervals.from_cfg(cfg(val_evaluator=None), iters_per_epoch=4).val_due(8)


def test_iteration_based_training_validates_every_1000_iterations_by_default():
    """mmengine's IterBasedTrainLoop defaults to val_interval=1000 (EpochBasedTrainLoop to 1 epoch)."""
    iv = Intervals.from_cfg(cfg(train_cfg=dict(type='IterBasedTrainLoop', max_iters=2500)), iters_per_epoch=4)
    assert [d for d in range(1, 2501) if iv.val_due(d)] == [1000, 2000]
    assert Intervals.from_cfg(cfg(train_cfg=dict(max_epochs=3)), iters_per_epoch=4).val_interval == 1


@pytest.mark.parametrize('by_epoch', [True, False], ids=['epochs', 'iterations'])
def test_dynamic_intervals_validate_where_mmengine_loops_do(by_epoch):
    """train_cfg.dynamic_intervals: the boundaries mmengine's own loops validate at (their
    _decide_current_val_interval on the same milestones; the last one is left to the export)."""
    from types import SimpleNamespace

    from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
    from mmengine.runner.utils import calc_dynamic_intervals
    n, ipe = 20, 3
    length = dict(max_epochs=n) if by_epoch else dict(max_iters=n)
    train_cfg = dict(**length, val_interval=5, val_begin=2, dynamic_intervals=[(8, 2), (15, 1)])
    iv = Intervals.from_cfg(cfg(train_cfg=train_cfg), iters_per_epoch=ipe)
    loop = SimpleNamespace(val_interval=5)
    loop.dynamic_milestones, loop.dynamic_intervals = calc_dynamic_intervals(5, train_cfg['dynamic_intervals'])
    expected = []
    for count in range(1, n):  # epochs (iterations) done; mmengine: after the count, decide, then validate
        loop.epoch = loop._iter = count
        (EpochBasedTrainLoop if by_epoch else IterBasedTrainLoop)._decide_current_val_interval(loop)
        if count >= 2 and count % loop.val_interval == 0:
            expected.append(count * ipe if by_epoch else count)
    got = [d for d in range(1, iv.total_iters + 1) if iv.val_due(d)]
    assert got == expected and len(expected) > 6


def test_training_loops_it_cannot_reproduce_are_refused():
    from localvision.engine.pipeline.config import check_train_cfg
    for ok in ('EpochBasedTrainLoop', 'IterBasedTrainLoop', 'LocalEpochBasedTrainLoop', 'mmengine.IterBasedTrainLoop'):
        check_train_cfg(cfg(train_cfg=dict(type=ok, max_iters=4)))
    with pytest.raises(InputError, match=r"train_cfg.type='TeacherLoop' is not supported with pipeline training"):
        check_train_cfg(cfg(train_cfg=dict(type='TeacherLoop', max_iters=4)))
    with pytest.raises(InputError, match=r"train_cfg keys \['ema'\] are not supported with pipeline training"):
        check_train_cfg(cfg(train_cfg=dict(max_epochs=4, ema=True)))


def test_a_run_without_a_length_is_rejected():
    with pytest.raises(InputError, match='max_epochs or train_cfg.max_iters'):
        Intervals.from_cfg(cfg(train_cfg=dict()), iters_per_epoch=4)


def test_schedulers_count_optimizer_steps():
    ow = OptimWrapper(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0))
    c = cfg(train_cfg=dict(max_iters=6), param_scheduler=[
        dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0),
        dict(type='MultiStepLR', milestones=[1], by_epoch=True)])
    iv = Intervals.from_cfg(c, iters_per_epoch=3)
    linear, step = build_param_schedulers(c, ow, iv, micro_batches=4, micros_per_step=2)  # 2 steps per iteration
    assert (linear.end, step.end) == (12, 2)  # 6 iterations x 2 steps; ceil(6 / 3) epochs


def test_replica_sampler_skips_what_was_trained():
    data = list(range(10))
    full = list(ReplicaSampler(data, seed=3, rank=1, world_size=2))
    s = ReplicaSampler(data, seed=3, rank=1, world_size=2)
    s.set_epoch(0, skip=2)
    assert list(s) == full[2:] and len(s) == len(full) - 2


def test_train_batches_peek_then_next():
    with pytest.raises(InputError, match='iters_per_epoch'):
        TrainBatches(cfg(), 0, 1, 0, batch_source=iter(range(3)))
    batches = TrainBatches(cfg(), 0, 1, 0, batch_source=iter(range(3)), iters_per_epoch=3)
    assert batches.peek() == 0 and batches.peek() == 0
    assert [next(batches), next(batches), next(batches)] == [0, 1, 2]


def test_rng_state_survives_a_round_trip_through_lists():
    state = rng_state()
    state['python'] = list(state['python'])  # what a checkpoint may give back
    state = pickle.loads(pickle.dumps(state))
    draws = (random.random(), np.random.rand(), torch.rand(1))
    set_rng_state(state)
    assert (random.random(), np.random.rand()) == draws[:2] and torch.equal(torch.rand(1), draws[2])


class _Units(torch.nn.Module):
    num_units = 1

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2))

    def forward_unit(self, k, h, ctx):
        out = h * self.w
        return out, dict(loss_x=out.sum())

    def parse_losses(self, losses):
        return losses['loss_x'], dict(loss=losses['loss_x'].detach())


def test_shared_unit_step_counts_only_counted_backwards():
    m = _Units()
    ow = OptimWrapper(torch.optim.SGD(m.parameters(), lr=0.1), accumulative_counts=2)
    ow.initialize_count_status(m, 0, 4)
    out, loss, log_vars = forward_unit_loss(m, 0, torch.ones(2), None, ow)
    assert torch.equal(out, torch.ones(2)) and float(log_vars['loss']) == 2.0
    backward_unit(ow, loss, counted=False)
    assert ow._inner_count == 0
    backward_unit(ow, forward_unit_loss(m, 0, torch.ones(2), None, ow)[1])
    finish_step(ow)
    assert ow._inner_count == 1 and torch.equal(m.w.detach(), torch.ones(2))  # not yet a step: 1 of 2
    backward_unit(ow, forward_unit_loss(m, 0, torch.ones(2), None, ow)[1])
    finish_step(ow)
    assert torch.allclose(m.w.detach(), torch.full((2,), 1 - 0.1 * 1.5))  # 3 backwards / 2 accumulated, one step
    assert m.w.grad is None or not m.w.grad.any()
