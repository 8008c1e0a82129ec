# The built-in demo job: ResNet-32 (CIFAR style, from scratch) on the generated shapes set,
# greedy local learning with K=4 modules at the published ResNet-32 cuts. CPU-friendly.
_base_ = ['../_base_/models/cifar_resnet.py', '../_base_/datasets/shapes_cls.py',
          '../_base_/default_runtime.py']
# mmpretrain's CustomDataset reads the folders; the data preprocessor (shapes mean/std, BGR -> RGB)
# comes from the data set's base.
model = dict(
    backbone=dict(type='StagedTimm', model_name='cifar_resnet32'),
    split=dict(cuts=[(1, 2), (2, 1), (3, 0)]),
    local_objective=dict(type='Greedy', head=dict(type='ConvFCHead')),
)
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='SGD', lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=5, by_epoch=True, begin=1, end=6, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=6, val_interval=2)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
