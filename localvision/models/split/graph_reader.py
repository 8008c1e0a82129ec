"""A timm model read from its ``torch.fx`` graph: blocks cut where one tensor carries the state.

The chain reader (:func:`~.block_sequence._generic`) needs ``forward_features`` to call its
submodules one after the other on the previous one's output. Many transformers do more between
two submodules: a position embedding or a class token is added (CaiT, ConViT, PiT, Visformer,
VOLO, SAM-ViT), the blocks get inputs besides ``x`` that depend on no image (RoPE, relative
position tables, masks), or tokens are reshaped between stages. This reader handles those by
reading the graph ``torch.fx`` records of ``forward_features``, with the elements of the
model's block containers (``blocks.3``, ``stages.1.blocks.0``, ``network.2.1``) kept as single
calls:

* a *cut* is a point of the graph where exactly one value computed from the image is still
  needed later, and it is a tensor: the state of the network is that tensor, so gradients can
  be stopped there and the rest of the forward run on it alone;
* the cut after each block call (before its first one, for the stem) is used where it is one;
  a block after which the state is more than one tensor (CaiT's class-attention blocks take
  the patch tokens and the class token) runs with the block before;
* each block is the graph between two cuts, replayed as a :class:`torch.fx.GraphModule` over
  the timm model's own submodules and parameters (so ``state_dict`` keys stay timm's); what
  depends on no image (a RoPE table, a relative position index) is recomputed in each block
  that needs it;
* the stem is the graph before the first block, the final norm the graph after the last one
  if it keeps the shape (else it ends the last block).

A parameter used by two blocks (a shared relative position bias) cannot be split, and neither
can a forward whose graph changes with ``model.training`` or that ``torch.fx`` cannot trace
(control flow on the input); those are refused with one line saying why.
"""
from __future__ import annotations

import functools
import operator
import re
import sys
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

import torch
import torch.fx as fx
import torch.nn as nn
import torch.utils._pytree as pytree

from localvision.errors import InputError

from .block_sequence import _CONTAINERS

Tensor = torch.Tensor

# names of block containers (and of modules holding them): their elements are the blocks
_TRUNK_NAME = re.compile(r'^(blocks|stages|layers|levels|network|transformers|encoder|features'
                         r'|(stage|layer|level|blocks|serial_blocks|s)\d+)$')


def _holds_trunk(module: nn.Module) -> bool:
    """Whether a block container sits anywhere inside ``module``."""
    return any(isinstance(m, _CONTAINERS) and _TRUNK_NAME.match(n.rsplit('.', 1)[-1])
               for n, m in module.named_modules() if n)


def block_modules(model: nn.Module) -> Dict[str, nn.Module]:
    """The blocks of ``model`` by qualified name: elements of the block containers (a container
    whose name is ``blocks``, ``stages``, ``layers``, ``stage2``...), read inside where an element
    is itself a container or holds one (a stage with ``downsample`` and ``blocks``)."""
    out: Dict[str, nn.Module] = {}

    def elements(container: nn.Module, path: str) -> None:
        # in a container of stages, the modules between them (a downsample) run with the next block
        nested = any(isinstance(el, _CONTAINERS) or _holds_trunk(el) for el in container.children())
        for n, el in container.named_children():
            if isinstance(el, _CONTAINERS):
                elements(el, f'{path}.{n}')
            elif _holds_trunk(el):
                walk(el, f'{path}.{n}.')
            elif not nested and next(el.parameters(), None) is not None:
                out[f'{path}.{n}'] = el

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            if isinstance(child, _CONTAINERS) and _TRUNK_NAME.match(name):
                elements(child, f'{prefix}{name}')
            elif not isinstance(child, _CONTAINERS) and _holds_trunk(child):
                walk(child, f'{prefix}{name}.')
    walk(model, '')
    return out


