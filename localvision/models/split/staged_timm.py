"""A timm backbone built from config and split into K gradient-isolated modules."""
from __future__ import annotations

from localvision.errors import InputError

from typing import Callable, Collection, Dict, FrozenSet, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn

from .block_sequence import BlockSequence, block_shapes, to_block_sequence
from .cuts import STRATEGIES, balanced_cuts, check_num_modules, equal_cuts, min_max_cuts, module_ranges, validate_cuts
from .profiling import SplitProfile, checkpointed, profile_saved_bytes
from localvision.registry import MODELS

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


@MODELS.register_module()
class StagedTimm(nn.Module):
    """A timm model as blocks grouped into K contiguous, gradient-isolated modules.

    The backbone of every localvision task model (``model.backbone=dict(type='StagedTimm',
    model_name=...)``): swapping the backbone is one line, any split keeps working.

    Args:
        model_name: timm model name (any model the block reader splits, ``cifar_resnet*``).
        split: ``dict(num_modules=K, strategy='balanced'|'equal')`` or ``dict(cuts=[...])``
            with block indices or ``(stage, block)`` pairs (stage 0 = stem); ``input_size``
            (C, H, W) for the dry run that measures block shapes and memory. Task models pass
            their ``model.split`` here.
        out_stages: backbone stages whose last block's output is a *level* (what necks and
            dense heads read, in this order); stage 0 is the stem, so a ResNet's
            ``layer1..layer4`` are ``(1, 2, 3, 4)`` (default: every stage after the stem).
            Not called ``out_indices`` on purpose: mmseg's / mmdet's ResNet count
            ``out_indices`` from layer1, timm's ``features_only`` from the stem.
        out_blocks: flat block indices giving the levels instead (e.g. ViT ``(3, 6, 9, 12)``).
        frozen_stages: mmdet's meaning: -1 none, 0 the stem, s the stem and stages 1..s
            (parameters frozen, those blocks kept in eval mode).
        norm_eval: keep every BatchNorm of the backbone in eval mode (frozen statistics).
        grad_checkpointing: in training, run every block under activation checkpointing (what
            timm's ``set_grad_checkpointing`` does): a module keeps only its blocks' inputs and
            recomputes one block's activations at a time in its backward. Same gradients and
            BatchNorm statistics, less memory, about one more forward of compute; the balanced
            split then balances that cost (:meth:`SplitProfile.module_cost`) and leaves the
            last blocks of a module plain where recomputing them would not lower the module's
            peak, only cost time (``self.plain``).
        channels_last: keep the 4-D weights of the backbone and of the local-learning nets
            (auxiliary nets, decoders, context projections) in channels-last memory format, as
            timm's ``--channels-last`` does: their convolutions run on and return channels-last
            maps (faster with oneDNN on CPU and with tensor cores on GPU). The task's heads and
            neck stay contiguous and get contiguous levels (mmcv's ops read NCHW memory). Same
            results up to rounding, same initial weights for a seed.
        pretrained / checkpoint_path: only local weights, never a download.
        **timm_kwargs: passed to ``timm.create_model`` (``num_classes``, ``output_stride``,
            ``img_size``, ``dynamic_img_size``, ``drop_path_rate``...).

    The timm model (``self.model``) owns every parameter, so ``state_dict`` keys are timm's.
    """

    def __init__(self, model_name: str, split: Optional[dict] = None, out_stages: Optional[Sequence[int]] = None,
                 out_blocks: Optional[Sequence[int]] = None, frozen_stages: int = -1, norm_eval: bool = False,
                 grad_checkpointing: bool = False, channels_last: bool = False, pretrained: bool = False,
                 checkpoint_path: str = '', **timm_kwargs) -> None:
        super().__init__()
        for key, why in (('out_indices', 'mmseg/mmdet ResNets count out_indices from layer1, timm from the stem; '
                          'here levels are out_stages=(1, 2, 3, 4) for layer1..layer4 (stage 0 = the stem) or '
                          'out_blocks=(...) (flat block indices)'),
                         ('features_only', 'the backbone always hands its levels (out_stages / out_blocks) to the '
                          'neck / heads; remove it')):
            if key in timm_kwargs:
                raise InputError(f'model.backbone.{key} is not used by StagedTimm: {why}')
        self.model_name = model_name
        self.timm_kwargs = dict(timm_kwargs)  # what timm.create_model got besides the name (for exports)
        self.model = create_timm_model(model_name, pretrained, checkpoint_path, **timm_kwargs)
        self.seq: BlockSequence = to_block_sequence(self.model)
        split = dict(split or {})
        unknown = set(split) - set(SPLIT_KEYS)
        if unknown:
            raise InputError(f'split has unknown keys {sorted(unknown)}; allowed: {list(SPLIT_KEYS)}')
        self.split_cfg = split
        self.input_size: Tuple[int, int, int] = tuple(split.get('input_size')
                                                       or self.model.pretrained_cfg.get('input_size', (3, 224, 224)))
        self.block_output_shapes = block_shapes(self.seq, self.input_size)
        self.cuts: List[int] = []
        self.block_costs: Optional[List[int]] = None
        self.split_profile: Optional[SplitProfile] = None
        self.grad_checkpointing = bool(grad_checkpointing)
        self.channels_last = bool(channels_last)
        # blocks run without checkpointing although it is on (the balanced split finds those whose
        # recomputation would not lower their module's peak; none otherwise)
        self.plain: FrozenSet[int] = frozenset()
        self.level_blocks: List[int] = self._level_blocks(out_stages, out_blocks)
        self.frozen_stages = int(frozen_stages)
        self.norm_eval = bool(norm_eval)
        self._freeze_stages()

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
            if k == 1 and not self.grad_checkpointing:
                cuts = []
            elif strategy == 'equal':
                cuts = equal_cuts(self.num_blocks, k)
            else:
                # the dry run draws from a fixed seed and leaves weights and random state as it found
                # them: the cuts do not depend on the run's seed, nor the model's initialisation
                # (objectives, context, built after) on the profiling
                prof = profile_saved_bytes(
                    self.seq, self.input_size, split.get('profile_batch_size', 2), exit_loss, tail_loss,
                    extra_modules=extra_modules, device=next(self.model.parameters()).device)
                self.split_profile, self.block_costs = prof, prof.saved
                if self.grad_checkpointing:
                    cuts = min_max_cuts(self.num_blocks, k, lambda i, j, last: prof.module_cost(i, j, last, True))
                    self.plain = self._plain_blocks(prof, cuts)
                else:
                    cuts = balanced_cuts(prof.saved, k, prof.exits, prof.tail)
        self.cuts = cuts
        return cuts

    def _plain_blocks(self, prof: SplitProfile, cuts: List[int]) -> FrozenSet[int]:
        """Blocks that run without checkpointing: the last blocks of each module whose
        recomputation would not lower the module's peak."""
        ranges = module_ranges(cuts, self.num_blocks)
        plain = set()
        for k, r in enumerate(ranges):
            j = r[-1]
            plain.update(range(j + 1 - prof.plain_blocks(r[0], j, k == len(ranges) - 1), j + 1))
        return frozenset(plain)

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

    def _level_blocks(self, out_stages: Optional[Sequence[int]], out_blocks: Optional[Sequence[int]]) -> List[int]:
        """Flat block indices of the levels: the blocks ``out_blocks``, or the last block of each
        stage in ``out_stages`` (default: every stage after the stem)."""
        seq = self.seq
        if out_blocks is not None:
            if out_stages is not None:
                raise InputError('model.backbone sets both out_stages and out_blocks; give one of them')
            blocks = [int(b) for b in out_blocks]
            bad = [b for b in blocks if not 0 <= b < len(seq)]
            if bad:
                raise InputError(f'model.backbone.out_blocks={blocks} names blocks {bad} that {self.model_name} '
                                 f'does not have; allowed: 0..{len(seq) - 1}')
            return blocks
        last_of_stage: Dict[int, int] = {info.stage: info.index for info in seq.infos}
        stages = ([int(s) for s in out_stages] if out_stages is not None
                  else sorted(s for s in last_of_stage if s > 0))
        bad = [s for s in stages if s not in last_of_stage]
        if bad:
            raise InputError(f'model.backbone.out_stages={stages} names stages {bad} that {self.model_name} '
                             f'does not have; allowed: {sorted(last_of_stage)} (0 = the stem)')
        return [last_of_stage[s] for s in stages]

    @property
    def num_levels(self) -> int:
        return len(self.level_blocks)

    def level_channels(self) -> List[int]:
        """Channels of each level (what a neck's / head's ``in_channels`` must be)."""
        return [self.seq.infos[b].num_chs for b in self.level_blocks]

    def level_shapes(self, batch_size: int) -> List[Tuple[int, ...]]:
        """NCHW shape of each level at ``input_size``."""
        return [(batch_size, *self.block_output_shapes[b][1:]) for b in self.level_blocks]

    def level_modules(self) -> List[int]:
        """The module that produces each level."""
        return [self.module_of_block(b) for b in self.level_blocks]

    def module_levels(self, k: int) -> Dict[int, List[int]]:
        """Module k's blocks that produce levels: ``{block: [level indices]}``."""
        r = self.module_ranges()[k]
        out: Dict[int, List[int]] = {}
        for j, b in enumerate(self.level_blocks):
            if b in r:
                out.setdefault(b, []).append(j)
        return out

    def module_reduction(self, k: int) -> int:
        """Downsampling of module k's output w.r.t. the image."""
        return self.seq.infos[self.module_ranges()[k][-1]].reduction

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
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Turn activation checkpointing of the blocks on or off (timm's method name)."""
        self.grad_checkpointing = bool(enable)

    def run_block(self, i: int, x: Tensor) -> Tensor:
        """Block ``i`` on ``x``; under activation checkpointing when it is on and training."""
        if self.grad_checkpointing and self.training and i not in self.plain:
            return checkpointed(self.seq.blocks[i], x, modules=self.seq.infos[i].modules)
        return self.seq.blocks[i](x)

    def forward_module(self, k: int, x: Tensor) -> Tensor:
        """Run module k on ``x`` (the image for k = 0, the previous module's output otherwise)."""
        return self.forward_module_levels(k, x, None, wanted=())[0]

    def forward_module_levels(self, k: int, x: Tensor, img_hw: Optional[Tuple[int, int]],
                              wanted: Optional[Collection[int]] = None) -> Tuple[Tensor, Dict[int, Tensor]]:
        """Module k on ``x``; also the levels (all, or those in ``wanted``) it produces on the way,
        as NCHW maps ``{level: map}``."""
        r = self.module_ranges()[k]
        at = {b: [j for j in js if wanted is None or j in wanted] for b, js in self.module_levels(k).items()}
        last = len(self.seq) - 1
        levels: Dict[int, Tensor] = {}
        for i in r:
            x = self.run_block(i, x)
            if i == last:
                x = self.seq.final_norm(x)
            for j in at.get(i, ()):
                levels[j] = self.to_map(x, img_hw)
                if self.channels_last:  # the task's heads get plain NCHW maps (mmcv's CPU ops read
                    levels[j] = levels[j].contiguous()  # raw NCHW memory, e.g. RoIAlign)
        return x, levels

    def to_map(self, x: Tensor, img_hw: Tuple[int, int]) -> Tensor:
        """A block output as an NCHW map (ViT tokens are reshaped onto the patch grid)."""
        return self.seq.to_map(x, img_hw)

    def forward(self, x: Tensor) -> Tensor:
        """All modules in a row: the plain backbone's features (``forward_features``)."""
        for k in range(self.num_modules):
            x = self.forward_module(k, x)
        return x

    # -- frozen stages / norm_eval (mmdet's meaning) -----------------------------------------
    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        for info in self.seq.infos:
            if info.stage <= self.frozen_stages:
                for m in info.modules:
                    m.eval()
                for p in info.parameters():
                    p.requires_grad_(False)

    def train(self, mode: bool = True) -> 'StagedTimm':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self
