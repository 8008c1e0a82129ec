"""Every detection config reads, inherits mmdet's own bases and turns local learning on as named."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs/det/*.py')))


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.basename(p) for p in CONFIGS])
def test_config_reads(path):
    cfg = Config.fromfile(path)
    name = osp.basename(path)
    m = cfg.model
    assert cfg.default_scope == 'mmdet' and 'localvision.det' in cfg.custom_imports['imports']
    two_stage = name.startswith(('faster_rcnn', 'mask_rcnn'))
    assert m.type == ('LocalTwoStageDetector' if two_stage else 'LocalSingleStageDetector')
    if name.startswith('mask_rcnn'):  # Mask R-CNN: mmdet's base, a mask head, masks loaded and evaluated
        assert m.roi_head.mask_head.type == 'FCNMaskHead' and m.data_preprocessor.pad_mask
        assert any(t.type == 'LoadAnnotations' and t.with_mask for t in cfg.train_dataloader.dataset.pipeline)
        assert 'segm' in cfg.val_evaluator.metric
        if '_e2e' not in name and 'greedy' not in name:
            assert m.local_objective.mask_weight > 0
    assert m.backbone.pretrained is False and m.backbone.frozen_stages == -1 and m.backbone.norm_eval is False
    k = m.split.num_modules
    if '_e2e' in name:
        assert k == 1 and m.local_objective is None
    else:
        assert k == int(name.split('_k')[1][0])
        want = 'DetGreedy' if 'greedy' in name else 'MAN' if '_man_' in name else 'InfoProDet'
        assert m.local_objective.type == want
    if 'vit' in name:
        assert m.neck.type == 'SimplePyramid' and m.backbone.out_blocks == (12,)
    else:
        assert m.neck.type == 'FPN'
    if 'demo' in name:
        assert cfg.train_dataloader.dataset.type == ('ShapesInstDataset' if two_stage else 'ShapesDetDataset')
        assert cfg.val_evaluator.type == 'CocoMetric'
