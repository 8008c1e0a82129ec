"""Export of local segmentors on timm backbones of several families to stock mmseg's
``TIMMBackbone(features_only=True)``: the extractor timm builds for the family (module names kept,
containers flattened, or the model run through ``forward_intermediates``) is found and checked at
export; the exported checkpoint loads strictly into stock mmseg and predicts what the local model
predicts; a level no extractor gives is refused in one line."""
import copy
import os.path as osp
import sys

import pytest
import torch

from localvision.errors import InputError
from localvision.seg.export import export_state_dict, stock_model_cfg
from mmseg.registry import MODELS

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from test_local_encoder_decoder import SIZE, build, tiny_cfg  # noqa: E402
from test_seg_export_vit import assert_stock_mmseg_predicts_the_same  # noqa: E402

# (model, timm kwargs, the extractor timm builds for it)
FAST = [('regnetx_002', {}, 'module names kept')]
SLOW = [
    ('convnext_atto', {}, 'stem and stages flattened (stem_0, stages_0)'),
    ('poolformer_s12', {}, 'MetaFormer: stages flattened'),
    ('cspresnet50', {}, 'CSP: stem flattened'),
    ('pvt_v2_b0', {}, 'hierarchical transformer, NCHW stages'),
]
SAMPLE = [pytest.param(*c[:2], id=c[0]) for c in FAST] + \
    [pytest.param(*c[:2], id=c[0], marks=pytest.mark.slow) for c in SLOW]


def local_uper(name: str, kwargs: dict):
    cfg = tiny_cfg(num_modules=2, decode='uper')
    cfg['split']['strategy'] = 'equal'
    cfg['backbone'] = dict(model_name=name, pretrained=False, **kwargs)
    model = build(cfg)
    cfg['decode_head']['in_channels'] = list(model.decode_head.in_channels)
    return cfg, model.eval()


@pytest.mark.parametrize('name,kwargs', SAMPLE)
def test_the_export_loads_strictly_into_stock_timm_backbone_and_predicts_the_same(name, kwargs):
    cfg, local = local_uper(name, kwargs)
    stock_cfg = stock_model_cfg(cfg, local)
    bb = stock_cfg['backbone']
    assert bb['type'] == 'TIMMBackbone' and bb['features_only'] and len(bb['out_indices']) == 4
    stock = MODELS.build(copy.deepcopy(stock_cfg)).eval()
    stock.load_state_dict(export_state_dict(local), strict=True)
    x = torch.randn(2, 3, SIZE, SIZE)
    metas = [dict(img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE), pad_shape=(SIZE, SIZE))] * 2
    with torch.no_grad():
        torch.testing.assert_close(stock.encode_decode(x, metas), local.encode_decode(x, metas),
                                   rtol=1e-4, atol=1e-5)


def test_a_level_no_timm_extractor_gives_is_refused_in_one_line():
    """Swin's last level includes the final norm, which timm's extractors leave out."""
    cfg, local = local_uper('swin_tiny_patch4_window7_224', dict(img_size=SIZE, window_size=4))
    with pytest.raises(InputError, match=r"^swin_tiny_patch4_window7_224 cannot be exported to stock mmseg: level 3 "
                                         r"\(after layers\.3\.blocks\.1, \(768, 2, 2\)\) is none of the outputs"):
        stock_model_cfg(cfg, local)


@pytest.mark.slow
def test_an_exported_convnext_runs_in_stock_mmseg_without_localvision(tmp_path):
    from localvision.utils.export import export
    from mmengine.config import Config
    cfg_dict, local = local_uper('convnext_atto', {})
    cfg = Config(dict(model=cfg_dict, default_scope='mmseg'))
    ckpt = str(tmp_path / 'local.pth')
    torch.save(dict(state_dict=local.state_dict(), meta={}), ckpt)
    out, stock_cfg, _ = export(cfg, ckpt, str(tmp_path / 'stock.pth'))
    assert_stock_mmseg_predicts_the_same(local, stock_cfg, out, 'TIMMBackbone', SIZE, tmp_path)
