# ResNet-152 (timm, from scratch) on ImageNet-1k, end-to-end (K=1): the E2E baseline of
# imagenet_resnet152_infopro_k2.py, same code path and recipe. mmpretrain's own ResNet-152 config
# (ImageNet from data/imagenet in mmpretrain's layout, RandomResizedCrop 224 + flip, GAP neck,
# LinearClsHead, top-1/top-5) with the InfoPro ImageNet recipe of the papers' public code:
# SGD Nesterov 0.9, weight decay 1e-4, batch 1024 (8 GPUs x 128), lr 0.4, cosine per epoch
# (no warm-up), 90 epochs, plain cross-entropy.
_base_ = ['mmpretrain::resnet/resnet152_8xb32_in1k.py']
custom_imports = dict(imports=['localvision.cls'], allow_failed_imports=False)
model = dict(type='LocalImageClassifier',
             backbone=dict(_delete_=True, type='StagedTimm', model_name='resnet152', pretrained=False),
             split=dict(input_size=(3, 224, 224)))  # num_modules defaults to 1
train_dataloader = dict(batch_size=128)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.4, momentum=0.9, nesterov=True, weight_decay=1e-4))
param_scheduler = dict(_delete_=True, type='CosineAnnealingLR', T_max=90, by_epoch=True, begin=0, end=90)
train_cfg = dict(max_epochs=90)
auto_scale_lr = dict(base_batch_size=1024)
