"""Export of a local UPerNet on a timm ViT to stock mmseg's ``VisionTransformer``.

The repository's ``upernet_vit_small_infopro_k4`` config, shrunk (64x64 input, 4 blocks of width
96, K=2): the exported checkpoint loads strictly into stock mmseg (built in a process that never
imports localvision) and gives the local model's logits at the backbone's image size.
"""
import os.path as osp
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.config import Config

pytestmark = pytest.mark.slow  # starts processes or trains: left out of `pytest -m "not slow"`

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs/seg/upernet_vit_small_infopro_k4.py')
E = 96


def small_vit_cfg(**backbone):
    cfg = Config.fromfile(CONFIG)
    bn = dict(type='BN', requires_grad=True)
    cfg.merge_from_dict({
        'model.backbone.img_size': 64, 'model.backbone.depth': 4, 'model.backbone.embed_dim': E,
        'model.backbone.num_heads': 3, 'model.backbone.out_blocks': (1, 2, 3, 4),
        'model.split': dict(num_modules=2, strategy='equal', input_size=(3, 64, 64)),
        'model.data_preprocessor.size': (64, 64), 'model.neck.in_channels': [E] * 4, 'model.neck.out_channels': E,
        'model.decode_head.in_channels': [E] * 4, 'model.decode_head.channels': 16,
        'model.decode_head.num_classes': 5, 'model.decode_head.norm_cfg': bn,
        'model.auxiliary_head.in_channels': E, 'model.auxiliary_head.channels': 8,
        'model.auxiliary_head.num_classes': 5, 'model.auxiliary_head.norm_cfg': bn,
        **{f'model.backbone.{k}': v for k, v in backbone.items()}})
    return cfg


def build_local(cfg):
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import localvision.seg  # noqa: F401
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.eval()


def assert_stock_mmseg_predicts_the_same(local, stock_cfg: str, ckpt: str, backbone: str, size: int, tmp_path) -> None:
    """Stock mmseg, in a process that never imports localvision, builds ``stock_cfg`` with a
    ``backbone`` of that type, loads ``ckpt`` and gives ``local``'s logits on a random batch."""
    x = torch.randn(2, 3, size, size)
    torch.save(x, tmp_path / 'x.pt')
    metas = [dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size))] * 2
    script = textwrap.dedent(f'''
        import sys, torch
        from mmseg.apis import init_model
        model = init_model({stock_cfg!r}, {ckpt!r}, device='cpu')
        with torch.no_grad():
            torch.save(model.encode_decode(torch.load({str(tmp_path / 'x.pt')!r}), {metas!r}), {str(tmp_path / 'y.pt')!r})
        assert type(model.backbone).__name__ == {backbone!r}
        assert not [m for m in sys.modules if m.startswith('localvision')], 'localvision was imported'
    ''')
    proc = subprocess.run([sys.executable, '-c', script], cwd=str(tmp_path), capture_output=True, text=True,
                          env={'PATH': '/usr/bin:/bin', 'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 0, proc.stderr[-3000:]
    with torch.no_grad():
        ours = local.encode_decode(x, metas)
    torch.testing.assert_close(torch.load(tmp_path / 'y.pt'), ours, rtol=1e-4, atol=1e-5)


def test_vit_upernet_exports_to_stock_mmseg_vision_transformer(tmp_path):
    from localvision.utils.export import export
    cfg = small_vit_cfg()
    local = build_local(cfg)
    ckpt = str(tmp_path / 'local.pth')
    torch.save(dict(state_dict=local.state_dict(), meta={}), ckpt)
    out, stock_cfg, _ = export(cfg, ckpt, str(tmp_path / 'stock.pth'))
    stock = Config.fromfile(stock_cfg)
    assert stock.model.backbone.type == 'VisionTransformer' and stock.model.backbone.out_indices == (0, 1, 2, 3)

    assert_stock_mmseg_predicts_the_same(local, stock_cfg, out, 'VisionTransformer', 64, tmp_path)


def test_vit_that_mmseg_cannot_express_is_refused_with_one_error(tmp_path):
    from localvision.errors import InputError
    from localvision.seg.export import stock_model_cfg
    cfg = small_vit_cfg(init_values=1e-5)  # layer scale: mmseg's VisionTransformer has none
    with pytest.raises(InputError, match=r'vit_small_patch16_224 cannot be exported to stock mmseg: '
                                         r'its VisionTransformer requires no layer scale'):
        stock_model_cfg(cfg.model.to_dict(), build_local(cfg))
