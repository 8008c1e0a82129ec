import pytest
import torch

from localvision.evaluation import Accuracy
from localvision.registry import METRICS
from localvision.structures import ClsDataSample


def _samples(scores, labels):
    out = []
    for s, y in zip(scores, labels):
        sample = ClsDataSample().set_gt_label(y)
        sample.pred_score = torch.tensor(s)
        out.append(sample.to_dict())
    return out


SCORES = [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.1, 0.4], [0.2, 0.3, 0.5]]
LABELS = [0, 2, 1, 2]  # top1 hits: 0, 3; top2 hits: 0, 1, 3


def test_top1_top2_in_percent():
    metric = Accuracy(topk=(1, 2))
    metric.process({}, _samples(SCORES[:2], LABELS[:2]))
    metric.process({}, _samples(SCORES[2:], LABELS[2:]))
    res = metric.evaluate(4)
    assert res == pytest.approx({'accuracy/top1': 50.0, 'accuracy/top2': 75.0})


def test_prefix_and_registry():
    metric = METRICS.build(dict(type='Accuracy', prefix='val'))
    metric.process({}, _samples(SCORES, LABELS))
    assert metric.evaluate(4) == pytest.approx({'val/accuracy/top1': 50.0})


def test_pred_label_only():
    metric = Accuracy()
    metric.process({}, [dict(gt_label=torch.tensor([1]), pred_label=torch.tensor([1])),
                        dict(gt_label=torch.tensor([0]), pred_label=torch.tensor([1]))])
    assert metric.evaluate(2) == pytest.approx({'accuracy/top1': 50.0})


def test_topk_larger_than_classes_errors():
    metric = Accuracy(topk=(1, 5))
    metric.process({}, _samples(SCORES, LABELS))
    with pytest.raises(ValueError, match=r'topk \[5\].*3'):
        metric.evaluate(4)
    with pytest.raises(ValueError):
        Accuracy(topk=(0,))
