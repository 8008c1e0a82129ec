# RetinaNet on a timm ViT-Small/16 (from scratch) trained as K=4 gradient-isolated modules of 3
# transformer blocks each, with InfoProDet on the stride-16 token maps of modules 0..2. The ViT
# gives one map (block 12, after the final norm); a simple feature pyramid (ViTDet-style:
# deconv x2 / identity / max-pools) turns it into strides 8..128 for RetinaHead.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['localvision.det'], allow_failed_imports=False)
img = 512
model = dict(
    type='LocalSingleStageDetector',
    data_preprocessor=dict(pad_size_divisor=16),
    backbone=dict(_delete_=True, type='StagedTimm', model_name='vit_small_patch16_224', pretrained=False,
                  img_size=img, dynamic_img_size=True, frozen_stages=-1, norm_eval=False, out_blocks=(12,)),
    split=dict(num_modules=4, strategy='equal', input_size=(3, img, img)),
    local_objective=dict(type='InfoProDet', lambda_recon=1.0, lambda_task=1.0),
    # mmdet's FocalLoss, keeping little for backward off CUDA (same values; see localvision/det/losses.py)
    bbox_head=dict(loss_cls=dict(type='LowMemFocalLoss')),
    neck=dict(_delete_=True, type='SimplePyramid', in_channels=384, out_channels=256,
              scale_factors=(2, 1, 0.5, 0.25, 0.125), norm_cfg=dict(type='GN', num_groups=32)),
)
# ViTs train with AdamW; images resized to a fixed square so the patch grid is fixed.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(img, img), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(img, img), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
                     clip_grad=dict(max_norm=1.0, norm_type=2))
env_cfg = dict(dist_cfg=dict(backend='auto'))
