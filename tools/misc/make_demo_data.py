"""Generate localvision's small demo data sets (no download).

    python tools/misc/make_demo_data.py cls [--out data/lv_shapes_cls] [--size 32] [--seed 0]
                                            [--train-per-class 500] [--val-per-class 100]
    python tools/misc/make_demo_data.py rel [--out data/lv_relational_cls] [--size 32] [--seed 0]
                                            [--train-per-class 500] [--val-per-class 125] [--annotations]
    python tools/misc/make_demo_data.py forms [--out data/lv_forms_cls] [--size 32] [--seed 0]
                                              [--train-per-class 500] [--val-per-class 125]
    python tools/misc/make_demo_data.py seg [--out data/lv_shapes_seg] [--size 64] [--seed 0]
                                            [--num-train 400] [--num-val 100]
    python tools/misc/make_demo_data.py det [--out data/lv_shapes_det] [--size 128] [--seed 0]
                                            [--num-train 800] [--num-val 200]
    python tools/misc/make_demo_data.py inst [--out data/lv_shapes_inst] [--size 128] [--seed 0]
                                             [--num-train 800] [--num-val 200]

One subcommand per task. To add one, write ``add_<task>_parser(subparsers)`` that adds its parser
(:func:`add_set_parser`: the options every set has) with ``func``, a ``run(args) -> Path``
function, and list it in ``SUBCOMMANDS``.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Callable, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/
import _stack_check  # noqa: E402,F401  (one clear line without the stack)


def add_set_parser(subparsers: argparse._SubParsersAction, name: str, help: str, out: str, size: int,
                   func: Callable[[argparse.Namespace], Path], per_class: Optional[tuple] = None,
                   images: Optional[tuple] = None) -> argparse.ArgumentParser:
    """The parser of one set: ``--out``, ``--size``, ``--seed`` and its counts, either per class
    (``per_class=(train, val)``: ``--train-per-class``, ``--val-per-class``) or of images
    (``images=(train, val)``: ``--num-train``, ``--num-val``)."""
    p = subparsers.add_parser(name, help=help)
    p.add_argument('--out', default=out, help='output folder (default: %(default)s)')
    p.add_argument('--size', type=int, default=size, help='image side in pixels (default: %(default)s)')
    p.add_argument('--seed', type=int, default=0, help='base seed (default: %(default)s)')
    if per_class is not None:
        p.add_argument('--train-per-class', type=int, default=per_class[0],
                       help='training images per class (default: %(default)s)')
        p.add_argument('--val-per-class', type=int, default=per_class[1],
                       help='validation images per class (default: %(default)s)')
    if images is not None:
        p.add_argument('--num-train', type=int, default=images[0], help='training images (default: %(default)s)')
        p.add_argument('--num-val', type=int, default=images[1], help='validation images (default: %(default)s)')
    p.set_defaults(func=func)
    return p


def run_cls(args: argparse.Namespace) -> Path:
    from localvision.datasets.synthetic import make_shapes_classification
    return make_shapes_classification(args.out, num_classes=args.num_classes, train_per_class=args.train_per_class,
                                      val_per_class=args.val_per_class, image_size=args.size, seed=args.seed)


def add_cls_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_set_parser(subparsers, 'cls', 'shapes & patterns image classification (ImageFolder layout)',
                       'data/lv_shapes_cls', 32, run_cls, per_class=(500, 100))
    p.add_argument('--num-classes', type=int, default=10, help='number of classes, at most 10 (default: %(default)s)')


def run_rel(args: argparse.Namespace) -> Path:
    from localvision.datasets.relational import make_relational_classification
    return make_relational_classification(args.out, train_per_class=args.train_per_class,
                                          val_per_class=args.val_per_class, image_size=args.size, seed=args.seed,
                                          annotations=args.annotations)


def add_rel_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_set_parser(subparsers, 'rel', 'relational image classification: 8 classes, the relations between two '
                                          'objects (layout x same/different shape x same/different colour; '
                                          'ImageFolder layout)',
                       'data/lv_relational_cls', 32, run_rel, per_class=(500, 125))
    p.add_argument('--annotations', action='store_true',
                   help="also write annotations.json (every image's objects: shape, colour, centre, radius)")


def run_forms(args: argparse.Namespace) -> Path:
    from localvision.datasets.forms import make_forms_classification
    return make_forms_classification(args.out, train_per_class=args.train_per_class, val_per_class=args.val_per_class,
                                     image_size=args.size, seed=args.seed)


def add_forms_parser(subparsers: argparse._SubParsersAction) -> None:
    add_set_parser(subparsers, 'forms', 'global-form image classification: 8 figures (circle, square, ..., U) '
                                        'drawn by 12 small elements of a random kind (ImageFolder layout)',
                   'data/lv_forms_cls', 32, run_forms, per_class=(500, 125))


def run_counted(maker: str) -> Callable[[argparse.Namespace], Path]:
    """``run(args)`` of a set counted in images: calls ``maker`` (``'module:function'``, imported
    when it runs) with ``--out``, ``--num-train``, ``--num-val``, ``--size`` and ``--seed``."""
    def run(args: argparse.Namespace) -> Path:
        module, name = maker.split(':')
        make = getattr(importlib.import_module(module), name)
        return make(args.out, num_train=args.num_train, num_val=args.num_val, image_size=args.size, seed=args.seed)
    return run


def add_seg_parser(subparsers: argparse._SubParsersAction) -> None:
    add_set_parser(subparsers, 'seg', 'shapes semantic segmentation, 6 classes (mmseg img_dir/ann_dir layout)',
                   'data/lv_shapes_seg', 64, run_counted('localvision.datasets.synthetic_seg:make_shapes_segmentation'),
                   images=(400, 100))


def add_det_parser(subparsers: argparse._SubParsersAction) -> None:
    add_set_parser(subparsers, 'det', 'shapes object detection, 5 classes (COCO json + images)',
                   'data/lv_shapes_det', 128, run_counted('localvision.datasets.synthetic_det:make_shapes_detection'),
                   images=(800, 200))


def add_inst_parser(subparsers: argparse._SubParsersAction) -> None:
    add_set_parser(subparsers, 'inst', 'shapes instance segmentation, 5 classes (COCO json with polygons + '
                                       'images; the det set\'s images)',
                   'data/lv_shapes_inst', 128, run_counted('localvision.datasets.synthetic_inst:make_shapes_instances'),
                   images=(800, 200))


SUBCOMMANDS: List[Callable[[argparse._SubParsersAction], None]] = [add_cls_parser, add_rel_parser, add_forms_parser,
                                                                    add_seg_parser, add_det_parser, add_inst_parser]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Generate localvision demo data sets (reproducible, offline).')
    subparsers = parser.add_subparsers(dest='task', required=True, metavar='TASK')
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        out = args.func(args)
    except (ValueError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'{args.task} demo data ready in {Path(out).resolve()}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
