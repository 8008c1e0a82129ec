# ViT-B/16 (timm vit_base_patch16_224, from scratch) on ImageNet-1k at 224, end-to-end (K=1): the
# E2E baseline of imagenet_vit_base_greedy_k4.py, same code path and recipe. mmpretrain's own DeiT-B
# config gives the DeiT recipe: RandomResizedCrop + flip + RandAugment + RandomErasing, Mixup 0.8 /
# CutMix 1.0, label smoothing 0.1, AdamW lr 5e-4 x 1024 / 512 (batch 16 GPUs x 64), weight decay
# 0.05 (none on norms, biases, cls token and position embedding), grad clip 5, cosine to 1e-5,
# 300 epochs, drop_path 0.1, EMA of the weights. Changed here: the DeiT paper's 5 warm-up epochs
# (mmpretrain's base has 20). neck=None: the head reads timm's pooling (the class token).
_base_ = ['mmpretrain::deit/deit-base_16xb64_in1k.py']
custom_imports = dict(imports=['localvision.cls'], allow_failed_imports=False)
model = dict(type='LocalImageClassifier',
             backbone=dict(_delete_=True, type='StagedTimm', model_name='vit_base_patch16_224', pretrained=False,
                           img_size=224, drop_path_rate=0.1),
             split=dict(input_size=(3, 224, 224)))  # num_modules defaults to 1
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=295, eta_min=1e-5, by_epoch=True, begin=5, end=300),
]
