# ResNet-32 at half width (stages of 8 / 16 / 32 channels) on the 24x24 global-form set
# (`python tools/misc/make_demo_data.py forms --size 24 --out data/lv_forms24_cls`): the recipe of
# cifar_resnet32_forms24_greedy_k4.py with about 0.4x its time per iteration, so that the K=4 table of
# tools/analysis/learning_quality.py (8 methods, 3 seeds, 15 epochs) fits in about an hour on a 2-core
# CPU machine (`--jobs 2`). The auxiliary nets follow the module widths; K=2..16 all split.
_base_ = ['./cifar_resnet32_forms24_greedy_k4.py']
model = dict(backbone=dict(widths=(8, 16, 32)))
