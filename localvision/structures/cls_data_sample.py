"""``ClsDataSample``: the per-image record of image classification.

It carries the ground truth (``gt_label``) from the dataset pipeline to the model, and the
prediction (``pred_score``, ``pred_label``) from the model to the metric. Labels are stored as
``LongTensor`` of shape ``(1,)``, scores as a ``FloatTensor`` of shape ``(num_classes,)``.
Image meta information (``img_path``, ``ori_shape``, ``img_shape`` ...) lives in the metainfo.

When mmengine's evaluator turns a sample into a dict (``to_dict()``), the keys are the plain
names: ``gt_label``, ``pred_score``, ``pred_label`` plus the metainfo keys.
"""
from __future__ import annotations

from numbers import Integral
from typing import Sequence, Union

import numpy as np
import torch
from mmengine.structures import BaseDataElement

LabelLike = Union[int, np.integer, Sequence[int], np.ndarray, torch.Tensor]


def _to_label_tensor(value: LabelLike) -> torch.Tensor:
    """Turn an int / 0-d or 1-element array / tensor into a ``LongTensor`` of shape ``(1,)``."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
    elif isinstance(value, (Integral, np.integer)):
        tensor = torch.tensor([int(value)])
    elif isinstance(value, (np.ndarray, Sequence)):
        tensor = torch.as_tensor(np.asarray(value))
    else:
        raise TypeError(f'a label must be an int, a sequence, an ndarray or a Tensor, got {type(value).__name__}')
    if tensor.numel() != 1:
        raise ValueError(f'a single-label sample needs exactly one label, got shape {tuple(tensor.shape)}')
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f'a label must be an integer, got dtype {tensor.dtype}')
    return tensor.reshape(1).long()


class ClsDataSample(BaseDataElement):
    """Ground truth and prediction of one image for classification.

    Example:
        >>> sample = ClsDataSample(metainfo=dict(img_shape=(32, 32))).set_gt_label(3)
        >>> sample.gt_label
        tensor([3])
    """

    # --- ground truth -------------------------------------------------------------------------
    @property
    def gt_label(self) -> torch.Tensor:
        """Ground-truth class index, ``LongTensor`` of shape ``(1,)``."""
        return self._gt_label

    @gt_label.setter
    def gt_label(self, value: LabelLike) -> None:
        self.set_field(_to_label_tensor(value), '_gt_label', dtype=torch.Tensor)

    @gt_label.deleter
    def gt_label(self) -> None:
        del self._gt_label

    def set_gt_label(self, value: LabelLike) -> 'ClsDataSample':
        """Set ``gt_label`` from an int or a one-element array / tensor; returns ``self``."""
        self.gt_label = value
        return self

    # --- prediction ---------------------------------------------------------------------------
    @property
    def pred_score(self) -> torch.Tensor:
        """Predicted class scores (probabilities or logits), ``FloatTensor`` ``(num_classes,)``."""
        return self._pred_score

    @pred_score.setter
    def pred_score(self, value: Union[np.ndarray, torch.Tensor]) -> None:
        score = torch.as_tensor(value)
        if score.ndim != 1:
            raise ValueError(f'pred_score must have shape (num_classes,), got {tuple(score.shape)}')
        if not (isinstance(value, torch.Tensor) and score.is_floating_point()):
            score = score.float()  # numpy / lists / integer tensors -> float32; float tensors keep their dtype
        self.set_field(score, '_pred_score', dtype=torch.Tensor)

    @pred_score.deleter
    def pred_score(self) -> None:
        del self._pred_score

    @property
    def pred_label(self) -> torch.Tensor:
        """Predicted class index, ``LongTensor`` of shape ``(1,)``."""
        return self._pred_label

    @pred_label.setter
    def pred_label(self, value: LabelLike) -> None:
        self.set_field(_to_label_tensor(value), '_pred_label', dtype=torch.Tensor)

    @pred_label.deleter
    def pred_label(self) -> None:
        del self._pred_label
