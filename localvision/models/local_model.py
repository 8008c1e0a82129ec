"""The local-learning mechanism, once: every task model (classifier, segmentor, detectors) is a
thin adapter on :class:`LocalLearningModel`.

The mechanism owns the split backbone (:class:`~localvision.models.split.StagedTimm`), the
local objectives of modules 0..K-2, the context supply at the cuts, the store of detached
levels that later units' heads read, ``make_context`` / ``forward_unit`` / ``unit_parameters``
(the :class:`~localvision.structures.LocalUnits` contract the executors, the data-parallel
wrapper and the module-parallel stages use), the profiling that balances the split, and
inference through the modules. A task adapter supplies only what is task specific:

- :meth:`task_heads`: its heads (neck, decode / detection heads, the timm classifier head),
  the levels each reads and whether the last unit trains it;
- :meth:`head_loss`: one head's losses on the levels (and the backbone output);
- :meth:`task_targets`: the targets the local objectives read, from its data samples;
- :meth:`dummy_data_samples`: data samples for the split profiler's dry run;
- :meth:`objective_defaults`: task settings every local objective gets (``ignore_index``).

A head is trained in the unit that produces the last level it reads (an mmseg auxiliary head on
layer3), or in the last unit (``last=True``: the decode head, the neck). Levels produced by a
unit and read by a head of a later unit are kept **detached** in ``ctx.extras``, so no gradient
crosses a cut.
"""
from __future__ import annotations

import functools
import logging
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope

from localvision.errors import InputError
from localvision.registry import EXECUTORS, MODELS
from localvision.structures.local_context import LocalContext

from .context import build_context
from .objectives.base import build_objective, objective_class, per_module_configs, pixel_stats, takes_blocks
from .split import StagedTimm
from .split.block_copies import LaterBlocks

Tensor = torch.Tensor

LEVELS_KEY = 'levels'  # ctx.extras: {level index: detached map} of finished units


def build_executor(cfg: Optional[dict]):
    """The executor of ``model.executor`` (default ``PerModuleBackward``), checked by name."""
    import localvision.engine  # noqa: F401  (fills the registry)
    cfg = dict(cfg or dict(type='PerModuleBackward'))
    allowed = sorted(EXECUTORS.module_dict)
    if cfg.get('type') not in allowed:
        raise InputError(f"model.executor.type={cfg.get('type')!r} is unknown; allowed: {allowed}")
    return EXECUTORS.build(cfg)


def build_backbone(cfg: dict, split: Optional[dict], **defaults) -> StagedTimm:
    """``model.backbone`` through localvision's registry (``type='StagedTimm'`` when omitted)."""
    cfg = dict(cfg)
    cfg.setdefault('type', 'StagedTimm')
    if cfg['type'] in ('StagedTimm', 'localvision.StagedTimm'):
        cfg['type'] = 'StagedTimm'
    else:
        raise InputError(f"model.backbone.type={cfg['type']!r} cannot be split into gradient-isolated modules; "
                         "localvision task models take type='StagedTimm' with any timm model_name "
                         "(e.g. dict(type='StagedTimm', model_name='resnet50d')); with an inherited config, "
                         'add _delete_=True to replace the base backbone')
    for k, v in defaults.items():
        cfg.setdefault(k, v)
    cfg['split'] = split
    return MODELS.build(cfg)


@dataclass
class TaskHead:
    """What a task adapter tells the mechanism about one of its heads (or a neck and its heads).

    Attributes:
        name: passed back to :meth:`LocalLearningModel.head_loss`.
        modules: its trainable modules (trained by the unit that trains the head).
        levels: the backbone levels it reads (indices into ``backbone.level_blocks``).
        last: trained by the last unit whatever it reads (decode heads, necks, classifier heads);
            otherwise by the unit producing the last level it reads.
    """

    name: str
    modules: List[nn.Module] = field(default_factory=list)
    levels: List[int] = field(default_factory=list)
    last: bool = True


