"""A timm backbone built from config and split into K gradient-isolated modules."""
from __future__ import annotations

from localvision.errors import InputError

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn

from .block_sequence import BlockSequence, block_shapes, run_blocks, to_block_sequence
from .cuts import STRATEGIES, balanced_cuts, check_num_modules, equal_cuts, module_ranges, validate_cuts
from .profiling import profile_saved_bytes

Tensor = torch.Tensor

SPLIT_KEYS = ('num_modules', 'cuts', 'strategy', 'input_size', 'profile_batch_size')


def create_timm_model(model_name: str, pretrained: bool = False, checkpoint_path: str = '',
                      **kwargs) -> nn.Module:
    """``timm.create_model`` that never downloads: weights come from a local file or not at all."""
    import localvision.models.backbones  # noqa: F401  (registers the CIFAR ResNets in timm)
    if pretrained:
        raise InputError('backbone.pretrained=True would download weights at run time; set '
                         "pretrained=False and checkpoint_path='/path/to/local/weights' instead")
    if not timm.is_model(model_name):
        raise InputError(f"backbone.model_name='{model_name}' is not a timm model; see timm.list_models()")
    return timm.create_model(model_name, pretrained=False, checkpoint_path=checkpoint_path or '', **kwargs)


class StagedTimm(nn.Module):
    """A timm model as blocks grouped into K contiguous, gradient-isolated modules.

    Args:
        model_name: timm model name (ResNet family, ConvNeXt, ViT/DeiT, ``cifar_resnet*``).
        split: ``dict(num_modules=K, strategy='balanced'|'equal')`` or ``dict(cuts=[...])``
            with block indices or ``(stage, block)`` pairs (stage 0 = stem); ``input_size``
            (C, H, W) for the dry run that measures block shapes and memory.
        pretrained / checkpoint_path: only local weights, never a download.
        **timm_kwargs: passed to ``timm.create_model`` (``num_classes``, ``output_stride``,
            ``img_size``, ``dynamic_img_size``, ``drop_path_rate``...).

    The timm model (``self.model``) owns every parameter, so ``state_dict`` keys are timm's.
    """

    def __init__(self, model_name: str, split: Optional[dict] = None, pretrained: bool = False,
                 checkpoint_path: str = '', **timm_kwargs) -> None:
        super().__init__()
        self.model_name = model_name
        self.model = create_timm_model(model_name, pretrained, checkpoint_path, **timm_kwargs)
        self.seq: BlockSequence = to_block_sequence(self.model)
        split = dict(split or {})
        unknown = set(split) - set(SPLIT_KEYS)
        if unknown:
            raise InputError(f'split has unknown keys {sorted(unknown)}; allowed: {list(SPLIT_KEYS)}')
        self.split_cfg = split
        self.input_size: Tuple[int, int, int] = tuple(split.get('input_size')
                                                       or self.model.pretrained_cfg.get('input_size', (3, 224, 224)))
        block_shapes(self.seq, self.input_size)
        self.cuts: List[int] = []
        self.block_costs: Optional[List[int]] = None

    # -- the split -------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.seq)

    @property
    def num_modules(self) -> int:
        return len(self.cuts) + 1

    def requested_num_modules(self) -> int:
        """K as the config asks for it (validated), before cuts are resolved."""
        split = self.split_cfg
        if split.get('cuts') is not None:
            k = len(split['cuts']) + 1
            if 'num_modules' in split and split['num_modules'] != k:
                raise InputError(f"split.num_modules={split['num_modules']} disagrees with "
                                 f"split.cuts (K = len(cuts) + 1 = {k}); set split.cuts=None to cut by num_modules")
            return k
        return check_num_modules(split.get('num_modules', 1), self.num_blocks)

    def resolve_split(self, exit_loss: Optional[Callable[[int, Tensor], Tensor]] = None,
                      tail_loss: Optional[Callable[[Tensor], Tensor]] = None,
                      extra_modules: Sequence[nn.Module] = ()) -> List[int]:
        """Set ``self.cuts`` from the config: explicit, equal, or balanced by measured memory.

        ``exit_loss(i, fmap)`` and ``tail_loss(x)`` let the balanced strategy count what the
        auxiliary objective at a cut and the task head of the last module keep for backward.
        """
        split = self.split_cfg
        k = self.requested_num_modules()
        if split.get('cuts') is not None:
            cuts = validate_cuts([self.seq.index_of(c) for c in split['cuts']], self.num_blocks)
        else:
            strategy = split.get('strategy', 'balanced')
            if strategy not in STRATEGIES:
                raise InputError(f"split.strategy='{strategy}' is unknown; allowed: {list(STRATEGIES)}")
            if k == 1:
                cuts = []
            elif strategy == 'equal':
                cuts = equal_cuts(self.num_blocks, k)
            else:
                blocks, exits, tail = profile_saved_bytes(
                    self.seq, self.input_size, split.get('profile_batch_size', 2), exit_loss, tail_loss,
                    extra_modules=extra_modules, device=next(self.model.parameters()).device)
                self.block_costs = blocks
                cuts = balanced_cuts(blocks, k, exits, tail)
        self.cuts = cuts
        return cuts

    def module_ranges(self) -> List[range]:
        return module_ranges(self.cuts, self.num_blocks)

    def module_parameters(self, k: int) -> List[nn.Parameter]:
        """Parameters of module k; the last module also owns everything outside the blocks
        (final norm, the timm head)."""
        params: List[nn.Parameter] = []
        for i in self.module_ranges()[k]:
            params.extend(self.seq.infos[i].parameters())
        if k == self.num_modules - 1:
            in_blocks = {id(p) for info in self.seq.infos for p in info.parameters()}
            params.extend(p for p in self.model.parameters() if id(p) not in in_blocks)
        return params

    def level_blocks(self, out_indices: Optional[Sequence[int]] = None,
                     out_blocks: Optional[Sequence[int]] = None) -> List[int]:
        """Flat block indices of a task model's feature levels: the blocks ``out_blocks``, or the
        last block of each stage in ``out_indices`` (default: every stage after the stem)."""
        seq = self.seq
        if out_blocks is not None:
            blocks = [int(b) for b in out_blocks]
            bad = [b for b in blocks if not 0 <= b < len(seq)]
            if bad:
                raise InputError(f'model.out_blocks={blocks} names blocks {bad} that {self.model_name} '
                                 f'does not have; allowed: 0..{len(seq) - 1}')
            return blocks
        last_of_stage: Dict[int, int] = {info.stage: info.index for info in seq.infos}
        stages = ([int(s) for s in out_indices] if out_indices is not None
                  else sorted(s for s in last_of_stage if s > 0))
        bad = [s for s in stages if s not in last_of_stage]
        if bad:
            raise InputError(f'model.out_indices={stages} names stages {bad} that {self.model_name} '
                             f'does not have; allowed: {sorted(last_of_stage)}')
        return [last_of_stage[s] for s in stages]

    def module_of_block(self, b: int) -> int:
        """The module that runs flat block ``b``."""
        for k, r in enumerate(self.module_ranges()):
            if b in r:
                return k
        raise ValueError(f'block {b} is not in any module of {self.model_name}')

    def out_channels(self, k: int) -> int:
        """Channels of the map module k hands on (and shows its auxiliary net)."""
        return self.seq.infos[self.module_ranges()[k][-1]].num_chs

    def describe(self) -> str:
        parts = []
        for k, r in enumerate(self.module_ranges()):
            a, b = self.seq.infos[r[0]], self.seq.infos[r[-1]]
            parts.append(f'M{k}: {a.name}..{b.name} ({len(r)} blocks, {b.num_chs} ch, /{b.reduction})')
        return f'{self.model_name} split into K={self.num_modules} at cuts {self.cuts}: ' + '; '.join(parts)

    # -- forward ---------------------------------------------------------------------------
    def forward_module(self, k: int, x: Tensor) -> Tensor:
        """Run module k on ``x`` (the image for k = 0, the previous module's output otherwise)."""
        r = self.module_ranges()[k]
        return run_blocks(self.seq, x, r[0], r[-1], apply_final_norm=(k == self.num_modules - 1))

    def to_map(self, x: Tensor, img_hw: Tuple[int, int]) -> Tensor:
        """A block output as an NCHW map (ViT tokens are reshaped onto the patch grid)."""
        return self.seq.to_map(x, img_hw)

    def forward(self, x: Tensor) -> Tensor:
        """All modules in a row: the plain backbone's features (``forward_features``)."""
        for k in range(self.num_modules):
            x = self.forward_module(k, x)
        return x
