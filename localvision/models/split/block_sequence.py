"""A timm model seen as an ordered list of blocks with a uniform forward.

Every supported family is read as ``stem, block_1 ... block_n, final norm``: block 0 is the
stem, blocks 1..n are the residual / transformer blocks in execution order, and the final norm
(``norm`` of a ViT, ``norm_pre`` of a ConvNeXt, nothing for a ResNet) closes the last module.
Each block is addressed both by its flat index and by ``(stage, index in stage)``, where stage 0
is the stem, so the split tables of the papers, written as (stage, block) pairs, can be used
as they are.

Most timm models are read by one generic reader (:func:`_generic`): ``forward_features`` is
traced once on a small input, and if it runs its submodules as a chain (each on the previous
one's output), the submodules before timm's ``stages`` / ``blocks`` / ``layers`` (or ``s1``,
``layer1``...) sequence are the stem, each stage is split into the elements of its block
container (a downsample runs with the stage's first block), shape-changing head convs
(``conv_head``, ``final_conv``) end the last block, and the shape-keeping rest is the final
norm. A chain without such a sequence (VGG's ``features.0..``, Inception's ``Mixed_*``,
Xception's ``block1..``, DPN) is read unit by unit (:func:`_unit_blocks`): every submodule with
parameters other than a norm starts a block, norms and activations run with the block before,
shape-changing parameter-free modules (pools) with the block after; the leading single convs
are the stem (the first block if all are), and a new stage begins at each block that halves
the resolution, so stages follow the output stride. One module that runs everything (DenseNet's
``features``, an ``encoder``) is read inside. Layout changes that the forward runs between two
submodules (``permute`` / ``transpose`` / ``flatten`` with dims only, as in LeViT and NesT) are
recorded by the trace and replayed as parameter-free steps (:class:`_Layout`) of the chain. A
forward that computes more between its submodules (a position embedding or class token added,
blocks called with sizes or RoPE tables, reshapes to sizes read off the input: CaiT, ConViT,
PiT, Twins, Visformer, VOLO, XCiT, Hiera, MViTv2...) is read from its ``torch.fx`` graph
(:mod:`.graph_reader`), cut where one tensor carries the state: ViT / DeiT / EVA / BEiT too
(position embedding and class or register tokens in the stem, RoPE tables or relative position
biases handed to each block). There are no hand-written readers. Models whose state is never one
tensor between blocks (parallel branches, as in HRNet) are refused with one line saying why. Block outputs reach the auxiliary nets as NCHW
maps (``to_map``: NHWC maps permuted, token sequences laid on the patch grid).

The timm model stays the only owner of its parameters: blocks are plain callables that call
its submodules, so ``state_dict`` keys are exactly timm's and an exported checkpoint loads in
stock timm.
"""
from __future__ import annotations

from localvision.errors import InputError

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn

Tensor = torch.Tensor


@dataclass
class BlockInfo:
    """Where a block sits and what it produces (channels / stride are filled by a dry run)."""

    index: int
    stage: int
    index_in_stage: int
    name: str
    modules: List[nn.Module] = field(default_factory=list, repr=False)
    params: List[nn.Parameter] = field(default_factory=list, repr=False)
    num_chs: int = 0
    reduction: int = 0

    def parameters(self) -> List[nn.Parameter]:
        """The parameters this block owns (modules' and direct ones)."""
        out = list(self.params)
        for m in self.modules:
            out.extend(m.parameters())
        return out


