"""Linear estimators of what a feature map keeps (the papers' information analysis, linearised):
a softmax-linear probe of the label and a ridge reconstruction of the image, each fit on training
features and measured on held-out ones."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _standardise(x_tr: Tensor, x_va: Tensor) -> Tuple[Tensor, Tensor]:
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
    return (x_tr - mean) / std, (x_va - mean) / std


def fit_linear_probe(x_tr: Tensor, y_tr: Tensor, x_va: Tensor, num_classes: int, weight_decay: float = 1e-3,
                     steps: int = 200) -> Tuple[Tensor, Tensor]:
    """A softmax-linear classifier on standardised features (L-BFGS, L2 penalty ``weight_decay`` on
    the weights), fit on ``(x_tr, y_tr)``; returns its predicted classes for ``x_tr`` and ``x_va``."""
    x_tr, x_va = _standardise(x_tr.float(), x_va.float())
    w = torch.zeros(x_tr.shape[1], num_classes, requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn='strong_wolfe')

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x_tr @ w + b, y_tr) + weight_decay * w.pow(2).sum()
        loss.backward()
        return loss
    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return (x_tr @ w + b).argmax(1), (x_va @ w + b).argmax(1)


def linear_probe_top1(x_tr: Tensor, y_tr: Tensor, x_va: Tensor, y_va: Tensor, num_classes: int,
                      weight_decay: float = 1e-3, steps: int = 200) -> float:
    """Top-1 (%) on ``(x_va, y_va)`` of :func:`fit_linear_probe` fit on ``(x_tr, y_tr)``."""
    _, pred = fit_linear_probe(x_tr, y_tr, x_va, num_classes, weight_decay, steps)
    return float((pred == y_va).float().mean() * 100)


def linear_recon_error(x_tr: Tensor, target_tr: Tensor, x_va: Tensor, target_va: Tensor, ridge: float = 1e-2) -> float:
    """Mean squared error on ``(x_va, target_va)`` of a ridge regression from standardised features
    to the (flattened) targets, fit on the training pair."""
    x_tr, x_va = _standardise(x_tr.double(), x_va.double())
    a = torch.cat([x_tr, torch.ones(len(x_tr), 1, dtype=x_tr.dtype)], 1)
    w = torch.linalg.solve(a.T @ a + ridge * len(a) * torch.eye(a.shape[1], dtype=a.dtype), a.T @ target_tr.double())
    a_va = torch.cat([x_va, torch.ones(len(x_va), 1, dtype=x_va.dtype)], 1)
    return float((a_va @ w - target_va.double()).pow(2).mean())
