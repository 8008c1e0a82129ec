"""InfoPro (Wang et al., ICLR 2021): keep information about the input while learning the task.

The local loss of module k is ``lambda_recon * L_recon + lambda_task * L_task``:

- ``L_recon``: a decoder upsamples the module output to the image size and predicts the
  un-normalised image in [0, 1] (sigmoid + binary cross-entropy against ``ctx.image01()``);
- ``L_task``: cross-entropy of an auxiliary classifier (``loss_mode='softmax'``) or the
  supervised contrastive loss of an L2-normalised projection (``loss_mode='contrast'``).

The weights are given for the first and the last local module and interpolated linearly, or
per module (see :func:`~localvision.models.objectives.base.scheduled_value`). A term whose
weight is 0 for this module is not built and costs nothing.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from localvision.errors import InputError
from localvision.models.split.profiling import checkpointed
from localvision.registry import OBJECTIVES

from .base import LocalContext, LocalObjective, build_aux_head, scheduled_value
from .contrastive import supervised_contrastive_loss
from .decoders import StagedDecoder

Tensor = torch.Tensor
Weight = Union[float, Sequence[float]]

LOSS_MODES = ('softmax', 'contrast')


class InfoProBase(LocalObjective):
    """What every InfoPro objective (classification, segmentation, detection) shares: the weights
    ``lambda_recon`` / ``lambda_task`` scheduled over the local modules, a reconstruction decoder
    built only when its weight is not 0, a task head built only when its weight is not 0, and the
    reconstruction term (sigmoid + BCE against the un-normalised image).

    Args:
        lambda_recon / lambda_task: a number, ``(first, last)`` local module (interpolated with
            ``ratio = k / (K-2)``), or a list of K-1 numbers (see ``scheduled_value``).
        head / decoder: configs of the task head and the decoder (``in_channels`` and the outputs
            are filled in: ``head_outputs`` / ``image_channels``, plus ``decoder_fill``).
        grad_checkpointing: run the decoder under activation checkpointing in training, stage by
            stage for a :class:`StagedDecoder` (it keeps only the stages' outputs and recomputes
            its full-resolution maps one stage at a time in backward), as one call otherwise.
            Same gradients; what ``model.backbone.grad_checkpointing`` does for the blocks.
    """

    def __init__(self, in_channels: int, num_classes: int, lambda_recon: Weight, lambda_task: Weight, head: dict,
                 decoder: dict, image_channels: int = 3, head_outputs: Optional[int] = None,
                 decoder_fill: Optional[dict] = None, grad_checkpointing: bool = False, **kwargs) -> None:
        super().__init__(in_channels, num_classes, **kwargs)
        self.grad_checkpointing = bool(grad_checkpointing)
        k, num = self.module_index, self.num_modules
        self.lambda_recon = scheduled_value(lambda_recon, k, num, 'model.local_objective.lambda_recon')
        self.lambda_task = scheduled_value(lambda_task, k, num, 'model.local_objective.lambda_task')
        if self.lambda_recon == 0 and self.lambda_task == 0:
            raise InputError(f'{type(self).__name__}: local module {k} of K={num} gets lambda_recon = lambda_task = 0, '
                             'so nothing would train it; check model.local_objective.lambda_recon / lambda_task')
        self.decoder = None
        if self.lambda_recon != 0:
            self.decoder = build_aux_head(dict(decoder), 'model.local_objective.decoder', in_channels=in_channels,
                                          out_channels=image_channels, **(decoder_fill or {}))
            if isinstance(self.decoder, StagedDecoder):
                self.decoder.grad_checkpointing = self.grad_checkpointing
        self.head = None
        if self.lambda_task != 0:
            self.head = build_aux_head(dict(head), 'model.local_objective.head', in_channels=in_channels,
                                       num_classes=num_classes if head_outputs is None else head_outputs)

    def extra_repr(self) -> str:
        return f'lambda_recon={self.lambda_recon:g}, lambda_task={self.lambda_task:g}'

    def recon_loss(self, feat: Tensor, image: Tensor) -> Tensor:
        """``lambda_recon * BCE(decoder(feat), image)``; ``image`` in [0, 1] at the target size."""
        size = tuple(image.shape[-2:])
        if self.grad_checkpointing and self.training and not isinstance(self.decoder, StagedDecoder):
            logits = checkpointed(self.decoder, feat, size, modules=[self.decoder])
        else:
            logits = self.decoder(feat, size)
        if logits.shape != image.shape:
            raise InputError(f'{type(self).__name__} decoder predicts {tuple(logits.shape)} but the image is '
                             f'{tuple(image.shape)}; set local_objective.image_channels')
        return self.lambda_recon * F.binary_cross_entropy_with_logits(logits.float(), image.float())


@OBJECTIVES.register_module()
class InfoPro(InfoProBase):
    """InfoPro's local objective: reconstruction plus a task term.

    Args:
        loss_mode: ``'softmax'`` (cross-entropy) or ``'contrast'`` (supervised contrastive).
        lambda_recon / lambda_task: weight of each term: a number, ``(first, last)`` local
            module (interpolated with ``ratio = k / (K-2)``), or a list of K-1 numbers.
        head: auxiliary net of the task term (default ``ConvFCHead``, InfoPro's "1c2f");
            its ``num_classes`` is the number of classes (softmax) or ``proj_dim`` (contrast).
        decoder: reconstruction decoder (default ``ReconDecoder``).
        width_mult: widens the default head and decoder.
        proj_dim: dimension of the contrastive projection (128).
        temperature: of the contrastive loss (0.07).
        image_channels: channels of the reconstructed image.
    """

    def __init__(self, in_channels: int, num_classes: int, loss_mode: str = 'softmax', lambda_recon: Weight = 1.0,
                 lambda_task: Weight = 1.0, head: Optional[dict] = None, decoder: Optional[dict] = None,
                 width_mult: float = 1.0, proj_dim: int = 128, temperature: float = 0.07, image_channels: int = 3,
                 **kwargs) -> None:
        if loss_mode not in LOSS_MODES:
            raise InputError(f'model.local_objective.loss_mode={loss_mode!r} is unknown; allowed: {list(LOSS_MODES)}')
        if temperature <= 0:
            raise InputError(f'model.local_objective.temperature={temperature} must be > 0')
        super().__init__(in_channels, num_classes, lambda_recon, lambda_task,
                         head=head or dict(type='ConvFCHead', width_mult=width_mult),
                         decoder=decoder or dict(type='ReconDecoder', width_mult=width_mult),
                         image_channels=image_channels, head_outputs=None if loss_mode == 'softmax' else proj_dim,
                         **kwargs)
        self.loss_mode = loss_mode
        self.temperature = float(temperature)

    def extra_repr(self) -> str:
        return f'loss_mode={self.loss_mode!r}, ' + super().extra_repr()

    def loss(self, feat: Tensor, ctx: LocalContext) -> Dict[str, Tensor]:
        losses: Dict[str, Tensor] = {}
        if self.decoder is not None:
            losses['loss_recon'] = self.recon_loss(feat, ctx.image01())
        if self.head is not None:
            out = self.head(feat)
            if self.loss_mode == 'softmax':
                losses['loss_cls'] = self.lambda_task * F.cross_entropy(out, ctx.targets)
            else:
                z = F.normalize(out.float(), dim=1)
                labels = ctx.targets if ctx.targets.dim() == 1 else ctx.targets.argmax(1)  # Mixup: main class
                losses['loss_contrast'] = self.lambda_task * supervised_contrastive_loss(z, labels, self.temperature)
        return losses
