# ResNet-32 on CIFAR-10, end-to-end (K=1), the papers' recipe.
_base_ = ['../_base_/models/cifar_resnet.py', '../_base_/datasets/cifar10.py',
          '../_base_/schedules/cifar_sgd_160e.py', '../_base_/default_runtime.py']
model = dict(backbone=dict(type='StagedTimm', model_name='cifar_resnet32'))
