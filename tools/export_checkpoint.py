"""Export a trained local-learning model to a checkpoint that stock timm / OpenMMLab loads.

    python tools/export_checkpoint.py CONFIG CHECKPOINT OUT.pth [--out-config OUT_config.py]
                                      [--cfg-options key=value ...]

Classification (``LocalImageClassifier``): writes the timm model's own state dict (keys of timm,
head included; auxiliary nets dropped) and ``OUT_config.json`` (the ``timm.create_model`` call and
the input normalisation); ``timm.create_model(NAME, num_classes=N, ..., checkpoint_path=OUT.pth)``
loads it without localvision installed and gives the same logits. A context supply (ContSup) and
the CIFAR ResNets, which stock timm cannot express, are refused with one error line.

Segmentation (``LocalEncoderDecoder``): writes an mmseg ``EncoderDecoder`` checkpoint with
``TIMMBackbone(features_only=True, pretrained=False)`` keys (auxiliary nets of local learning
dropped) and the matching plain mmseg config; ``mmseg.apis.init_model(OUT_config.py, OUT.pth)``
loads it without localvision installed and predicts the same.

Detection (``LocalSingleStageDetector`` / ``LocalTwoStageDetector``): writes an mmdet
``SingleStageDetector`` / ``TwoStageDetector`` checkpoint with mmdet's ``ResNet`` backbone (plain
timm ResNets) and the matching plain mmdet config; ``mmdet.apis.init_detector(OUT_config.py,
OUT.pth)`` loads it without localvision and detects the same.

The printed line names the stock call.
"""
import argparse
import os.path as osp
import sys

import _stack_check  # noqa: F401  (first: one clear line without the stack)

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import DictAction  # noqa: E402

from localvision.errors import InputError  # noqa: E402
from localvision.utils import allow_mmengine_checkpoints, check_checkpoint  # noqa: E402
from localvision.utils.config import load_config  # noqa: E402
from localvision.utils.export import export  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Export a local-learning checkpoint for stock timm / mmseg / mmdet')
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('out', help='output checkpoint (.pth)')
    p.add_argument('--out-config', help='output config (default: OUT without .pth + _config.py, '
                   '_config.json for classification)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    allow_mmengine_checkpoints()
    try:
        cfg = load_config(args.config, args.cfg_options)
        check_checkpoint(args.checkpoint)
        ckpt, config, stock = export(cfg, args.checkpoint, args.out, args.out_config)
    except InputError as e:
        raise SystemExit(f'error: {e}') from None
    print(f'wrote {ckpt} and {config} (stock: {stock})')
    return ckpt, config


if __name__ == '__main__':
    main()