class _Features(nn.Module):
    """``model.forward_features`` as a module's forward, for ``torch.fx`` to trace."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, x: Tensor) -> Tensor:
        return self.m.forward_features(x)


class _Tracer(fx.Tracer):
    """Keeps the blocks and timm's no-trace modules as single calls. With a ``sample`` input, a
    condition on a traced value (``if x.ndim != 4``, ``if mask.any()``) takes the branch it takes on
    the sample, and a guard in the graph refuses an input that would take the other one."""

    def __init__(self, leaves: Set[str], sample: Optional[Tensor] = None) -> None:
        from timm.layers import get_notrace_functions
        super().__init__(autowrap_functions=tuple(get_notrace_functions()))
        self.leaves = leaves
        self.sample = sample
        self._running = False  # the graph so far is being run on the sample (modules called, not traced)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        from timm.layers import get_notrace_modules
        if qualname in self.leaves or isinstance(m, tuple(get_notrace_modules())):
            return True
        return super().is_leaf_module(m, qualname)

    def call_module(self, m: nn.Module, forward: Callable, args: tuple, kwargs: dict) -> Any:
        if self._running:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict) -> Any:
        if self._running:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def to_bool(self, obj: fx.Proxy) -> bool:
        if self.sample is None:
            return super().to_bool(obj)
        g = fx.Graph()
        env: Dict[fx.Node, fx.Node] = {}
        g.graph_copy(self.graph, env)
        g.output(env[obj.node])
        self._running = True
        try:
            with torch.no_grad():
                taken = bool(fx.GraphModule(self.root, g)(self.sample))
        finally:
            self._running = False
        self.create_proxy('call_function', _branch_guard, (obj, taken), {})
        return taken


@fx.node.has_side_effect  # kept by dead-code elimination: it returns nothing
def _branch_guard(cond: Any, taken: bool) -> None:
    """Refuse an input on which the forward would branch otherwise than the graph was read."""
    if bool(cond) != taken:
        raise InputError('this input takes another branch of the backbone\'s forward than the input its blocks were '
                         'read on (a condition on the input); use inputs like those of the split\'s input_size')


def _as_call(fn: Callable) -> Callable:
    """``fn`` recorded as one call when it gets a traced value (its own control flow is not traced)."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        proxies = [a for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, fx.Proxy)]
        if not proxies:
            return fn(*args, **kwargs)
        return proxies[0].tracer.create_proxy('call_function', fn, args, kwargs)
    return call


def _trace(model: nn.Module, leaves: Set[str], sample: Optional[Tensor] = None) -> fx.Graph:
    """The graph of ``model.forward_features``; timm's position-embedding resampling (it branches on
    sizes) is one call, as are timm's no-trace functions."""
    from timm.layers import resample_abs_pos_embed, resample_abs_pos_embed_nhwc
    root = _Features(model)
    scope = sys.modules[type(model).__module__].__dict__
    patched = {k: v for k, v in scope.items() if v is resample_abs_pos_embed or v is resample_abs_pos_embed_nhwc}
    try:
        scope.update({k: _as_call(v) for k, v in patched.items()})
        return _Tracer({f'm.{n}' for n in leaves}, sample).trace(root)
    finally:
        scope.update(patched)


def _values(root: nn.Module, graph: fx.Graph, x: Tensor) -> Dict[fx.Node, Any]:
    """The value of every node on input ``x`` (kept: the graph is small and the input tiny)."""
    gm = fx.GraphModule(root, graph)
    env: Dict[fx.Node, Any] = {}

    class Recorder(fx.Interpreter):
        def fetch_args_kwargs_from_env(self, n: fx.Node):
            # plain lists, as the generated code passes them (a module may change a list it gets)
            args, kwargs = super().fetch_args_kwargs_from_env(n)
            def plain(a):
                return list(a) if isinstance(a, list) else a
            return tuple(plain(a) for a in args), {k: plain(v) for k, v in kwargs.items()}

        def run_node(self, n: fx.Node) -> Any:
            env[n] = super().run_node(n)
            return env[n]
    Recorder(gm).run(x)
    return env