@dataclass
class BlockSequence:
    """Ordered blocks of a timm model with a uniform ``x -> x`` forward."""

    family: str
    model: nn.Module
    blocks: List[Callable[[Tensor], Tensor]]
    infos: List[BlockInfo]
    final_norm: nn.Module
    to_map: Callable[[Tensor, Tuple[int, int]], Tensor]

    def __len__(self) -> int:
        return len(self.blocks)

    def __deepcopy__(self, memo: dict) -> 'BlockSequence':
        """A copy over a copy of the model (``memo`` maps the model's submodules to theirs)."""
        import copy
        return self.reread(copy.deepcopy(self.model, memo), memo)

    def reread(self, model: nn.Module, memo: dict) -> 'BlockSequence':
        """This sequence over ``model``, a deep copy of ``self.model`` made with ``memo``: blocks
        read from the fx graph are copied through ``memo`` (their submodules become the copy's);
        the other readers' blocks are closures over the model's submodules, read again."""
        import copy
        from .graph_reader import GraphBlock
        if all(isinstance(b, GraphBlock) for b in self.blocks):
            for attr in ('named_modules', 'named_parameters', 'named_buffers'):  # by name, as the copy has them
                theirs = dict(getattr(model, attr)(remove_duplicate=False))
                for name, t in getattr(self.model, attr)(remove_duplicate=False):
                    memo.setdefault(id(t), theirs[name])
            return BlockSequence(self.family, model, copy.deepcopy(self.blocks, memo),
                                 copy.deepcopy(self.infos, memo), copy.deepcopy(self.final_norm, memo),
                                 _nchw_map(model))
        fresh = to_block_sequence(model)
        for new, old in zip(fresh.infos, self.infos):
            new.num_chs, new.reduction = old.num_chs, old.reduction
        return fresh

    def index_of(self, cut) -> int:
        """Flat block index of ``cut`` given as an int or a ``(stage, index_in_stage)`` pair."""
        if isinstance(cut, int):
            return cut
        if isinstance(cut, (tuple, list)) and len(cut) == 2:
            for info in self.infos:
                if (info.stage, info.index_in_stage) == (int(cut[0]), int(cut[1])):
                    return info.index
            stages = {}
            for info in self.infos:
                stages[info.stage] = max(stages.get(info.stage, -1), info.index_in_stage)
            allowed = ', '.join(f'stage {s}: 0..{n}' for s, n in sorted(stages.items()))
            raise InputError(f'cut {tuple(cut)} names no block of {self.family} model '
                             f'{type(self.model).__name__}; allowed (stage, block) pairs: {allowed}')
        raise InputError(f'a cut must be a block index or a (stage, block) pair, got {cut!r}')


# -- the generic reader: forward_features traced as a chain of timm's submodules -----------------------
_TRUNK = re.compile(r'^(stages|blocks|layers|levels|features|dense_stages|(stage|layer|level|denseblock|s)\d+)(\.\d+)?$')
_CONTAINERS = (nn.Sequential, nn.ModuleList)


class _Traced(NamedTuple):
    """One submodule call of a traced forward: its name, module and output (from the trace input)."""
    name: str
    module: nn.Module
    out: Tensor


# layout changes that depend on no size: a forward may run them between two submodules
_LAYOUT_OPS = frozenset({torch.Tensor.permute, torch.permute, torch.Tensor.transpose, torch.transpose,
                         torch.Tensor.flatten, torch.flatten, torch.Tensor.contiguous})


class _Layout(nn.Module):
    """Layout changes (``permute`` / ``transpose`` / ``flatten`` with dims only) that a forward runs
    between two of its submodules, replayed on any input."""

    def __init__(self, ops: Sequence[Tuple[Callable, tuple, dict]]) -> None:
        super().__init__()
        self.ops = tuple(ops)

    def forward(self, x: Tensor) -> Tensor:
        for func, args, kwargs in self.ops:
            x = func(x, *args, **kwargs)
        return x

    def extra_repr(self) -> str:
        return ', '.join(f"{f.__name__}{tuple(a)}" for f, a, _ in self.ops)


def _dims_only(v: Any) -> bool:
    return isinstance(v, int) or (isinstance(v, (tuple, list)) and all(isinstance(i, int) for i in v))


