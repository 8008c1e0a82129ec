# ResNet-32 on CIFAR-10, greedy supervised local learning with K=2 modules;
# the published cuts (InfoPro / DGL tables).
_base_ = ['./cifar_resnet32_e2e.py']
model = dict(split=dict(cuts=[(2, 1)]), local_objective=dict(type='Greedy', head=dict(type='ConvFCHead')))