class GraphBlock(nn.Module):
    """A stretch of a traced ``forward_features`` between two cuts, run on the state tensor.

    Its submodules and parameters are the timm model's own (shared, not copied); it is not
    meant to be registered under the model (that would list them twice).
    """

    def __init__(self, root: nn.Module, graph: fx.Graph, name: str) -> None:
        super().__init__()
        self.gm = fx.GraphModule(root, graph, class_name=name)

    def forward(self, x: Tensor) -> Tensor:
        return self.gm(x)


class Cut(NamedTuple):
    """A point of the graph after node ``pos`` where the state is ``state`` (a tensor) plus sizes.

    ``binds`` gives each other image-dependent value still needed (batch size, grid height and
    width, as ints or a tuple of them) as dims of the tensor that crosses the cut; ``grid`` is
    ``(h, w)`` when a token sequence crosses it laid out as a map (``NCHW``, or ``NHWC`` for a
    channels-last model), so that its shape carries the grid.
    """

    pos: int
    state: fx.Node
    name: str
    binds: Dict[fx.Node, Any]
    grid: Optional[Tuple[Tuple[fx.Node, Optional[int]], Tuple[fx.Node, Optional[int]]]]


def _shape_dim(g: fx.Graph, t: fx.Node, d: Any) -> Any:
    if isinstance(d, tuple):  # ('const', value)
        return d[1]
    return g.call_function(operator.getitem, (g.call_function(getattr, (t, 'shape')), d))


def _segment(root: nn.Module, nodes: Sequence[fx.Node], x_dep: Set[fx.Node], start: Optional[Cut],
             end: Cut, channels_last: bool, sizes_only: Set[fx.Node] = frozenset()) -> fx.Graph:
    """A graph that takes the tensor crossing cut ``start`` (the image when ``None``), runs the
    image-dependent ``nodes`` and returns the tensor crossing cut ``end``; what depends on no image
    is copied in where it is needed."""
    g = fx.Graph()
    env: Dict[fx.Node, fx.Node] = {}
    inp = g.placeholder('x')
    if start is not None:
        state = inp
        if start.grid is not None:  # a map back to tokens
            state = (g.call_method('flatten', (inp, 1, 2)) if channels_last else
                     g.call_method('transpose', (g.call_method('flatten', (inp, 2)), 1, 2)))
        env[start.state] = state
        for n, spec in start.binds.items():
            if not isinstance(spec, tuple) or spec[0] == 'const':
                env[n] = _shape_dim(g, inp, spec)
            else:
                kind, dims = spec
                env[n] = g.call_function(kind, ([_shape_dim(g, inp, d) for d in dims],))

    def get(n: fx.Node) -> fx.Node:
        if n not in env:
            if n in x_dep and n not in sizes_only:
                if n.op == 'placeholder' and start is None:
                    return inp
                raise KeyError(n.name)
            env[n] = g.node_copy(n, get)  # image-free, or from sizes only: recomputed here
        return env[n]
    for n in nodes:
        if n.op == 'placeholder':
            env[n] = inp
            continue
        env[n] = g.node_copy(n, get)
    out = get(end.state)
    if end.grid is not None:  # tokens to a map whose shape carries the grid
        hw = tuple(get(n) if k is None else g.call_function(operator.getitem, (get(n), k)) for n, k in end.grid)
        out = (g.call_method('unflatten', (out, 1, hw)) if channels_last else
               g.call_method('unflatten', (g.call_method('transpose', (out, 1, 2)), 2, hw)))
    g.output(out)
    g.owning_module = root
    g.eliminate_dead_code()
    return g


