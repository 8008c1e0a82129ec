"""Supervised contrastive loss (Khosla et al., NeurIPS 2020), as InfoPro's "contrast" task term."""
from __future__ import annotations

import torch

Tensor = torch.Tensor


def supervised_contrastive_loss(features: Tensor, labels: Tensor, temperature: float = 0.07) -> Tensor:
    """SupCon loss of L2-normalised ``features`` (B, D) with class ``labels`` (B,).

    For every anchor i with at least one positive (another sample of its class):
    ``-mean_{p in P(i)} log( exp(z_i.z_p / t) / sum_{a != i} exp(z_i.z_a / t) )``, averaged
    over those anchors. A batch with no positive pair gives 0 (still connected to the graph).
    """
    if features.dim() != 2 or labels.dim() != 1 or features.shape[0] != labels.shape[0]:
        raise ValueError(f'features must be (B, D) and labels (B,), got {tuple(features.shape)} '
                         f'and {tuple(labels.shape)}')
    n = features.shape[0]
    features = features.float()
    sim = features @ features.t() / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=features.device)
    sim = sim.masked_fill(self_mask, float('-inf'))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~self_mask
    num_pos = pos.sum(dim=1)
    has_pos = num_pos > 0
    if not bool(has_pos.any()):
        return features.sum() * 0.0
    pos_log_prob = log_prob.masked_fill(~pos, 0.0).sum(dim=1)
    return -(pos_log_prob[has_pos] / num_pos[has_pos]).mean()
