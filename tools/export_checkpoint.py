"""Export a trained local-learning model to a checkpoint that stock OpenMMLab loads.

    python tools/export_checkpoint.py CONFIG CHECKPOINT OUT.pth [--out-config OUT_config.py]
                                      [--cfg-options key=value ...]

Segmentation (``LocalEncoderDecoder``): writes an mmseg ``EncoderDecoder`` checkpoint with
``TIMMBackbone(features_only=True, pretrained=False)`` keys (auxiliary nets of local learning
dropped) and the matching plain mmseg config; ``mmseg.apis.init_model(OUT_config.py, OUT.pth)``
loads it without localvision installed and predicts the same.

Detection (``LocalSingleStageDetector`` / ``LocalTwoStageDetector``): writes an mmdet
``SingleStageDetector`` / ``TwoStageDetector`` checkpoint with mmdet's ``ResNet`` backbone (plain
timm ResNets) and the matching plain mmdet config; ``mmdet.apis.init_detector(OUT_config.py,
OUT.pth)`` loads it without localvision and detects the same.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import DictAction  # noqa: E402

from localvision.errors import InputError  # noqa: E402
from localvision.utils import allow_mmengine_checkpoints, check_checkpoint  # noqa: E402
from localvision.utils.config import load_config  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Export a local-learning checkpoint for stock mmseg')
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('out', help='output checkpoint (.pth)')
    p.add_argument('--out-config', help='output config (default: OUT without .pth + _config.py)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    allow_mmengine_checkpoints()
    try:
        cfg = load_config(args.config, args.cfg_options)
        check_checkpoint(args.checkpoint)
        if cfg.model.get('type') in ('LocalSingleStageDetector', 'LocalTwoStageDetector'):
            from localvision.det.export import export
        else:
            from localvision.seg.export import export
        ckpt, config = export(cfg, args.checkpoint, args.out, args.out_config)
    except InputError as e:
        raise SystemExit(f'error: {e}') from None
    api = ('mmdet.apis.init_detector' if cfg.model.get('type') in ('LocalSingleStageDetector', 'LocalTwoStageDetector')
           else 'mmseg.apis.init_model')
    print(f'wrote {ckpt} and {config} (stock: {api}({config!r}, {ckpt!r}))')
    return ckpt, config


if __name__ == '__main__':
    main()
