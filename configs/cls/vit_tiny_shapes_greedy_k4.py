# ViT-tiny (patch 4 on 32x32 images, dynamic image size) on the built-in shapes set, greedy
# local learning with K=4 modules balanced by measured activation memory. Swap the backbone
# with --cfg-options model.backbone.model_name=vit_small_patch16_224 (and a matching img_size);
# the head's in_channels follow it. neck=None: the head reads timm's pooling (the class token).
_base_ = ['../_base_/datasets/shapes_cls.py', '../_base_/default_runtime.py']
model = dict(
    type='LocalImageClassifier',
    backbone=dict(type='StagedTimm', model_name='vit_tiny_patch16_224', pretrained=False, img_size=32, patch_size=4,
                  dynamic_img_size=True),
    neck=None,
    head=dict(type='LinearClsHead', num_classes=10, loss=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    split=dict(num_modules=4, strategy='balanced', input_size=(3, 32, 32)),
    local_objective=dict(type='Greedy', head=dict(type='PoolLinearHead')),
)
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
                     clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=9, by_epoch=True, begin=1, end=10, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=10, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