def _check_size(x: Tensor, size: Tuple[int, int], cls: str) -> Tensor:
    if tuple(x.shape[-2:]) != size:
        raise InputError(f'{cls} split into blocks takes {size[0]}x{size[1]} inputs only (its forward reads sizes '
                         f'that the split fixes), got {tuple(x.shape[-2:])}')
    return x


fx.wrap('_check_size')


def _require_size(g: fx.Graph, size: Tuple[int, int], cls: str) -> None:
    """Make the stem graph ``g`` check its input's height and width first."""
    inp = next(n for n in g.nodes if n.op == 'placeholder')
    with g.inserting_after(inp):
        chk = g.call_function(_check_size, (inp, size, cls))
    inp.replace_all_uses_with(chk, delete_user_cb=lambda u: u is not chk)


def _reads_size(n: fx.Node) -> bool:
    """Whether node ``n`` reads only the size of its tensor (``x.shape``, ``x.size()``, ``x.dim()``)."""
    return ((n.op == 'call_function' and n.target is getattr and n.args[1:2] in _META_ATTRS)
            or (n.op == 'call_method' and n.target in ('size', 'dim', 'numel', 'get_device'))
            or (n.op == 'call_function' and n.target is len))


_META_ATTRS = (('shape',), ('ndim',), ('dtype',), ('device',), ('is_cuda',))


def _meta(v: Any) -> bool:
    """A value that says how, not what: a dtype, a device, a flag."""
    return isinstance(v, (torch.dtype, torch.device, bool, str))


def _flat_ints(v: Any) -> Optional[List[int]]:
    """``v`` as a list of ints if it is an int or a tuple / list / Size of ints."""
    if isinstance(v, int) and not isinstance(v, bool):
        return [v]
    if isinstance(v, (tuple, list)) and v and all(isinstance(i, int) and not isinstance(i, bool) for i in v):
        return list(v)
    return None


def _bind(live: Sequence[fx.Node], runs: Sequence[Dict[fx.Node, Any]], shapes: Sequence[Sequence[int]]
          ) -> Optional[Dict[fx.Node, Any]]:
    """Each live value as dims of the crossing tensor (same dims on every sample run), or ``None``."""
    binds: Dict[fx.Node, Any] = {}
    for n in live:
        if all(r.get(n, 0) is None for r in runs):  # e.g. no attention mask: a constant None
            binds[n] = ('const', None)
            continue
        if all(_meta(r.get(n)) and r.get(n) == runs[0].get(n) for r in runs):  # the dtype of the input
            binds[n] = ('const', runs[0][n])
            continue
        flat = [_flat_ints(r.get(n)) for r in runs]
        if any(f is None for f in flat) or len({len(f) for f in flat}) != 1:
            return None
        dims = []
        for k in range(len(flat[0])):
            d = next((d for d in range(len(shapes[0]))
                      if all(len(s) == len(shapes[0]) and s[d] == f[k] for s, f in zip(shapes, flat))), None)
            if d is None and len({f[k] for f in flat}) == 1:
                d = ('const', flat[0][k])  # the same for every input size tried: a constant of the model
            if d is None:
                return None
            dims.append(d)
        v = runs[0][n]
        binds[n] = dims[0] if isinstance(v, int) else (type(v) if type(v) in (tuple, list, torch.Size) else tuple,
                                                        dims)
    return binds


def _owners(g: fx.Graph, root: nn.Module) -> Tuple[List[nn.Module], List[nn.Parameter]]:
    """The submodules called and the parameters read (directly) by graph ``g``."""
    mods, params = [], []
    for n in g.nodes:
        if n.op == 'call_module':
            mods.append(root.get_submodule(n.target))
        elif n.op == 'get_attr':
            obj = root
            for part in n.target.split('.'):
                obj = getattr(obj, part)
            if isinstance(obj, nn.Parameter):
                params.append(obj)
    return mods, params