class _LayoutRecorder(torch.overrides.TorchFunctionMode):
    """Records the layout ops run outside every listed submodule (``depth`` 0): for each result,
    the tensor it came from and the ops from there."""

    def __init__(self, depth: List[int]) -> None:
        super().__init__()
        self.depth = depth
        self.made: dict = {}  # id(result) -> (source tensor, ops, result); holds the tensors alive

    def source(self, t: Any) -> Tuple[Any, tuple]:
        entry = self.made.get(id(t))
        return (entry[0], entry[1]) if entry is not None and entry[2] is t else (t, ())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if (self.depth[0] == 0 and func in _LAYOUT_OPS and args and torch.is_tensor(args[0]) and torch.is_tensor(out)
                and all(_dims_only(a) for a in args[1:]) and all(_dims_only(v) for v in kwargs.values())):
            src, ops = self.source(args[0])
            self.made[id(out)] = (src, ops + ((func, tuple(args[1:]), dict(kwargs)),), out)
        return out


def _trace_chain(fn: Callable[[Tensor], Tensor], x: Tensor,
                 named: Sequence[Tuple[str, nn.Module]]) -> Tuple[Optional[List[_Traced]], str]:
    """The submodules of ``named`` that ``fn(x)`` runs as a pure chain, in call order.

    A chain: each module is called once, with one positional argument that is the previous
    module's output (``x`` for the first), and the last output is ``fn``'s result. Modules
    called inside another listed module are not counted (a container called as a whole hides
    its children). Layout changes between two modules (LeViT's ``flatten(2).transpose(1, 2)``,
    Nest's ``permute`` around its norm) join the chain as :class:`_Layout` steps. Returns
    ``(None, why)`` when the forward is not such a chain.
    """
    events: List[Tuple[str, str, nn.Module, Any]] = []
    depth = [0]

    def pre(name: str):
        def hook(mod, args, kwargs):
            if depth[0] == 0:
                events.append(('in', name, mod, (args, kwargs)))
            depth[0] += 1
        return hook

    def post(name: str):
        def hook(mod, args, out):
            depth[0] -= 1
            if depth[0] == 0:
                events.append(('out', name, mod, out))
        return hook

    handles = []
    for name, mod in named:
        handles.append(mod.register_forward_pre_hook(pre(name), with_kwargs=True))
        handles.append(mod.register_forward_hook(post(name)))
    recorder = _LayoutRecorder(depth)
    try:
        with recorder:
            result = fn(x)
    finally:
        for h in handles:
            h.remove()

    def layout_from_prev(name: str, t: Any) -> Optional[_Traced]:
        src, ops = recorder.source(t)
        return _Traced(f'{name}.layout', _Layout(ops), t) if ops and src is prev else None

    chain: List[_Traced] = []
    prev, seen = x, set()
    for (_, name, mod, (args, kwargs)), (_, _, _, out) in zip(events[0::2], events[1::2]):
        if kwargs or len(args) != 1:
            return None, f'{name} is called with extra inputs'
        if args[0] is not prev:
            layout = layout_from_prev(name, args[0])
            if layout is None:
                return None, f"{name}'s input is not the previous submodule's output"
            chain.append(layout)
        if name in seen:
            return None, f'{name} is called twice'
        seen.add(name)
        chain.append(_Traced(name, mod, out))
        prev = out
    if result is not prev:
        layout = layout_from_prev(chain[-1].name if chain else 'input', result)
        if layout is None or not chain:
            return None, 'the output is not computed by its last submodule'
        chain.append(layout)
    return chain, ''


def _children_and_grandchildren(prefix: str, module: nn.Module) -> List[Tuple[str, nn.Module]]:
    """Direct children, and the elements of children that are containers (a loop over
    ``self.stages`` calls those, not the container)."""
    out = []
    for name, child in module.named_children():
        full = f'{prefix}{name}'
        out.append((full, child))
        if isinstance(child, _CONTAINERS):
            out.extend((f'{full}.{n}', c) for n, c in child.named_children())
    return out


def _chain(module: nn.Module, x: Tensor, prefix: str = '', fn: Optional[Callable] = None
           ) -> Tuple[Optional[List[_Traced]], str]:
    """``module`` (or ``fn``) traced as a chain of its (grand)children on input ``x``."""
    return _trace_chain(fn or module, x, _children_and_grandchildren(prefix, module))


def _is_stage_like(m: nn.Module) -> bool:
    return isinstance(m, _CONTAINERS) or isinstance(getattr(m, 'blocks', None), _CONTAINERS)


