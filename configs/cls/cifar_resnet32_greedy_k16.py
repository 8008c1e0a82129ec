# ResNet-32 on CIFAR-10, greedy supervised local learning with K=16 modules;
# the published cuts (InfoPro / DGL tables).
_base_ = ['./cifar_resnet32_e2e.py']
model = dict(split=dict(cuts=[(0, 0), (1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (2, 0), (2, 1), (2, 2), (2, 3), (2, 4), (3, 0), (3, 1), (3, 2), (3, 3)]), local_objective=dict(type='Greedy', head=dict(type='ConvFCHead')))
