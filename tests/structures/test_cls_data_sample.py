import numpy as np
import pytest
import torch

from localvision.structures import ClsDataSample


def test_labels_are_long_tensors_of_shape_1():
    for value in (3, np.int64(3), torch.tensor(3), torch.tensor([3]), [3], np.array([3])):
        sample = ClsDataSample().set_gt_label(value)
        assert sample.gt_label.dtype == torch.long and sample.gt_label.shape == (1,) and sample.gt_label.item() == 3
    sample = ClsDataSample()
    sample.pred_label = 2
    assert sample.pred_label.tolist() == [2]
    with pytest.raises(ValueError):
        sample.gt_label = [1, 2]
    with pytest.raises(TypeError):
        sample.gt_label = 1.5


def test_pred_score_and_to_dict():
    sample = ClsDataSample(metainfo=dict(img_shape=(32, 32))).set_gt_label(1)
    sample.pred_score = np.array([0.1, 0.9])
    assert sample.pred_score.dtype == torch.float32
    with pytest.raises(ValueError):
        sample.pred_score = torch.zeros(2, 2)
    as_dict = sample.to_dict()
    assert set(as_dict) == {'img_shape', 'gt_label', 'pred_score'}
    moved = sample.to('cpu')
    assert isinstance(moved, ClsDataSample) and moved.gt_label.tolist() == [1]
    del sample.gt_label
    assert 'gt_label' not in sample