def _append_to_last(blocks: List[Callable], infos: List[BlockInfo], module: nn.Module) -> None:
    """``module`` runs after the last block, as part of it."""
    infos[-1].modules.append(module)
    blocks[-1] = _run_all([blocks[-1], module])


def _run_all(mods: Sequence[Callable[[Tensor], Tensor]]) -> Callable[[Tensor], Tensor]:
    """One block that runs ``mods`` in a row."""
    if len(mods) == 1:
        return mods[0]

    def run(x: Tensor) -> Tensor:
        for m in mods:
            x = m(x)
        return x
    return run


def _stage_blocks(name: str, stage: nn.Module, x: Tensor) -> List[Tuple[str, List[nn.Module]]]:
    """A stage as blocks ``(name, modules run in a row)``: the elements of its block container
    (``blocks`` / ``layers``, else any Sequential) or, without one, its submodules; the other
    submodules (downsample, norms) run with the next block, or the previous one at the end. A
    layout change (:class:`_Layout`) never makes a block of its own."""
    chain, _ = _chain(stage, x, f'{name}.')
    if not chain:
        return [(name, [stage])]
    inputs = [x] + [t.out for t in chain[:-1]]
    named = [t for t in chain if t.name.rsplit('.', 1)[-1] in ('blocks', 'layers')]
    containers = {id(t.module) for t in (named or [t for t in chain if isinstance(t.module, _CONTAINERS)])}
    blocks: List[Tuple[str, List[nn.Module]]] = []
    pending: List[nn.Module] = []
    for t, t_in in zip(chain, inputs):
        if containers and id(t.module) not in containers:
            if blocks and not any(id(u.module) in containers for u in chain[chain.index(t):]):
                blocks[-1][1].append(t.module)  # after the last block container
            else:
                pending.append(t.module)
            continue
        inner = _chain(t.module, t_in, f'{t.name}.')[0] if containers else None
        items = [(c.name, [c.module]) for c in inner] if inner else [(t.name, [t.module])]
        items[0] = (items[0][0], pending + items[0][1])
        pending = []
        blocks.extend(items)
    merged: List[Tuple[str, List[nn.Module]]] = []
    for bname, mods in blocks:
        if merged and all(isinstance(m, _Layout) for m in merged[-1][1]):
            mods = merged.pop()[1] + mods
        merged.append((bname, mods))
    if len(merged) > 1 and all(isinstance(m, _Layout) for m in merged[-1][1]):
        merged[-2][1].extend(merged.pop()[1])
    return merged


_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def _param_leaves(m: nn.Module) -> List[nn.Module]:
    """The submodules of ``m`` (itself included) that hold parameters directly."""
    return [c for c in m.modules() if next(c.parameters(recurse=False), None) is not None]


def _starts_block(m: nn.Module) -> bool:
    """Whether ``m`` has parameters outside norm layers (a norm or an activation only ends a block)."""
    return any(not isinstance(c, _NORMS) for c in _param_leaves(m))


def _single_conv(mods: Sequence[nn.Module]) -> bool:
    """At most one conv / linear among the parameters of ``mods`` (a stem layer, not a block)."""
    return sum(not isinstance(c, _NORMS) for m in mods for c in _param_leaves(m)) <= 1


def _resolution(t: Any, channels_last: bool) -> Optional[int]:
    """Spatial positions of an output: H * W of a map, the length of a token sequence."""
    if not torch.is_tensor(t) or t.dim() < 3:
        return None
    return t.shape[1] if t.dim() == 3 else math.prod(t.shape[1:3] if channels_last else t.shape[2:])


