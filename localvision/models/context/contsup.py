"""ContSup (Yu et al., arXiv 2312.07636): context supply at the cuts of a split network.

At the cut after module k, module k+1 receives ``h.detach() + sum_j M_j(context_j.detach())``
instead of ``h.detach()``. The projections ``M_j`` belong to module k+1 (its loss trains them),
so no gradient crosses a cut. Context sources:

- ``E``: the (normalised) input image through a small encoder,
  conv3x3 - BN - ReLU - conv3x3 (to ``C``) - BN - ReLU - adaptive avg-pool to the map size;
- ``R1``: the input of module k (the one just finished) through conv1x1 - BN - ReLU -
  adaptive avg-pool, a learned skip across the module;
- ``Rn``: the inputs of modules k, k-1, ..., k-n+1, each through its own projection;
- ``R1E`` / ``RnE``: both.

The context path is part of the model: inference runs it too and checkpoints keep it. Token
maps of ViTs are projected as NCHW maps and added to the patch tokens only.
"""
from __future__ import annotations

import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from localvision.errors import InputError
from localvision.models.objectives.base import he_fan_out_init

from .builder import CONTEXTS

Tensor = torch.Tensor
ToMap = Callable[[Tensor, Tuple[int, int]], Tensor]

VARIANTS = ('E', 'R1', 'Rn', 'R1E', 'RnE')
STATE_KEY = 'contsup.inputs'


def _pool_to(x: Tensor, size: Tuple[int, int]) -> Tensor:
    return x if tuple(x.shape[-2:]) == tuple(size) else F.adaptive_avg_pool2d(x, size)


class InputProjection(nn.Module):
    """R context: conv1x1 - BN - ReLU, then adaptive average pool to the target map size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor, size: Tuple[int, int]) -> Tensor:
        return _pool_to(self.act(self.bn(self.conv(x))), size)


class ImageEncoder(nn.Module):
    """E context: conv3x3 - BN - ReLU - conv3x3 - BN - ReLU, then adaptive average pool.

    Args:
        in_channels: image channels.
        out_channels: channels of the map it is added to.
        hidden: channels of the first conv.
        strides: of the two convs (1, 1 in the paper; 2 saves memory on large inputs).
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int, strides: Tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden, 3, stride=strides[0], padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, out_channels, 3, stride=strides[1], padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor, size: Tuple[int, int]) -> Tensor:
        x = self.act(self.bn1(self.conv1(x)))
        return _pool_to(self.act(self.bn2(self.conv2(x))), size)


class CutContext(nn.Module):
    """The projections of one cut: an optional image encoder and one projection per remembered
    module input (``skips[j]`` takes the input of the module j places before the cut)."""

    def __init__(self, encoder: Optional[ImageEncoder], skips: Sequence[Optional[InputProjection]]) -> None:
        super().__init__()
        self.encoder = encoder
        self.skips = nn.ModuleList([nn.Identity() if p is None else p for p in skips])  # Identity: no projection


def parse_variant(variant: str, n: Optional[int], field_name: str = 'model.context') -> Tuple[bool, int]:
    """``(use_image, num_inputs)`` of a variant name; one clear error for anything else."""
    if not isinstance(variant, str) or variant not in VARIANTS:
        raise InputError(f'{field_name}.variant={variant!r} is unknown; allowed: {list(VARIANTS)}')
    m = re.fullmatch(r'(R(1|n))?(E)?', variant)
    use_image = m.group(3) is not None
    if m.group(2) == 'n':
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise InputError(f'{field_name}.variant={variant!r} needs {field_name}.n, the number of '
                             f'remembered module inputs (an int >= 1), got n={n!r}')
        return use_image, n
    if n is not None:
        raise InputError(f"{field_name}.n={n!r} is only used by the variants 'Rn' and 'RnE', not {variant!r}")
    return use_image, 1 if m.group(2) == '1' else 0