class LocalLearningModel(metaclass=ABCMeta):
    """Mixin of the task models trained unit by unit (put it first among the bases).

    The adapter's ``__init__`` calls :meth:`init_backbone` (the split backbone and the
    executor), builds its heads from ``self.backbone.level_channels()``, then calls
    :meth:`init_units` (resolves the split, builds the local objectives and the context supply,
    checks that every unit trains something). ``train_step`` hands the units to the executor
    (``model.executor``: ``PerModuleBackward`` by default, which runs unit k's backward before
    unit k+1's forward). With one unit this is plain end-to-end training through the same code.
    """

    backbone: StagedTimm
    #: the task's greedy objective: the default ``base`` of objectives built on another (AugLocal, MAN)
    greedy_objective: dict = dict(type='Greedy', head=dict(type='PoolLinearHead'))
    #: how ``tools/export_checkpoint.py`` writes the trained model for the stock library
    #: (a :class:`~localvision.utils.export.StockExport`; ``None``: no export)
    stock_export: Optional[type] = None

    # -- construction ------------------------------------------------------------------------
    def init_backbone(self, backbone: dict, split: Optional[dict], executor: Optional[dict] = None,
                      **backbone_defaults) -> None:
        with DefaultScope.overwrite_default_scope('localvision'):  # localvision's own registries
            self.executor = build_executor(executor)
            self.backbone = build_backbone(backbone, split, **backbone_defaults)

    def init_units(self, local_objective: Union[dict, List[dict], None], context: Optional[dict],
                   num_classes: int) -> None:
        self.num_classes = num_classes
        bb = self.backbone
        self._heads = self.task_heads()
        self._check_head_levels()
        k = bb.requested_num_modules()
        with DefaultScope.overwrite_default_scope('localvision'):
            cfgs = [dict(self.objective_defaults(), **c) for c in per_module_configs(local_objective, k - 1)]
            # objectives built on others (AugLocal, MAN, HPFF) default to the task's greedy objective
            cfgs = [dict(c, **{n: dict(self.greedy_objective) for n in _nested(c.get('type')) if c.get(n) is None})
                    for c in cfgs]
            if bb.grad_checkpointing:  # the objectives' decoders follow the backbone unless told otherwise
                cfgs = [dict(c, grad_checkpointing=c.get('grad_checkpointing', True)) if
                        _takes(c.get('type'), 'grad_checkpointing') else c for c in cfgs]
            self.objective_cfgs: List[dict] = cfgs  # what the adapter may read while the split is profiled
            heads = [m for h in self._heads for m in h.modules]
            bb.resolve_split(exit_loss=self._exit_cost_fn(cfgs), tail_loss=self._tail_cost_fn(),
                             extra_modules=heads)
            ranges = bb.module_ranges()
            self.objectives = nn.ModuleList(
                build_objective(c, bb.out_channels(i), num_classes, i, k, in_stride=bb.module_reduction(i),
                                blocks=LaterBlocks(bb.seq, ranges[i + 1].start, ranges[i + 1].stop,
                                                   functools.partial(bb.forward_module, i + 1)))
                for i, c in enumerate(cfgs))
            outs = [bb.out_channels(i) for i in range(bb.num_modules)]
            self.context = build_context(context, [bb.input_size[0]] + outs[:-1], outs,
                                         [bb.module_reduction(i) for i in range(bb.num_modules)],
                                         field_name='model.context')
        self._check_objectives_train_next_module()
        self._plan_units()
        self._set_memory_format()
        self._log_split(local_objective)

    def init_weights(self) -> None:
        """The adapter's initialisation, drawn in the contiguous layout: with
        ``backbone.channels_last`` a seed gives the same initial weights (in-place initialisers
        fill a tensor in memory order)."""
        self._set_memory_format(torch.contiguous_format)
        super().init_weights()
        self._set_memory_format()

    def _set_memory_format(self, memory_format: Optional[torch.memory_format] = None) -> None:
        """``backbone.channels_last``: the backbone, the local objectives and the context supply in
        channels-last format (or ``memory_format``); the task's heads are left as they are."""
        if self.backbone.channels_last:
            for part in (self.backbone, self.objectives, self.context):
                if part is not None:
                    part.to(memory_format=memory_format or torch.channels_last)

    def _log_split(self, local_objective: Union[dict, List[dict], None]) -> None:
        """Say where the backbone was cut; warn where no K was asked for (K=1 trains end to end)."""
        from mmengine.logging import print_log
        bb = self.backbone
        if bb.grad_checkpointing:
            plain = [bb.seq.infos[i].name for i in sorted(bb.plain)]
            print_log(f'checkpointing {bb.num_blocks - len(plain)} of {bb.num_blocks} blocks' +
                      (f' ({", ".join(plain)} run plain: recomputing them would not lower the peak)' if plain else ''),
                      logger='current')
        if bb.num_modules == 1:
            split = bb.split_cfg
            if local_objective is not None and split.get('cuts') is None and 'num_modules' not in split:
                print_log('model.split names neither cuts nor num_modules: K=1, the backbone trains end to end and '
                          'model.local_objective is not used; set model.split.num_modules=K', logger='current',
                          level=logging.WARNING)
            return
        ends = [bb.seq.infos[r.stop - 1].name for r in bb.module_ranges()[:-1]]
        print_log(f'split: K={bb.num_modules} modules, cut after {", ".join(ends)}', logger='current')

    def _check_objectives_train_next_module(self) -> None:
        """Objectives whose loss reaches module k+1 (HPFF's cascade) need one optimizer step per
        iteration and module k+1's plain input."""
        names = sorted({type(o).__name__ for o in self.objectives if getattr(o, 'trains_next_module', False)})
        if not names:
            return
        if getattr(self.executor, 'step_each_module', False):
            raise InputError(f'{names} train(s) module k+1 from module k\'s loss, so a module\'s gradient is complete only '
                             'at the end of the iteration; remove model.executor.step_each_module / step_in_backward')
        if self.context is not None:
            raise InputError(f'{names} run(s) module k+1 on module k\'s output, without the context projections '
                             'model.context adds to its input; use model.context=None with it')

    def _check_head_levels(self) -> None:
        n = self.backbone.num_levels
        for head in self._heads:
            bad = [j for j in head.levels if not 0 <= j < n]
            if bad:
                raise InputError(f'{head.name} reads level(s) {bad}, but the backbone produces {n} levels (blocks '
                                 f'{self.backbone.level_blocks}); allowed: 0..{n - 1} (set model.backbone.out_stages '
                                 '/ out_blocks for other levels)')

    def _plan_units(self) -> None:
        """Which unit trains each head, and which levels each unit must keep for later units."""
        last = self.num_units - 1
        producers = self.backbone.level_modules()
        self.head_units: Dict[str, int] = {
            h.name: last if h.last or not h.levels else max(producers[j] for j in h.levels) for h in self._heads}
        self._unit_heads: List[List[TaskHead]] = [[h for h in self._heads if self.head_units[h.name] == k]
                                                  for k in range(self.num_units)]
        # levels unit k computes: those its heads read and those heads of later units read (kept detached)
        self._keep_after: List[set] = []
        self._wanted: List[set] = []
        for k in range(self.num_units):
            later = {j for u in self._unit_heads[k + 1:] for h in u for j in h.levels}
            self._keep_after.append(later)
            self._wanted.append(later | {j for h in self._unit_heads[k] for j in h.levels})
        if self.num_units > 1:  # something in the last unit must read what the last module makes
            last_heads = self._unit_heads[last]
            reads_last = any(not h.levels or any(producers[j] == last for j in h.levels) for h in last_heads)
            if not reads_last:
                names = ', '.join(h.name for h in last_heads) or 'no head'
                raise InputError(f'{names} read(s) only levels produced before the last of the K={self.num_units} '
                                 f'modules, so nothing would train the last module (blocks '
                                 f'{list(self.backbone.module_ranges()[-1])}); move the cuts or read a level of '
                                 'the last module (model.backbone.out_stages / out_blocks, in_index)')

    # -- what a task adapter supplies -----------------------------------------------------------
    @abstractmethod
    def task_heads(self) -> List[TaskHead]:
        """The task's heads (each with its modules and the levels it reads)."""

    @abstractmethod
    def head_loss(self, name: str, out: Tensor, feats: List[Optional[Tensor]],
                  ctx: LocalContext) -> Dict[str, Tensor]:
        """Losses of head ``name`` on ``feats`` (one entry per level; ``None`` where no head of
        this unit reads it) and the backbone output ``out``."""

    @abstractmethod
    def task_targets(self, data_samples: list, device: torch.device):
        """What the local objectives read as ``ctx.targets``, from the batch's data samples."""

    @abstractmethod
    def dummy_data_samples(self, n: int, device: torch.device) -> list:
        """``n`` data samples of ``backbone.input_size`` for the split profiler's dry run."""

    def objective_defaults(self) -> dict:
        return {}

    # -- units (the LocalUnits contract) -------------------------------------------------------
    @property
    def num_units(self) -> int:
        return self.backbone.num_modules

    def make_context(self, inputs: Tensor, data_samples: Optional[list]) -> LocalContext:
        targets = None
        if data_samples is not None and len(data_samples):
            targets = self.task_targets(data_samples, inputs.device)
        mean, std = pixel_stats(self.data_preprocessor)
        return LocalContext(inputs=inputs, targets=targets, data_samples=data_samples,
                            img_hw=tuple(inputs.shape[-2:]), pixel_mean=mean, pixel_std=std)

    def module_input(self, k: int, h: Tensor, ctx: LocalContext) -> Tensor:
        """What module k runs on: ``h`` itself, or ``h`` plus the context supply's projections."""
        if self.context is not None:
            h = self.context(k, h, ctx, self.backbone.to_map)
        if (torch.is_grad_enabled() and not h.requires_grad and h.device.type == 'cpu' and h.dim() == 4
                and not h.is_contiguous() and h.is_contiguous(memory_format=torch.channels_last)
                and self._has_group_norm(k)):
            # torch's CPU group_norm backward crashes (segfault) on a channels-last input that needs no
            # gradient, which a detached cut state is (MetaFormer v2 blocks open with GroupNorm)
            h = h.contiguous()
        return h

    def _has_group_norm(self, k: int) -> bool:
        """Whether module k has a GroupNorm (its cut state is then handed on contiguous on CPU)."""
        if getattr(self, '_group_norm_modules', None) is None:  # once: the split is fixed after init_units
            bb = self.backbone
            self._group_norm_modules = [
                any(isinstance(m, nn.GroupNorm) for i in r for owner in bb.seq.infos[i].modules for m in owner.modules())
                for r in bb.module_ranges()]
        return self._group_norm_modules[k]

    def forward_unit(self, k: int, h: Tensor, ctx: LocalContext) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Unit k: module k (on its input plus context), its local loss (k < K-1) and the losses of
        the heads it trains. Returns the module output (detached by the caller) and the losses."""
        stored: Dict[int, Tensor] = ctx.extras.setdefault(LEVELS_KEY, {})
        if k == 0:
            stored.clear()
        wanted = self._wanted[k]  # the image size is read only where a level is made (module-parallel
        img_hw = ctx.img_hw if wanted else None  # stages send only the context fields later units read)
        out, live = self.backbone.forward_module_levels(k, self.module_input(k, h, ctx), img_hw, wanted)
        for j, f in live.items():
            if j in self._keep_after[k]:
                stored[j] = f.detach()
        losses: Dict[str, Tensor] = {}
        if k < self.num_units - 1:
            obj = self.objectives[k]
            local = obj(out if obj.takes_blocks else self.backbone.to_map(out, ctx.img_hw), ctx)
            losses.update({f'm{k}.{n}': v for n, v in local.items()})
        heads = self._unit_heads[k]
        if heads:
            feats = [live.get(j, stored.get(j)) for j in range(self.backbone.num_levels)]
            for head in heads:
                missing = [j for j in head.levels if feats[j] is None]
                if missing:
                    raise RuntimeError(f'{head.name}: levels {missing} were not produced; run the units in order '
                                       '0..K-1 with one LocalContext per batch')
                losses.update(self.head_loss(head.name, out, feats, ctx))
        if k == self.num_units - 1:
            stored.clear()
        return out, losses

    def unit_parameters(self, k: int) -> List[nn.Parameter]:
        """Parameters trained by unit k's loss."""
        params = list(self.backbone.module_parameters(k))
        if k < self.num_units - 1:
            params += list(self.objectives[k].parameters())
        for head in self._unit_heads[k]:
            for m in head.modules:
                params += list(m.parameters())
        if self.context is not None:
            params += self.context.parameters_of_module(k)
        return params

    def forward_all_units(self, ctx: LocalContext) -> Dict[str, Tensor]:
        """All units with their losses; inputs detached at the cuts (no graph crosses a cut)."""
        h, losses = ctx.inputs, {}
        for k in range(self.num_units):
            out, unit_losses = self.forward_unit(k, h, ctx)
            losses.update(unit_losses)
            h = out.detach()
        return losses

    def loss(self, inputs: Tensor, data_samples: list) -> Dict[str, Tensor]:
        return self.forward_all_units(self.make_context(inputs, data_samples))

    def train_step(self, data, optim_wrapper: OptimWrapper, grad_sync=None) -> Dict[str, Tensor]:
        """One iteration through the executor; ``grad_sync`` is given by the data-parallel wrapper."""
        with optim_wrapper.optim_context(self):
            data = self.data_preprocessor(data, True)
        ctx = self.make_context(data['inputs'], data['data_samples'])
        return self.executor(self, ctx, optim_wrapper, grad_sync=grad_sync)

    # -- inference: the plain backbone path (with the context supply, no auxiliary nets) --------
    def extract_levels(self, inputs: Tensor, levels: Optional[Sequence[int]] = None
                       ) -> Tuple[Tensor, List[Optional[Tensor]]]:
        """All modules in a row: the backbone output and its levels (``None`` for levels not in
        ``levels``, default all)."""
        want = set(range(self.backbone.num_levels)) if levels is None else set(levels)
        outs, found = self._forward_modules(inputs, want)
        return outs[-1], [found.get(j) for j in range(self.backbone.num_levels)]

    def module_outputs(self, inputs: Tensor) -> List[Tensor]:
        """All modules in a row: each module's output as an NCHW map (what the split hands on at
        each cut; e.g. for probing what each module keeps)."""
        outs, _ = self._forward_modules(inputs, set())
        return [self.backbone.to_map(h, tuple(inputs.shape[-2:])) for h in outs]

    def _forward_modules(self, inputs: Tensor, want: set) -> Tuple[List[Tensor], Dict[int, Tensor]]:
        """The modules in a row on ``inputs`` (with the context supply): each module's raw output
        and the levels in ``want``."""
        img_hw = tuple(inputs.shape[-2:])
        ctx = LocalContext(inputs=inputs, img_hw=img_hw)
        found: Dict[int, Tensor] = {}
        outs: List[Tensor] = []
        h = inputs
        for k in range(self.num_units):
            h, lv = self.backbone.forward_module_levels(k, self.module_input(k, h, ctx), img_hw, want)
            found.update(lv)
            outs.append(h)
        return outs, found

    # -- split profiling (balanced strategy) ------------------------------------------------------
    def _profile_context(self, n: int, device: torch.device) -> LocalContext:
        image = torch.zeros(n, *self.backbone.input_size, device=device)
        return self.make_context(image, self.dummy_data_samples(n, device))

    def _exit_cost_fn(self, cfgs: List[dict]):
        """For the balanced split: the first local objective, put on block i's output."""
        if not cfgs:
            return None
        cache: Dict[Tuple[int, int], nn.Module] = {}
        contexts: Dict[int, LocalContext] = {}
        seq = self.backbone.seq

        raw = takes_blocks(cfgs[0].get('type'))
        img_hw = tuple(self.backbone.input_size[-2:])

        def exit_loss(i: int, x: Tensor) -> Tensor:
            fmap = x if raw else seq.to_map(x, img_hw)
            c = seq.infos[i].num_chs if raw else fmap.shape[1]
            key = (i,) if raw else (c, seq.infos[i].reduction)  # an objective on later blocks differs per cut
            if key not in cache:
                cache[key] = build_objective(cfgs[0], c, self.num_classes, 0, len(cfgs) + 1,
                                             in_stride=seq.infos[i].reduction,
                                             blocks=LaterBlocks(seq, i + 1) if raw else None).to(x.device)
            if x.shape[0] not in contexts:
                contexts[x.shape[0]] = self._profile_context(x.shape[0], x.device)
            return sum(v for n, v in cache[key](fmap, contexts[x.shape[0]]).items() if 'loss' in n)
        return exit_loss

    def _tail_cost_fn(self):
        """What the heads of the last unit save, counted with the last module: they run on the last
        block's output and on zeros shaped like the levels of earlier modules (they save the same)."""
        bb = self.backbone
        last_block = len(bb.seq) - 1
        heads = [h for h in self._heads if h.last]
        if not heads:
            return None
        read = {j for h in heads for j in h.levels}

        def tail_loss(x: Tensor) -> Tensor:
            n = x.shape[0]
            ctx = self._profile_context(n, x.device)
            fmap = bb.to_map(x, tuple(bb.input_size[-2:]))
            feats = [None if j not in read else fmap if b == last_block else torch.zeros(s, device=x.device)
                     for j, (b, s) in enumerate(zip(bb.level_blocks, bb.level_shapes(n)))]
            total = torch.zeros((), device=x.device)
            for head in heads:
                total = total + sum(_sum_means(v) for name, v in self.head_loss(head.name, x, feats, ctx).items()
                                    if 'loss' in name)
            return total
        return tail_loss


def _takes(objective_type, key: str) -> bool:
    """Whether the objective registered as ``objective_type`` takes the argument ``key``."""
    import inspect
    cls = objective_class(objective_type)
    return cls is not None and any(key in inspect.signature(c.__init__).parameters for c in cls.__mro__
                                   if '__init__' in vars(c))


def _nested(objective_type) -> tuple:
    """The arguments of the objective registered as ``objective_type`` that hold objective configs."""
    return tuple(getattr(objective_class(objective_type), 'nested_objectives', ()))


def _sum_means(out) -> Tensor:
    """A scalar from (nested) loss values."""
    if isinstance(out, Tensor):
        return out.float().mean()
    if isinstance(out, (list, tuple)):
        vals = [_sum_means(o) for o in out if o is not None]
        return sum(vals) if vals else torch.zeros(())
    return torch.zeros(())