def _unit_blocks(model: nn.Module, chain: List[_Traced], x: Tensor
                 ) -> Tuple[List[Tuple[str, int, List[nn.Module]]], str]:
    """A chain without a stage sequence, read unit by unit: ``[(name, stage, modules)]`` with the
    stem first (stage 0), or ``([], why)``.

    Container elements of the chain are read inside (InceptionResNetV2's ``repeat``). Each unit
    with parameters outside norms starts a block; norms, activations and other shape-keeping
    units end the block before, shape-changing parameter-free units (pools) start the block
    after. The leading single-conv blocks are the stem (the first block when all are single
    convs, as in VGG); a block whose first parametrised unit at least halves the number of spatial
    positions starts a stage (a padding-free 3x3 conv does not).
    """
    units: List[_Traced] = []
    inputs: List[Any] = []
    prev = x
    for t in chain:
        inner = _chain(t.module, prev, f'{t.name}.')[0] if isinstance(t.module, _CONTAINERS) else None
        for u in inner or [t]:
            units.append(u)
            inputs.append(prev)
            prev = u.out
    # groups of unit indices: [start unit, ...]; ``lead`` is the index of the unit that starts it
    groups: List[List[int]] = []
    leads: List[int] = []
    pending: List[int] = []
    for i, u in enumerate(units):
        if _starts_block(u.module):
            groups.append(pending + [i])
            leads.append(i)
            pending = []
        elif not groups or pending or (next(u.module.parameters(), None) is None
                                       and getattr(u.out, 'shape', None) != getattr(inputs[i], 'shape', None)):
            pending.append(i)
        else:
            groups[-1].append(i)
    if len(groups) < 2:
        return [], f'it runs {len(groups)} submodule(s) with parameters besides norms ({[u.name for u in units]})'
    groups[-1].extend(pending)
    for g in groups[:-1]:
        if not torch.is_tensor(units[g[-1]].out):
            return [], f'{units[g[-1]].name} outputs a {type(units[g[-1]].out).__name__}, not a tensor'
    n_stem = next((i for i, g in enumerate(groups) if not _single_conv([units[j].module for j in g])), len(groups))
    n_stem = 1 if n_stem in (0, len(groups)) else n_stem
    channels_last = getattr(model, 'output_fmt', 'NCHW') == 'NHWC'
    out = [('stem', 0, [units[j].module for g in groups[:n_stem] for j in g])]
    stage = 0
    for g, lead in zip(groups[n_stem:], leads[n_stem:]):
        r_in = _resolution(inputs[g[0]], channels_last)
        r_lead = _resolution(units[lead].out, channels_last)
        if stage == 0 or (r_in is not None and r_lead is not None and 2 * r_lead <= r_in):
            stage += 1
        out.append((units[lead].name, stage, [units[j].module for j in g]))
    return out, ''


