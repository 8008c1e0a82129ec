# ResNet-110 on CIFAR-10, greedy supervised local learning with K=8 modules;
# no published table for this K: cuts balanced by measured activation memory.
_base_ = ['./cifar_resnet110_e2e.py']
model = dict(split=dict(num_modules=8, strategy='balanced'), local_objective=dict(type='Greedy', head=dict(type='ConvFCHead')))
