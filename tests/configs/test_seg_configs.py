"""Every segmentation config loads with mmseg's bases and builds (small overrides keep it fast)."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'seg', '*.py')))


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.basename(p) for p in CONFIGS])
def test_seg_config_builds(path):
    import localvision.seg  # noqa: F401
    from mmseg.registry import MODELS
    cfg = Config.fromfile(path)
    assert cfg.model.type == 'LocalEncoderDecoder'
    assert cfg.custom_imports.imports == ['localvision.seg']
    k = cfg.model.split.num_modules
    m = cfg.model
    if 'demo' not in path:  # the real configs: shrink the network, keep the structure
        size = 64
        m.split.input_size = (3, size, size)
        m.data_preprocessor.size = (size, size)
        for head in ('decode_head', 'auxiliary_head'):
            m[head].norm_cfg = dict(type='BN', requires_grad=True)
        if m.backbone.model_name.startswith('vit'):
            m.backbone.update(model_name='vit_tiny_patch16_224', img_size=size)
            m.neck.update(in_channels=[192] * 4, out_channels=192)
            m.decode_head.in_channels = [192] * 4
            m.auxiliary_head.in_channels = 192
        else:
            m.backbone.model_name = 'resnet18d'
    init_default_scope('mmseg')
    model = MODELS.build(m)
    assert model.num_units == k
    assert len(model.objectives) == k - 1
    if m.get('context'):
        assert model.context is not None