@CONTEXTS.register_module()
class ContSup(nn.Module):
    """Context supply at every cut of a K-module split.

    Args:
        in_channels: channels of each module's input (``in_channels[0]`` is the image's);
            filled in by the task model.
        out_channels: channels of each module's output map; filled in by the task model.
        reductions: downsampling of each module's output w.r.t. the image (for the strided
            encoder); filled in by the task model.
        variant: ``'E'``, ``'R1'``, ``'Rn'``, ``'R1E'`` or ``'RnE'``.
        n: remembered module inputs for ``'Rn'`` / ``'RnE'``.
        encoder_hidden: channels of the image encoder's first conv (12 in the paper's code);
            ``None``: the map's channels ``C``.
        width_mult: widens the image encoder's hidden conv.
        strided_encoder: stride the encoder's two convs by 2 where the target map is at least
            2x / 4x smaller than the image (the adaptive pool does the rest). ``False`` (the
            paper's) runs both convs at full image resolution, which on large images costs a
            ``C``-channel map at the image's size per cut: set it for ImageNet / dense tasks.
        project_image: with ``'R1E'`` / ``'RnE'``, also give the cut after module 0 an ``R``
            projection of its input, the image, which the encoder already supplies (the paper's
            code does not).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int],
                 reductions: Optional[Sequence[int]] = None, variant: str = 'R1', n: Optional[int] = None,
                 encoder_hidden: Optional[int] = 12, width_mult: float = 1.0, strided_encoder: bool = False,
                 project_image: bool = False, field_name: str = 'model.context') -> None:
        super().__init__()
        if len(in_channels) != len(out_channels):
            raise ValueError('in_channels and out_channels must list the same modules')
        self.variant = variant
        self.use_image, self.num_inputs = parse_variant(variant, n, field_name)
        num_modules = len(out_channels)
        reductions = list(reductions) if reductions is not None else [1] * num_modules
        cuts = []
        for k in range(num_modules - 1):  # the cut after module k feeds module k+1
            c = out_channels[k]
            encoder = None
            if self.use_image:
                r = reductions[k] if strided_encoder else 1
                strides = (2 if r >= 2 else 1, 2 if r >= 4 else 1)
                hidden = c if encoder_hidden is None else encoder_hidden
                encoder = ImageEncoder(in_channels[0], c, max(int(round(hidden * width_mult)), 1), strides)
            # the input of module k - j; module 0's is the image, which the encoder supplies already
            skips = [InputProjection(in_channels[k - j], c) if k - j > 0 or project_image or not self.use_image
                     else None for j in range(self.num_inputs) if k - j >= 0]
            cuts.append(CutContext(encoder, skips))
        self.cuts = nn.ModuleList(cuts)
        he_fan_out_init(self)

    def extra_repr(self) -> str:
        return f'variant={self.variant!r}, remembered_inputs={self.num_inputs}, image={self.use_image}'

    def parameters_of_module(self, k: int) -> List[nn.Parameter]:
        """Parameters trained by module k's loss: the projections of the cut before it."""
        if 1 <= k <= len(self.cuts):
            return list(self.cuts[k - 1].parameters())
        return []

    def forward(self, k: int, h: Tensor, ctx, to_map: ToMap) -> Tensor:
        """The input module k receives: ``h`` plus the projected context of the cut before it.

        Modules must be run in order 0..K-1 with the same ``ctx`` (one per batch): the inputs
        of finished modules are remembered there (detached) for the ``R`` projections.
        """
        state: Dict[int, Tensor] = ctx.extras.setdefault(STATE_KEY, {})
        if k == 0:
            state.clear()
        if 1 <= k <= len(self.cuts):
            h = self._supply(k, h, ctx, to_map, state)
        if self.num_inputs:
            state[k] = h.detach()
            for old in [i for i in state if i <= k - self.num_inputs]:
                del state[old]
        return h

    def _supply(self, k: int, h: Tensor, ctx, to_map: ToMap, state: Dict[int, Tensor]) -> Tensor:
        cut = self.cuts[k - 1]
        img_hw = tuple(ctx.img_hw)
        size = tuple(h.shape[-2:]) if h.dim() == 4 else tuple(to_map(h[:1].detach(), img_hw).shape[-2:])
        add = None
        if cut.encoder is not None:
            add = cut.encoder(ctx.inputs.detach(), size)
        for j, proj in enumerate(cut.skips):
            if isinstance(proj, nn.Identity):
                continue
            src = state.get(k - 1 - j)
            if src is None:
                raise RuntimeError(f'ContSup: the input of module {k - 1 - j} was not seen; run the modules in '
                                   'order 0..K-1 with one LocalContext per batch')
            y = proj(to_map(src.detach(), img_hw), size)
            add = y if add is None else add + y
        return add_to_features(h, add)


def add_to_features(h: Tensor, add: Tensor) -> Tensor:
    """``h + add`` for NCHW maps; for tokens (B, N, C) ``add`` (B, C, gh, gw) goes to the patch
    tokens only (the last gh*gw), leaving prefix tokens (class, registers) as they are."""
    if h.dim() == 4:
        return h + add
    tokens = add.flatten(2).transpose(1, 2)
    p = h.shape[1] - tokens.shape[1]
    if p < 0 or h.shape[-1] != tokens.shape[-1]:
        raise ValueError(f'cannot add a context map {tuple(add.shape)} to tokens {tuple(h.shape)}')
    if p == 0:
        return h + tokens
    return torch.cat([h[:, :p], h[:, p:] + tokens], dim=1)