def _nchw_map(model: nn.Module) -> Callable[[Tensor, Tuple[int, int]], Tensor]:
    """Block outputs as NCHW maps: NHWC maps permuted, token sequences (prefix tokens dropped)
    laid on the grid whose aspect is the image's."""
    channels_last = getattr(model, 'output_fmt', 'NCHW') == 'NHWC'
    num_prefix = int(getattr(model, 'num_prefix_tokens', 0) or 0)

    def to_map(x: Tensor, img_hw: Tuple[int, int]) -> Tensor:
        if x.dim() == 4:
            return x.permute(0, 3, 1, 2).contiguous() if channels_last else x
        if x.dim() == 2:
            return x[:, :, None, None]
        # prefix tokens (class, registers) first: the model's count, else the fewest that leave a grid
        for k in dict.fromkeys([num_prefix] + list(range(17))):
            n = x.shape[1] - k
            gh = max(1, round(math.sqrt(n * img_hw[0] / img_hw[1]))) if n > 0 else 0
            if gh and gh * (n // gh) == n and abs(n // gh / gh - img_hw[1] / img_hw[0]) <= 0.5 * img_hw[1] / img_hw[0]:
                break
        else:
            raise ValueError(f'{x.shape[1]} tokens do not fill a grid of the image aspect {img_hw}')
        x, gw = x[:, k:], n // gh
        return x.reshape(x.shape[0], gh, gw, x.shape[-1]).permute(0, 3, 1, 2).contiguous()
    return to_map


def _trace_inputs(model: nn.Module) -> List[Tensor]:
    """Small inputs to trace with: the fixed image size of a patch-embedding model, else 64 pixels
    a side, then the size the model was built for (its patch embedding's ``img_size``, else its
    default size: for models that need it); sizes in multiples of the embedding's stride."""
    from .graph_reader import input_multiple
    c, h, w = model.pretrained_cfg.get('input_size', (3, 224, 224))
    embed = getattr(model, 'patch_embed', None)
    top = embed is not None
    if not top:  # a wrapped encoder (DeepSeek-ViT's ``encoder.patch_embed``)
        embed = next((m for n, m in model.named_modules()
                      if n.endswith('patch_embed') and getattr(m, 'img_size', None) is not None), None)
    built = getattr(embed, 'img_size', None)
    if built is not None:
        h, w = (built, built) if isinstance(built, int) else tuple(built)
    ph, pw = input_multiple(model)
    sizes = [(max(ph, min(h, 64) // ph * ph), max(pw, min(w, 64) // pw * pw)), (h, w)]
    fixed = not getattr(model, 'dynamic_img_size', False) if top else getattr(embed, 'strict_img_size', False)
    if built is not None and fixed:
        sizes = [(h, w)]
    g = torch.Generator().manual_seed(0)  # leaves the global random state alone
    return [torch.randn(1, c, *hw, generator=g) for hw in dict.fromkeys(sizes)]


def _generic(model: nn.Module) -> BlockSequence:
    """Any timm model whose ``forward_features`` is ``stem -> stages -> final`` run as a chain:
    the stem is what runs before the first trunk submodule (``stages``, ``blocks``, ``layers``,
    ``s1``...), the final norm what runs after the last; each stage is split into its blocks."""
    cls = type(model).__name__
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            inputs = _trace_inputs(model)
            for x in inputs:
                try:
                    chain, why = _chain(model, x, fn=model.forward_features)
                    break
                except Exception as e:  # too small for this model: try the next size
                    err = e
            else:
                sizes = [tuple(x.shape[1:]) for x in inputs]
                raise InputError(f'{cls} cannot be traced at input sizes {sizes}: '
                                 f'{type(err).__name__}: {err}'.splitlines()[0])
            if chain is None:
                return _from_graph(model, x, f'forward_features is not a chain of submodules ({why})')
            prefix = ''
            while chain and len(chain) == 1 and next(chain[0].module.children(), None) is not None:
                # one module runs everything (DenseNet's ``features``, an ``encoder``): read inside it
                prefix = f'{chain[0].name}.'
                chain, why = _chain(chain[0].module, x, prefix)
            if chain is None:
                return _from_graph(model, x, f'{prefix[:-1]} is not a chain of submodules ({why})')
            trunk = [i for i, t in enumerate(chain) if _TRUNK.match(t.name[len(prefix):])]
            if trunk and trunk[0] == 0 and len(trunk) > 1:  # the first stage is the stem (SENet's layer0)
                trunk = trunk[1:]
            if not trunk or trunk[0] == 0:
                # no stage sequence: the chain's own submodules are the blocks (VGG, Inception, Xception)
                units, why = _unit_blocks(model, chain, x)
                if not units:
                    raise InputError(f'{cls} cannot be split: no stem and blocks found in forward_features ({why})')
                blocks = [_run_all(mods) for _, _, mods in units]
                infos, counts = [], {}
                for i, (name, stage, mods) in enumerate(units):
                    infos.append(BlockInfo(i, stage, counts.get(stage, 0), name, modules=list(mods)))
                    counts[stage] = counts.get(stage, 0) + 1
                return BlockSequence(cls.lower(), model, blocks, infos, nn.Identity(), _nchw_map(model))
            stem_mods = [t.module for t in chain[:trunk[0]]]
            blocks: List[Callable] = [_run_all(stem_mods)]
            infos = [BlockInfo(0, 0, 0, 'stem', modules=list(stem_mods))]
            stage = 0
            for i in range(trunk[0], trunk[-1] + 1):
                t, t_in = chain[i], chain[i - 1].out
                if i not in trunk:  # a submodule between stages runs with the previous block
                    _append_to_last(blocks, infos, t.module)
                    continue
                if isinstance(t.module, _CONTAINERS) and all(_is_stage_like(c) for c in t.module):
                    inner, _ = _chain(t.module, t_in, f'{t.name}.')
                    stages = [(c.name, c.module, x_in) for c, x_in in
                              zip(inner, [t_in] + [c.out for c in inner[:-1]])] if inner else [(t.name, t.module, t_in)]
                else:
                    stages = [(t.name, t.module, t_in)]
                for name, module, x_in in stages:
                    stage += 1
                    for j, (bname, mods) in enumerate(_stage_blocks(name, module, x_in)):
                        infos.append(BlockInfo(len(blocks), stage, j, bname, modules=list(mods)))
                        blocks.append(_run_all(mods))
            # after the stages: what changes the shape (conv_head, final_conv) ends the last
            # block, so its channels are the module's; the shape-keeping rest is the final norm
            tail = chain[trunk[-1] + 1:]
            keep = len(tail)
            while keep > 0 and tail[keep - 1].out.shape == chain[trunk[-1] + keep - 1].out.shape:
                keep -= 1
            for t in tail[:keep]:
                _append_to_last(blocks, infos, t.module)
            final = [t.module for t in tail[keep:]]
    finally:
        model.train(was_training)
    final_norm = final[0] if len(final) == 1 else nn.Sequential(*final) if final else nn.Identity()
    return BlockSequence(cls.lower(), model, blocks, infos, final_norm, _nchw_map(model))


def _from_graph(model: nn.Module, x: Tensor, why: str) -> BlockSequence:
    """``model`` read from its fx graph (:mod:`.graph_reader`), when its forward is no chain."""
    from .graph_reader import read_graph
    cls = type(model).__name__
    try:
        blocks, final = read_graph(model, x, getattr(model, 'output_fmt', 'NCHW') == 'NHWC')
    except InputError as e:
        reason = str(e).split(' cannot be split: ', 1)[-1]
        raise InputError(f'{cls} cannot be split: {why}; read as a graph: {reason}') from None
    except Exception as e:  # noqa: BLE001 - the graph runs values fx hands over (immutable lists...)
        msg = f'{type(e).__name__}: {e}'.splitlines()[0][:160]
        raise InputError(f'{cls} cannot be split: {why}; read as a graph: running its graph failed ({msg})') from None
    infos = [BlockInfo(i, stage, j, name, modules=list(mods), params=list(params))
             for i, (name, stage, j, _, mods, params) in enumerate(blocks)]
    return BlockSequence(cls.lower(), model, [b[3] for b in blocks], infos, final, _nchw_map(model))


def to_block_sequence(model: nn.Module) -> BlockSequence:
    """Read a timm model as a :class:`BlockSequence`: as a chain of its submodules, else from its
    ``torch.fx`` graph; or raise one line saying why it cannot be split."""
    return _generic(model)


def run_blocks(seq: BlockSequence, x: Tensor, start: int, end: int, apply_final_norm: bool = False) -> Tensor:
    """Run blocks ``start..end`` (inclusive); the final norm after the last block if asked."""
    for i in range(start, end + 1):
        x = seq.blocks[i](x)
    if apply_final_norm:
        x = seq.final_norm(x)
    return x


def block_shapes(seq: BlockSequence, input_shape: Sequence[int], batch_size: int = 1,
                 device: Optional[torch.device] = None) -> List[torch.Size]:
    """Output shape of every block (as NCHW maps) from one no-grad pass; fills ``num_chs``/``reduction``."""
    shapes = []
    was_training = seq.model.training
    seq.model.eval()
    try:
        with torch.no_grad():
            x = torch.zeros(batch_size, *input_shape, device=device)
            img_hw = tuple(input_shape[-2:])
            for blk, info in zip(seq.blocks, seq.infos):
                x = blk(x)
                fmap = seq.to_map(x, img_hw)
                shapes.append(fmap.shape)
                info.num_chs = fmap.shape[1]
                info.reduction = max(1, round(img_hw[0] / fmap.shape[2]))
    finally:
        seq.model.train(was_training)
    return shapes
