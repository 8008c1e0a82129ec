"""The lowest layer of local learning: what one iteration's objectives see (:class:`LocalContext`)
and the contract of a model trained unit by unit (:class:`LocalUnits`).

Words used throughout localvision:

- **module**: one of the K gradient-isolated pieces of the backbone (contiguous blocks);
- **unit**: what one local loss trains: module k, its local objective (k < K-1) or the task
  heads (k = K-1, plus heads reading only levels of module k), and the context projections
  that feed module k. Units are what the executors and the data-parallel wrapper see;
- **stage** (module-parallel training only): the process that trains one unit. A backbone's own
  stages (ResNet ``layer1..4``) are called *backbone stages* (``(stage, block)`` cuts).

This file imports nothing of localvision, so the execution layer (``localvision.engine``) can
depend on it without depending on the models.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Protocol, Tuple, runtime_checkable

import torch

Tensor = torch.Tensor


@dataclass
class LocalContext:
    """The batch as the local objectives of one iteration see it.

    Attributes:
        inputs: the preprocessed (normalised) batch fed to module 0, (B, C, H, W).
        targets: the task targets, as the task model reads them from its data samples: class
            indices (B,) for classification, label maps (B, H, W) for segmentation, a list of
            ``(boxes, labels)`` for detection.
        data_samples: the batch's data samples, for objectives and heads that need more.
        img_hw: the input's spatial size.
        extras: per-batch state shared by the units of one iteration: the detached levels later
            units read, the context supply's remembered module inputs, caches (``image01``).
        pixel_mean / pixel_std: what the data preprocessor normalised with (``(C, 1, 1)``, pixel
            units, channel order as fed to the model); ``None`` when it did not normalise.
        pixel_range: the pixel value of a white image before normalisation (255 for 8-bit).
    """

    inputs: Tensor
    targets: Any = None
    data_samples: Optional[list] = None
    img_hw: Tuple[int, int] = (0, 0)
    extras: Dict[str, Any] = field(default_factory=dict)
    pixel_mean: Optional[Tensor] = None
    pixel_std: Optional[Tensor] = None
    pixel_range: float = 255.0

    def image01(self) -> Tensor:
        """The un-normalised input image in [0, 1] (detached, computed once per batch).

        ``(inputs * std + mean) / pixel_range``, clamped to [0, 1]: the target of InfoPro's
        reconstruction decoder. Channel order is the one the model sees (after any
        ``bgr_to_rgb`` of the preprocessor, which also orders ``mean`` / ``std`` that way).
        """
        img = self.extras.get('image01')
        if img is None:
            with torch.no_grad():
                img = self.inputs.detach().float()
                if self.pixel_std is not None:
                    img = img * self.pixel_std.to(img)
                if self.pixel_mean is not None:
                    img = img + self.pixel_mean.to(img)
                img = (img / self.pixel_range).clamp_(0.0, 1.0)
            self.extras['image01'] = img
        return img


@runtime_checkable
class LocalUnits(Protocol):
    """A model trained unit by unit: what executors, the data-parallel wrapper and the
    module-parallel stages rely on (and nothing more)."""

    @property
    def num_units(self) -> int: ...

    def make_context(self, inputs: Tensor, data_samples: Optional[list]) -> LocalContext: ...

    def forward_unit(self, k: int, h: Tensor, ctx: LocalContext) -> Tuple[Tensor, Dict[str, Tensor]]: ...

    def unit_parameters(self, k: int) -> List[torch.nn.Parameter]: ...

    def parse_losses(self, losses: Dict[str, Tensor]) -> Tuple[Tensor, Dict[str, Tensor]]: ...


def is_local_model(model: Any) -> bool:
    """Whether ``model`` (an instance or a class) follows the :class:`LocalUnits` contract."""
    names = ('num_units', 'make_context', 'forward_unit', 'unit_parameters', 'parse_losses')
    return all(hasattr(model, n) for n in names)
