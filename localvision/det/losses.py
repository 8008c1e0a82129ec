"""A focal loss that keeps little for backward on CPU (registered in mmdet's MODELS).

mmdet's ``FocalLoss`` uses mmcv's fused CUDA kernel on a GPU, which keeps only the logits and
the labels for backward. On any other device it falls back to ``py_sigmoid_focal_loss``, which
builds a one-hot target and keeps about seven temporaries of the size of the logits
(anchors x classes: ~31 MB each for RetinaNet with 80 classes at 512x512, batch 2) alive until the
backward. That fallback alone is a large share of RetinaNet's training memory on CPU, and it does
not shrink with local learning (it belongs to the last module).

:class:`LowMemFocalLoss` computes the same loss and gradients (checked against mmdet's in
``tests/det``) with a hand-written backward: the forward is evaluated in chunks and only the
logits, labels and weights are saved, as the CUDA kernel does. On CUDA it is mmdet's FocalLoss.
Exported configs name mmdet's ``FocalLoss`` again (same values), so stock mmdet loads them.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from mmdet.models.losses import FocalLoss
from mmdet.registry import MODELS

Tensor = torch.Tensor

_CHUNK_ELEMS = 1 << 18  # 1 MiB of float32 per temporary


class _SigmoidFocalLossSum(torch.autograd.Function):
    """``scale * sum(weight * focal(pred, onehot(labels)))``; saves only its inputs."""

    @staticmethod
    def forward(ctx, pred: Tensor, labels: Tensor, weight: Optional[Tensor], gamma: float, alpha: float,
                scale: float) -> Tensor:
        n, c = pred.shape
        step = max(1, _CHUNK_ELEMS // max(c, 1))
        total = pred.new_zeros((), dtype=torch.float32)
        cls = torch.arange(c, device=pred.device)
        with torch.no_grad():
            for s in range(0, n, step):
                x = pred[s:s + step].float()
                t = (labels[s:s + step, None] == cls).float()
                p = torch.sigmoid(x)
                pt = (1 - p) * t + p * (1 - t)
                loss = F.binary_cross_entropy_with_logits(x, t, reduction='none') * (
                    (alpha * t + (1 - alpha) * (1 - t)) * pt.pow(gamma))
                if weight is not None:
                    loss = loss * weight[s:s + step].float()
                total += loss.sum()
        ctx.save_for_backward(pred, labels, weight)
        ctx.gamma, ctx.alpha, ctx.scale = gamma, alpha, scale
        return (total * scale).to(pred.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        pred, labels, weight = ctx.saved_tensors
        gamma, alpha = ctx.gamma, ctx.alpha
        n, c = pred.shape
        step = max(1, _CHUNK_ELEMS // max(c, 1))
        grad = torch.empty_like(pred)
        cls = torch.arange(c, device=pred.device)
        g = grad_out.float() * ctx.scale
        for s in range(0, n, step):
            x = pred[s:s + step].float()
            t = (labels[s:s + step, None] == cls)
            p = torch.sigmoid(x)
            # d/dx of alpha (1-p)^g (-log p)          = alpha (1-p)^g (g p log p - (1-p))
            # d/dx of (1-alpha) p^g (-log(1-p))        = (1-alpha) p^g (p - g (1-p) log(1-p))
            pos = alpha * (1 - p).pow(gamma) * (gamma * p * F.logsigmoid(x) - (1 - p))
            neg = (1 - alpha) * p.pow(gamma) * (p - gamma * (1 - p) * F.logsigmoid(-x))
            d = torch.where(t, pos, neg)
            if weight is not None:
                d = d * weight[s:s + step].float()
            grad[s:s + step] = (d * g).to(pred.dtype)
        return grad, None, None, None, None, None


@MODELS.register_module()
class LowMemFocalLoss(FocalLoss):
    """mmdet's sigmoid ``FocalLoss`` (same arguments and values) keeping little for backward off
    CUDA; see the module doc. Falls back to mmdet's implementation for what it does not cover
    (one-hot targets, ``activated=True``, ``reduction='none'``, per-class weights, CUDA)."""

    def forward(self, pred: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None, reduction_override: Optional[str] = None) -> Tensor:
        reduction = reduction_override if reduction_override else self.reduction
        simple = (self.use_sigmoid and not self.activated and not pred.is_cuda and pred.dim() == 2
                  and target.dim() == 1 and reduction in ('mean', 'sum')
                  and (weight is None or weight.numel() == pred.shape[0]))
        if not simple or (reduction == 'sum' and avg_factor is not None):
            return super().forward(pred, target, weight, avg_factor, reduction_override)
        if reduction == 'sum':
            scale = 1.0
        elif avg_factor is None:
            scale = 1.0 / max(pred.numel(), 1)
        else:
            scale = 1.0 / (float(avg_factor) + torch.finfo(torch.float32).eps)
        w = weight.reshape(-1, 1) if weight is not None else None
        return self.loss_weight * _SigmoidFocalLossSum.apply(pred, target.long(), w, float(self.gamma),
                                                              float(self.alpha), scale)
