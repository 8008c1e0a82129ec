# ResNet-50 (timm, from scratch) on ImageNet-1k, end-to-end (K=1): the E2E baseline of
# imagenet_resnet50_infopro_k4.py, same code path and recipe (that of imagenet_resnet101_e2e.py:
# SGD Nesterov, batch 1024 = 8 GPUs x 128, lr 0.4, cosine, 90 epochs) on mmpretrain's own
# ResNet-50 config (data/imagenet in mmpretrain's layout, GAP neck, LinearClsHead).
_base_ = ['mmpretrain::resnet/resnet50_8xb32_in1k.py']
custom_imports = dict(imports=['localvision.cls'], allow_failed_imports=False)
model = dict(type='LocalImageClassifier',
             backbone=dict(_delete_=True, type='StagedTimm', model_name='resnet50', pretrained=False),
             split=dict(input_size=(3, 224, 224)))  # num_modules defaults to 1
train_dataloader = dict(batch_size=128)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.4, momentum=0.9, nesterov=True, weight_decay=1e-4))
param_scheduler = dict(_delete_=True, type='CosineAnnealingLR', T_max=90, by_epoch=True, begin=0, end=90)
train_cfg = dict(max_epochs=90)
auto_scale_lr = dict(base_batch_size=1024)
