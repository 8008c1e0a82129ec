"""Mixed precision through mmengine's ``OptimWrapper`` on the CPU as well as on CUDA.

mmengine's ``AmpOptimWrapper`` refuses to be built without an accelerator. This wrapper runs
the forward under ``torch.autocast`` on the device of the optimized parameters: bfloat16 on the
CPU (no loss scaling: bfloat16 has float32's exponent range), float16 with a dynamic loss scale
on CUDA, or the ``dtype`` asked for (float16 always gets a loss scaler, on either device).
mmcv's compiled ops, which autocast does not reach, compute in float32 where they have no kernel
for the type (:func:`mmcv_ops_in_float32`).
"""
from __future__ import annotations

import functools
import sys
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterator, Optional, Union

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

from localvision.errors import InputError

DTYPES = ('float16', 'bfloat16')


# Registered in mmengine's root registry: configs of every scope (mmseg::, mmdet::) find it.
@OPTIM_WRAPPERS.register_module()
class MixedPrecisionOptimWrapper(OptimWrapper):
    """Automatic mixed precision on the device of the parameters (CPU or CUDA).

    Args:
        dtype: ``'bfloat16'`` or ``'float16'``; default bfloat16 on the CPU, float16 on CUDA.
        loss_scale: for float16 only, as ``AmpOptimWrapper``'s: ``'dynamic'``, a number (the
            initial, fixed scale) or a dict of ``torch.amp.GradScaler`` arguments.
        **kwargs: ``OptimWrapper``'s (``optimizer``, ``accumulative_counts``, ``clip_grad``).
    """

    def __init__(self, dtype: Optional[Union[str, torch.dtype]] = None,
                 loss_scale: Union[str, float, dict] = 'dynamic', **kwargs) -> None:
        super().__init__(**kwargs)
        mmcv_ops_in_float32()
        self.device_type = self._param_device_type()
        if dtype is None:
            dtype = 'bfloat16' if self.device_type == 'cpu' else 'float16'
        name = str(dtype).replace('torch.', '')
        if name not in DTYPES:
            raise InputError(f'optim_wrapper.dtype={dtype!r} is not a mixed-precision type; allowed: {list(DTYPES)}')
        self.cast_dtype = getattr(torch, name)
        self._scale_update_param = None
        self.loss_scaler: Optional[torch.amp.GradScaler] = None
        if self.cast_dtype == torch.float16:
            if loss_scale == 'dynamic':
                self.loss_scaler = torch.amp.GradScaler(self.device_type)
            elif isinstance(loss_scale, (int, float)):
                self._scale_update_param = float(loss_scale)
                self.loss_scaler = torch.amp.GradScaler(self.device_type, init_scale=float(loss_scale))
            elif isinstance(loss_scale, dict):
                self.loss_scaler = torch.amp.GradScaler(self.device_type, **loss_scale)
            else:
                raise InputError(f"optim_wrapper.loss_scale={loss_scale!r} must be 'dynamic', a number or a dict")

    def _param_device_type(self) -> str:
        for group in self.optimizer.param_groups:
            for p in group['params']:
                return p.device.type
        return 'cpu'

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        if self.loss_scaler is not None:
            loss = self.loss_scaler.scale(loss)
        loss.backward(**kwargs)
        self._inner_count += 1

    def step(self, **kwargs) -> None:
        if self.loss_scaler is None:
            super().step(**kwargs)
            return
        if self.clip_grad_kwargs:
            self.loss_scaler.unscale_(self.optimizer)
            self._clip_grad()
        self.loss_scaler.step(self.optimizer, **kwargs)
        self.loss_scaler.update(self._scale_update_param)

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.loss_scaler is not None:
            state['loss_scaler'] = self.loss_scaler.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        scaler = state_dict.pop('loss_scaler', None)
        if scaler is not None and self.loss_scaler is not None:
            self.loss_scaler.load_state_dict(scaler)
        super().load_state_dict(state_dict)

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        """The forward runs under autocast (and, as always, no gradient sync while accumulating)."""
        with super().optim_context(model), torch.autocast(self.device_type, dtype=self.cast_dtype):
            yield


# -- mmcv's compiled ops under autocast ------------------------------------------------------------
def _lacks_kernel(value: Any) -> bool:
    """mmcv's compiled ops have float32 kernels, float16 ones only on CUDA and no bfloat16 ones."""
    return isinstance(value, torch.Tensor) and (
        value.dtype == torch.bfloat16 or (value.dtype == torch.float16 and value.device.type != 'cuda'))


def _float32(value: Any) -> Any:
    return value.float() if _lacks_kernel(value) else value


def _forward_in_float32(forward: Callable) -> Callable:
    @functools.wraps(forward)
    def run(ctx, *args, **kwargs):
        low = [a for a in (*args, *kwargs.values()) if _lacks_kernel(a)]
        ctx.lv_float32 = bool(low)
        if not low:
            return forward(ctx, *args, **kwargs)
        with ExitStack() as stack:  # as torch.amp.custom_fwd(cast_inputs=torch.float32)
            for device_type in {a.device.type for a in low}:
                stack.enter_context(torch.autocast(device_type, enabled=False))
            out = forward(ctx, *map(_float32, args), **{k: _float32(v) for k, v in kwargs.items()})

        def back(t: Any) -> Any:  # the float results in the type the op was given
            return t.to(low[0].dtype) if isinstance(t, torch.Tensor) and t.dtype == torch.float32 else t
        return type(out)(map(back, out)) if isinstance(out, (tuple, list)) else back(out)
    run.lv_float32 = True
    return run


def _backward_in_float32(backward: Callable) -> Callable:
    @functools.wraps(backward)
    def run(ctx, *grads):
        # the gradients it returns are cast to the inputs' dtypes by autograd
        return backward(ctx, *map(_float32, grads)) if getattr(ctx, 'lv_float32', False) else backward(ctx, *grads)
    run.lv_float32 = True
    return run


def mmcv_ops_in_float32() -> None:
    """Let mmcv's compiled ops run under mixed precision where they have no kernel for its type.

    They are ``torch.autograd.Function`` s outside torch's dispatcher, so autocast does not cast
    their inputs: under bfloat16 autocast (CPU or CUDA), or float16 on the CPU, mmdet's RPN NMS
    and RoIAlign stopped with ``expected scalar type Float but found BFloat16``. Each such
    ``Function`` of ``mmcv.ops`` now computes in float32 when it gets such a tensor and returns its
    float outputs in that tensor's type (float16 on CUDA keeps mmcv's half kernels); without one
    nothing changes. Idempotent; nothing to do where no model imported ``mmcv.ops``.
    """
    if 'mmcv.ops' not in sys.modules:  # imported by the models that use them, built before the wrapper
        return
    pending = list(torch.autograd.Function.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if not cls.__module__.startswith('mmcv.ops.'):
            continue
        for name, wrap in (('forward', _forward_in_float32), ('backward', _backward_in_float32)):
            fn = cls.__dict__.get(name)
            if isinstance(fn, staticmethod) and not getattr(fn.__func__, 'lv_float32', False):
                setattr(cls, name, staticmethod(wrap(fn.__func__)))