def input_multiple(model: nn.Module) -> Tuple[int, int]:
    """The stride of the model's first patch embedding (input sizes must be multiples of it), or 1: the
    stride of its projection where that is the patch-sized conv (an overlapping embedding: PVT-v2's
    7 px patches at stride 4), else its patch size (TNT's pixel embedding strides inside a patch)."""
    embed = next((m for m in model.modules() if isinstance(getattr(m, 'patch_size', None), (int, tuple, list))
                  and not isinstance(m, type(model))), None)
    if embed is None:
        return 1, 1
    proj = getattr(embed, 'proj', None)
    p = embed.patch_size
    p = (p, p) if isinstance(p, int) else tuple(p)
    if isinstance(proj, nn.Conv2d) and tuple(proj.kernel_size) == p:
        p = tuple(proj.stride)
    return (int(p[0]), int(p[-1])) if all(isinstance(i, int) and i > 0 for i in p) else (1, 1)


def _sample_inputs(x: Tensor, patch: Tuple[int, int] = (1, 1)) -> Tuple[Tensor, Tensor, Tensor]:
    """Inputs to tell sizes found in the graph apart: ``x`` at batch 2; at batch 5 and about 1.5x / 2x
    the height and width, in steps of 32 px (of twice the patch size where it does not divide 32: a
    ViT with 14 px patches) (no grid size changes as the batch size does); at batch 5 and ``x``'s
    size, for a model that only runs at one size."""
    a = x[:1].expand(2, -1, -1, -1).contiguous()
    h, w = x.shape[-2:]
    sh, sw = (32 if 32 % p == 0 else 2 * p for p in patch)
    g = torch.Generator().manual_seed(1)
    other = torch.randn(5, x.shape[1], h + sh * max(1, h // (2 * sh)), w + 2 * sw * max(1, w // (2 * sw)), generator=g)
    return a, other, torch.randn(5, *x.shape[1:], generator=g)


def _cut(pos: int, name: str, live: Sequence[fx.Node], runs: Sequence[Dict[fx.Node, Any]],
         channels_last: bool, images: Sequence[Tuple[int, int]]) -> Optional[Cut]:
    """The cut after ``pos`` if the state there is one tensor whose shape carries the sizes still needed."""
    tensors = [n for n in live if torch.is_tensor(runs[0].get(n))]
    if len(tensors) != 1:
        return None
    state = tensors[0]
    others = [n for n in live if n is not state]
    shapes = [tuple(r[state].shape) for r in runs]
    binds = _bind(others, runs, shapes)
    if binds is not None:
        return Cut(pos, state, name, binds, None)
    if len(shapes[0]) != 3:
        return None
    # a token sequence whose grid is among the live sizes: cross the cut as a map
    scalars = [(n, k) for n in others for k in range(len(_flat_ints(runs[0].get(n)) or []))
               if all(_flat_ints(r.get(n)) is not None for r in runs)]

    def val(r, nk):
        return _flat_ints(r[nk[0]])[nk[1]]
    def aspect_error(pair) -> float:  # the grid's height over width against the image's
        return sum(abs(val(r, pair[0]) / val(r, pair[1]) - hw[0] / hw[1]) for r, hw in zip(runs, images))
    pairs = [(hn, wn) for hn in scalars for wn in scalars if hn != wn
             and all(val(r, hn) * val(r, wn) == sh[1] for r, sh in zip(runs, shapes))]
    for hn, wn in sorted(pairs, key=aspect_error):
        maps = [(b, val(r, hn), val(r, wn), c) if channels_last else (b, c, val(r, hn), val(r, wn))
                for r, (b, _, c) in zip(runs, shapes)]
        binds = _bind(others, runs, maps)
        if binds is not None:
            grid = tuple((n, k if isinstance(runs[0][n], (tuple, list)) else None) for n, k in (hn, wn))
            return Cut(pos, state, name, binds, grid)
    return None


def read_graph(model: nn.Module, x: Tensor, channels_last: bool = False):
    """``model`` read from its fx graph as ``[(name, stage, index_in_stage, block, modules, params)]``
    (stem first) and the final norm (a module), or raise one line saying why it cannot be split.

    ``x`` is a small input the model accepts (used to tell tensors from sizes).
    """
    cls = type(model).__name__
    leaves = block_modules(model)
    if not leaves:
        raise InputError(f'{cls} cannot be split: it has no block container (blocks / stages / layers)')
    try:
        graphs = {}
        for mode in (True, False):
            model.train(mode)
            graphs[mode] = _trace(model, set(leaves), x)
    except Exception as e:  # noqa: BLE001 - the tracer's message says what it could not follow
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f'{cls} cannot be split: torch.fx cannot trace forward_features '
                         f'({type(e).__name__}: {msg[:160]})') from None
    if graphs[True].python_code('self').src != graphs[False].python_code('self').src:
        raise InputError(f'{cls} cannot be split: forward_features runs different code in training and in eval '
                         'mode outside its blocks')
    graph = graphs[False]
    root = _Features(model)
    nodes = list(graph.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    first, other, same_size = _sample_inputs(x, input_multiple(model))
    runs = [_values(root, graph, first)]
    try:
        runs.append(_values(root, graph, other))
        samples = [first, other]
    except Exception:  # noqa: BLE001 - a fixed-size model: only the batch size differs
        runs.append(_values(root, graph, same_size))
        samples = [first, same_size]
    fixed_size = samples[0].shape[-2:] == samples[1].shape[-2:]
    images = [tuple(xi.shape[-2:]) for xi in samples]
    # image-dependent nodes: through the image's values, or through its sizes only (``x.shape``,
    # and what is computed from sizes alone: a RoPE table of the patch grid); and the last
    # position each is needed at
    x_dep: Set[fx.Node] = set()
    sizes_only: Set[fx.Node] = set()
    last_use: Dict[fx.Node, int] = {}
    for n in nodes:
        deps = [a for a in n.all_input_nodes if a in x_dep]
        if n.op == 'placeholder' or deps:
            x_dep.add(n)
            if n.op != 'placeholder' and (_reads_size(n) or all(a in sizes_only for a in deps)):
                sizes_only.add(n)
        for a in deps:
            last_use[a] = max(last_use.get(a, -1), pos[n])
    result = nodes[-1].args[0]
    if not isinstance(result, fx.Node) or not torch.is_tensor(runs[0].get(result)):
        raise InputError(f'{cls} cannot be split: forward_features does not return one tensor')

    def cut_after(i: int, name: str) -> Optional[Cut]:
        live = [n for n in nodes[:i + 1] if n in x_dep and last_use.get(n, -1) > i]
        # what is computed from sizes alone is recomputed after the cut from the sizes it needs
        sizes: List[fx.Node] = []
        todo = [n for n in live if n in sizes_only]
        while todo:
            n = todo.pop()
            if n in sizes:
                continue
            if _flat_ints(runs[0].get(n)) is not None or _meta(runs[0].get(n)):
                sizes.append(n)
            else:
                todo.extend(a for a in n.all_input_nodes if a in x_dep)
                if any(a in x_dep and a not in sizes_only for a in n.all_input_nodes):
                    return None
        live = [n for n in live if n not in sizes_only] + sizes
        return _cut(i, name, live, runs, channels_last, images)

    calls = [i for i, n in enumerate(nodes) if n.op == 'call_module' and n.target[2:] in leaves]
    if not calls:
        raise InputError(f'{cls} cannot be split: forward_features calls none of its blocks')
    # the stem ends just before the first block call (or as close before it as the state allows);
    # each block ends just after its call (or as soon after as the state allows, before the next)
    first = next((c for c in (cut_after(i, 'stem') for i in range(calls[0] - 1, -1, -1)) if c is not None), None)
    if first is None:
        raise InputError(f'{cls} cannot be split: the stem passes more than one tensor (or sizes its output '
                         f'does not carry) to {nodes[calls[0]].target[2:]}')
    cuts = [first]
    for i, nxt in zip(calls, calls[1:] + [len(nodes) - 1]):
        name = nodes[i].target[2:]
        c = next((c for c in (cut_after(j, name) for j in range(max(i, cuts[-1].pos + 1), nxt)) if c is not None),
                 None)
        if c is not None:
            cuts.append(c)
    # after the last cut: blocks still called run with the last block; the rest is the final norm
    # if it keeps the shape, else it ends the last block
    tail = nodes[cuts[-1].pos + 1:-1]
    tail_calls = any(n.op == 'call_module' and n.target[2:] in leaves for n in tail)
    if tail_calls or runs[0][result].shape != runs[0][cuts[-1].state].shape:
        cuts[-1] = Cut(len(nodes) - 2, result, cuts[-1].name, {}, None)
        tail = []
    elif cuts[-1].grid is not None or cuts[-1].binds:
        cuts[-1] = cuts[-1]._replace(binds={}, grid=None)
        if cuts[-1].state is result:
            tail = []
    if any(c.state is result for c in cuts[:-1]):
        raise InputError(f'{cls} cannot be split: its output is computed before its last block')
    if len(cuts) < 3:
        raise InputError(f'{cls} cannot be split: its state is one tensor at {len(cuts) - 1} point(s) between '
                         'blocks only (the blocks pass more than one value on)')

    blocks = []
    owners: Dict[int, str] = {}
    prev: Optional[Cut] = None
    stage, in_stage, parent = 0, 0, None

    def own(g: fx.Graph, name: str) -> Tuple[List[nn.Module], List[nn.Parameter]]:
        mods, params = _owners(g, root)
        for q in [q for m in mods for q in m.parameters()] + params:
            if owners.setdefault(id(q), name) != name:
                raise InputError(f'{cls} cannot be split: a parameter is used by both {owners[id(q)]} and {name} '
                                 '(shared across blocks)')
        return mods, params
    for c in cuts:
        seg = [n for n in nodes[(prev.pos if prev else -1) + 1:c.pos + 1] if n in x_dep]
        inner = [n.target[2:] for n in seg if n.op == 'call_module' and n.target[2:] in leaves]
        if len({n.rsplit('.', 1)[0] for n in inner}) > 1:
            raise InputError(f'{cls} cannot be split: from {inner[0]} to {inner[-1]} its state is more than one '
                             'tensor (parallel branches)')
        g = _segment(root, seg, x_dep, prev, c, channels_last, sizes_only)
        if prev is None and fixed_size:  # sizes were read as constants: hold the stem to the size
            _require_size(g, tuple(samples[0].shape[-2:]), cls)
        mods, params = own(g, c.name)
        if c.name != 'stem':
            par = c.name.rsplit('.', 1)[0]
            if par != parent:
                stage, in_stage, parent = stage + 1, 0, par
            else:
                in_stage += 1
        blocks.append((c.name, stage, in_stage, GraphBlock(root, g, f'Block{len(blocks)}'), mods, params))
        prev = c
    final: nn.Module = nn.Identity()
    if tail:
        end = Cut(len(nodes) - 2, result, 'final norm', {}, None)
        g = _segment(root, [n for n in tail if n in x_dep], x_dep, prev, end, channels_last, sizes_only)
        own(g, 'the final norm')
        final = GraphBlock(root, g, 'FinalNorm')
    # the blocks in a row must give forward_features' output on every sample (sizes read right)
    with torch.no_grad():
        for xi, r in zip(samples, runs):
            y = xi
            for b in blocks:
                y = b[3](y)
            if not torch.equal(final(y), r[result]):
                raise InputError(f'{cls} cannot be split: its blocks in a row do not reproduce forward_features '
                                 f'at input {tuple(xi.shape)} (a size read off the wrong dim)')
    return blocks, final
