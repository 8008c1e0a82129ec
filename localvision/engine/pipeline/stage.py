"""What one stage of the pipeline needs from the model: which context fields cross each cut,
which parameters / buffers / state-dict keys belong to which unit, and a stage's own optimizer.

Every rank builds the whole model (:class:`~localvision.structures.LocalUnits`); stage k only runs
``forward_unit(k, ...)``. :func:`trace_units` runs all units once, on a copy of the model and on
the first real micro-batch, with a :class:`~localvision.structures.LocalContext` that
records which of its fields each unit reads (InfoPro's decoder reads ``inputs`` and the pixel
statistics through ``image01()``, the last module reads ``targets``, ContSup's E context reads
``inputs``, segmentation heads read ``data_samples``...), and which submodules each unit calls.
Stage k then sends stage k+1 the detached output, the fields read by any later unit, and
``ctx.extras`` (where ContSup remembers earlier modules' inputs), nothing else.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Dict, List, Set, Tuple

import torch
import torch.nn as nn

from localvision.structures.local_context import LocalContext

Tensor = torch.Tensor
CTX_FIELDS = tuple(f.name for f in dataclasses.fields(LocalContext) if f.name != 'extras')
CACHE_KEYS = ('image01',)  # per-batch caches in ctx.extras, recomputed downstream, never sent


class TrackingContext(LocalContext):
    """A :class:`LocalContext` that remembers which fields were read."""

    def __getattribute__(self, name: str):
        if name in CTX_FIELDS:
            d = object.__getattribute__(self, '__dict__')
            d.setdefault('_reads', set()).add(name)
        return object.__getattribute__(self, name)

    @property
    def reads(self) -> Set[str]:
        return set(self.__dict__.get('_reads', set()))


def _ctx_kwargs(ctx: LocalContext) -> Dict[str, Any]:
    return {name: object.__getattribute__(ctx, name) for name in CTX_FIELDS}


def sendable_extras(extras: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in extras.items() if k not in CACHE_KEYS}


def trace_units(model, inputs: Tensor, data_samples) -> Dict[str, Any]:
    """Run every unit once on a copy of ``model`` (no grad, RNG untouched).

    Returns ``dict(reads=[set of ctx fields read by unit k], callers={module name: first unit
    calling it})``.
    """
    m = copy.deepcopy(model)
    names = {id(mod): name for name, mod in m.named_modules()}
    current = [None]
    callers: Dict[str, int] = {}

    def hook(mod, args):
        callers.setdefault(names[id(mod)], current[0])
    handles = [mod.register_forward_pre_hook(hook) for mod in m.modules()]
    reads: List[Set[str]] = []
    devices = [torch.cuda.current_device()] if inputs.is_cuda else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            ctx = m.make_context(inputs, data_samples)
            h, extras = ctx.inputs, {}
            for k in range(m.num_units):
                tctx = TrackingContext(**_ctx_kwargs(ctx), extras=sendable_extras(extras))
                current[0] = k
                out, _ = m.forward_unit(k, h, tctx)
                reads.append(tctx.reads)
                extras = tctx.extras
                h = out.detach()
    finally:
        for hd in handles:
            hd.remove()
    return dict(reads=reads, callers=callers)


def fields_to_send(reads: List[Set[str]], stage: int) -> List[str]:
    """Context fields stage ``stage`` hands on: those any later unit reads."""
    need: Set[str] = set()
    for r in reads[stage + 1:]:
        need |= r
    return [f for f in CTX_FIELDS if f in need]


def parameter_owners(model) -> Dict[int, int]:
    """The unit owning each parameter (by id): the first whose ``unit_parameters`` lists it."""
    owner: Dict[int, int] = {}
    for k in range(model.num_units):
        for p in model.unit_parameters(k):
            owner.setdefault(id(p), k)
    return owner


def ownership(model, callers: Dict[str, int]) -> Tuple[Dict[int, int], Dict[str, int], Set[str]]:
    """``(param_owner, key_owner, defaulted)``: the unit owning each parameter (by id) and each
    state-dict key, and the keys no unit claims (given to the last unit, kept by every stage).

    Parameters belong to the first unit whose ``unit_parameters`` lists them (the last unit takes
    any nobody lists, as in data-parallel training). A buffer belongs to the unit that first called
    its module (else to the owner of that module's parameters, else to the last unit).
    """
    k_last = model.num_units - 1
    param_owner = parameter_owners(model)
    key_owner: Dict[str, int] = {}
    defaulted: Set[str] = set()
    for mod_name, mod in model.named_modules():
        prefix = f'{mod_name}.' if mod_name else ''
        direct = list(mod.named_parameters(recurse=False))
        for n, p in direct:
            key_owner[prefix + n] = param_owner.get(id(p), k_last)
            if id(p) not in param_owner:
                defaulted.add(prefix + n)
        buf_owner = callers.get(mod_name)
        if buf_owner is None and direct:
            buf_owner = param_owner.get(id(direct[0][1]))
        for n, _ in mod.named_buffers(recurse=False):
            key_owner[prefix + n] = k_last if buf_owner is None else buf_owner
            if buf_owner is None:
                defaulted.add(prefix + n)
    for key in model.state_dict():
        if key not in key_owner:
            key_owner[key] = k_last
            defaulted.add(key)
    return param_owner, key_owner, defaulted


def owned_state(model: nn.Module, key_owner: Dict[str, int], stage: int) -> Dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if key_owner.get(k) == stage}


def release_foreign(model: nn.Module, param_owner: Dict[int, int], key_owner: Dict[str, int], stage: int,
                    keep: Set[str] = frozenset()) -> int:
    """Free (replace by empty tensors) the parameters and buffers other units own: a stage then
    holds only its module's share of the weights. Buffers in ``keep`` (no unit claims them: the
    data preprocessor's, for instance) stay. Returns the bytes freed."""
    freed = 0
    for p in model.parameters():
        if param_owner.get(id(p), stage) != stage and p.numel():
            freed += p.numel() * p.element_size()
            p.data = torch.empty(0, dtype=p.dtype, device=p.device)
            p.grad = None
    for mod_name, mod in model.named_modules():
        prefix = f'{mod_name}.' if mod_name else ''
        for n, b in list(mod._buffers.items()):
            key = prefix + n
            if b is not None and key not in keep and key_owner.get(key, stage) != stage and b.numel():
                freed += b.numel() * b.element_size()
                mod._buffers[n] = torch.empty(0, dtype=b.dtype, device=b.device)
    return freed


def restrict_optimizer(optim_wrapper, owned_ids: Set[int]) -> None:
    """Keep only this stage's parameters in the optimizer (before any scheduler is built)."""
    opt = optim_wrapper.optimizer
    groups = []
    for g in opt.param_groups:
        g['params'] = [p for p in g['params'] if id(p) in owned_ids]
        if g['params']:
            groups.append(g)
    opt.param_groups = groups
    opt.state.clear()
