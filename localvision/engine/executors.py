"""How one training iteration of a split model runs: the source of the memory saving.

A split model exposes ``num_units`` and ``forward_unit(k, h, ctx) -> (h_out, losses)``: unit
k's forward plus its loss (local objective for k < K-1, task loss for the last). Gradients
never cross units because each unit's input is detached from the previous unit's output.

:class:`PerModuleBackward` runs unit k's forward, its loss and its **backward before unit
k+1's forward**, so only one unit's graph is alive at a time. :class:`JointBackward` runs all
forwards, sums the losses and calls one backward: the same gradients, no memory saving (it is
here as the reference the benchmark compares against).
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from typing import Dict, Iterator, Tuple

import torch
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper

from localvision.errors import InputError
from localvision.registry import EXECUTORS

Tensor = torch.Tensor


@contextmanager
def uncounted(optim_wrapper: OptimWrapper) -> Iterator[None]:
    """A backward inside this context does not count as an accumulation step.

    ``OptimWrapper.backward`` counts calls to decide when to step (``accumulative_counts``);
    one iteration of a split model calls backward once per unit but is one step.
    """
    count = optim_wrapper._inner_count
    try:
        yield
    finally:
        optim_wrapper._inner_count = count


def _check_wrapper(optim_wrapper) -> None:
    if not isinstance(optim_wrapper, OptimWrapper):
        raise TypeError(f'local training needs one OptimWrapper (AmpOptimWrapper is fine), got '
                        f'{type(optim_wrapper).__name__}; per-module optimizers are not supported here')


def _merge(log_vars: Dict[str, Tensor], new: Dict[str, Tensor]) -> None:
    for k, v in new.items():
        if k != 'loss':
            log_vars[k] = v


def forward_unit_loss(model, k: int, h: Tensor, ctx,
                      optim_wrapper: OptimWrapper) -> Tuple[Tensor, Tensor, Dict[str, Tensor]]:
    """Unit k's forward (in the wrapper's ``optim_context``: AMP autocast) and its parsed loss.

    Returns ``(out, loss, log_vars)``: the unit's output (not detached), the loss to back-propagate
    and the logged values of ``model.parse_losses``.
    """
    with optim_wrapper.optim_context(model):
        out, losses = model.forward_unit(k, h, ctx)
    loss, log_vars = model.parse_losses(losses)
    return out, loss, log_vars


def backward_unit(optim_wrapper: OptimWrapper, loss: Tensor, counted: bool = True) -> None:
    """One unit's backward through the wrapper (AMP and accumulation loss scaling).

    ``counted=False``: the backward does not count as an accumulation step (see :func:`uncounted`).
    """
    with nullcontext() if counted else uncounted(optim_wrapper):
        optim_wrapper.backward(optim_wrapper.scale_loss(loss))


def finish_step(optim_wrapper: OptimWrapper, grad_sync=None) -> None:
    """Complete gradient synchronisation, then step if this backward ends an accumulation."""
    if grad_sync is not None:
        grad_sync.wait()
    if optim_wrapper.should_update():
        optim_wrapper.step()
        optim_wrapper.zero_grad()


@EXECUTORS.register_module()
class PerModuleBackward:
    """Unit k: forward, loss, backward, detach; then unit k+1. One optimizer step at the end.

    Under data parallelism (``grad_sync``, see :mod:`localvision.engine.distributed`) unit k's
    gradient all-reduce starts right after its backward and runs while unit k+1 computes.

    Args:
        step_each_module: step the optimizer on unit k's parameters right after unit k's
            backward and free their gradients (``zero_grad(set_to_none=True)``), so only one
            unit's gradients are alive at a time (less peak memory). Unit k+1's input was
            computed before the step, so with a per-parameter optimizer (SGD, Adam(W), ...) the
            result equals one step at the end; gradient clipping (``clip_grad``) then applies to
            each unit's gradients separately. Needs a plain ``OptimWrapper`` without gradient
            accumulation; under data parallelism each unit's all-reduce is awaited before its
            step (no overlap with the next unit).
        step_in_backward: go further: update each parameter as soon as its gradient is complete,
            inside the backward pass (``register_post_accumulate_grad_hook``), and free that
            gradient at once, so almost no gradient memory is alive at any time. Same result as
            ``step_each_module`` for per-parameter optimizers; no gradient clipping (it needs all
            gradients after the backward). Under data parallelism the gradients must be averaged
            across processes before the update, so there it acts as ``step_each_module`` (with a
            warning once).
    """

    def __init__(self, step_each_module: bool = False, step_in_backward: bool = False) -> None:
        self.step_each_module = step_each_module or step_in_backward
        self.step_in_backward = step_in_backward
        self._warned = False

    def _check_step_each_module(self, optim_wrapper: OptimWrapper) -> None:
        flag = 'step_in_backward' if self.step_in_backward else 'step_each_module'
        if type(optim_wrapper) is not OptimWrapper or optim_wrapper._accumulative_counts != 1:
            raise InputError(f'model.executor.{flag}=True needs a plain OptimWrapper without gradient '
                             f'accumulation; got {type(optim_wrapper).__name__} with accumulative_counts='
                             f'{optim_wrapper._accumulative_counts} (set {flag}=False)')
        if self.step_in_backward and optim_wrapper.clip_grad_kwargs:
            raise InputError('model.executor.step_in_backward=True cannot clip gradients (clipping needs all '
                             'gradients after the backward); remove optim_wrapper.clip_grad or use step_each_module=True')

    def _backward_stepping(self, model, k: int, optim_wrapper: OptimWrapper, loss: Tensor) -> None:
        """Unit k's backward; each parameter is updated (and its gradient freed) once its gradient is final.

        Only that parameter has a gradient at that moment, so ``optimizer.step()`` updates it alone.
        """
        optimizer = optim_wrapper.optimizer

        def step_param(p: torch.nn.Parameter) -> None:
            optimizer.step()
            p.grad = None

        handles = [p.register_post_accumulate_grad_hook(step_param)
                   for p in model.unit_parameters(k) if p.requires_grad]
        try:
            optim_wrapper.backward(loss)
        finally:
            for h in handles:
                h.remove()

    def __call__(self, model, ctx, optim_wrapper: OptimWrapper, grad_sync=None) -> Dict[str, Tensor]:
        _check_wrapper(optim_wrapper)
        if self.step_each_module:
            self._check_step_each_module(optim_wrapper)
        sync = grad_sync if grad_sync is not None and optim_wrapper.should_sync() else None
        in_backward = self.step_in_backward and grad_sync is None
        if self.step_in_backward and grad_sync is not None and not self._warned:
            self._warned = True
            print_log('model.executor.step_in_backward: gradients are averaged across processes after each '
                      "module's backward, so each module steps after its backward (as step_each_module=True)",
                      logger='current', level=logging.WARNING)
        log_vars: Dict[str, Tensor] = OrderedDict(loss=torch.zeros(()))
        h = ctx.inputs
        last = model.num_units - 1
        total = 0.0
        for k in range(model.num_units):
            out, loss, unit_vars = forward_unit_loss(model, k, h, ctx, optim_wrapper)
            if in_backward:
                with uncounted(optim_wrapper):
                    self._backward_stepping(model, k, optim_wrapper, optim_wrapper.scale_loss(loss))
            else:
                backward_unit(optim_wrapper, loss, counted=k == last)
            if k < last:
                h = out.detach()
            if sync is not None:
                sync.launch(k)
            if in_backward:
                if k == last:
                    optim_wrapper._inner_count += 1  # one counted step per iteration, as otherwise
            elif self.step_each_module:  # only unit k's parameters have gradients now
                finish_step(optim_wrapper, sync)
            del out
            total = total + loss.detach()
            _merge(log_vars, unit_vars)
        if not self.step_each_module:
            finish_step(optim_wrapper, sync)
        log_vars['loss'] = total
        return log_vars


@EXECUTORS.register_module()
class JointBackward:
    """All units forward (inputs still detached at the cuts), summed losses, one backward.

    Gradients equal :class:`PerModuleBackward`'s; peak memory is that of end-to-end training.
    """

    def __call__(self, model, ctx, optim_wrapper: OptimWrapper, grad_sync=None) -> Dict[str, Tensor]:
        _check_wrapper(optim_wrapper)
        sync = grad_sync if grad_sync is not None and optim_wrapper.should_sync() else None
        with optim_wrapper.optim_context(model):
            losses = model.forward_all_units(ctx)
        loss, log_vars = model.parse_losses(losses)
        optim_wrapper.backward(optim_wrapper.scale_loss(loss))
        if sync is not None:
            for k in range(model.num_units):
                sync.launch(k)
        finish_step(optim_wrapper, sync)
        return log_vars
