"""Classification metrics (registered in ``localvision.registry.METRICS``)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import torch
from mmengine.evaluator import BaseMetric

from ..registry import METRICS


def _as_tensor(value) -> torch.Tensor:
    return value.detach().cpu() if isinstance(value, torch.Tensor) else torch.as_tensor(value)


@METRICS.register_module()
class Accuracy(BaseMetric):
    """Top-k accuracy in percent.

    ``process`` reads, from each output sample (a dict made by mmengine from a
    ``ClsDataSample``), ``gt_label`` and ``pred_score`` (``(num_classes,)``); a sample with only
    ``pred_label`` is accepted for top-1. ``compute_metrics`` returns
    ``{'accuracy/top1': ..., 'accuracy/top5': ...}`` (one key per ``k``); a non-empty ``prefix``
    is put in front by mmengine (``'val'`` -> ``'val/accuracy/top1'``).

    Args:
        topk: the k's to report.
        prefix: optional prefix of the metric names.
        collect_device: ``'cpu'`` or ``'gpu'``, where results are gathered in distributed runs.
    """

    default_prefix: Optional[str] = ''

    def __init__(self, topk: Union[int, Sequence[int]] = (1,), prefix: Optional[str] = '',
                 collect_device: str = 'cpu') -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.topk = (topk,) if isinstance(topk, int) else tuple(topk)
        if not self.topk or any(int(k) != k or k < 1 for k in self.topk):
            raise ValueError(f'topk must be positive integers, got {topk!r}')

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Keep ``gt_label`` and ``pred_score`` (or ``pred_label``) of every sample, on CPU."""
        for sample in data_samples:
            if 'gt_label' not in sample:
                raise KeyError('Accuracy needs `gt_label` in every data sample (the dataset has no labels?)')
            result = {'gt_label': _as_tensor(sample['gt_label']).reshape(-1)[:1].long()}
            if 'pred_score' in sample:
                result['pred_score'] = _as_tensor(sample['pred_score']).reshape(-1).float()
            elif 'pred_label' in sample:
                result['pred_label'] = _as_tensor(sample['pred_label']).reshape(-1)[:1].long()
            else:
                raise KeyError('Accuracy needs `pred_score` or `pred_label` in every data sample')
            self.results.append(result)

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Top-k accuracies in percent, keyed ``accuracy/top{k}``."""
        if not results:
            raise ValueError('Accuracy got no samples to evaluate (empty validation / test set?)')
        target = torch.cat([r['gt_label'] for r in results])
        if all('pred_score' in r for r in results):
            scores = torch.stack([r['pred_score'] for r in results])
            num_classes = scores.shape[1]
            too_big = [k for k in self.topk if k > num_classes]
            if too_big:
                raise ValueError(f'Accuracy: topk {too_big} larger than the number of classes ({num_classes})')
            ranked = scores.topk(max(self.topk), dim=1).indices
            hits = ranked == target[:, None]
            return {f'accuracy/top{k}': hits[:, :k].any(dim=1).float().mean().item() * 100 for k in self.topk}
        if self.topk != (1,):
            raise ValueError(f'Accuracy with topk={self.topk} needs `pred_score`; the samples only have `pred_label`')
        pred = torch.cat([r['pred_label'] if 'pred_label' in r else r['pred_score'].argmax().reshape(1)
                          for r in results])
        return {'accuracy/top1': (pred == target).float().mean().item() * 100}
