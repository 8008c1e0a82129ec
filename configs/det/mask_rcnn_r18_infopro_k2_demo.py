# The instance-segmentation demo: Mask R-CNN on a small timm ResNet-18 (no pretrained weights)
# trained as K=2 gradient-isolated modules with InfoProDet (dense detection head + per-class mask
# coverage + reconstruction), on the generated shapes set (`python tools/misc/make_demo_data.py inst`:
# 5 classes, 128x128, COCO json with polygons), CPU-friendly (thin FPN / heads).
#   python tools/train.py configs/det/mask_rcnn_r18_infopro_k2_demo.py
#   python tools/train.py configs/det/mask_rcnn_r18_e2e_demo.py          # the E2E baseline
#   python tools/train.py configs/det/mask_rcnn_r18_greedy_k2_demo.py    # greedy (DetGreedy)
#   python tools/test.py configs/det/mask_rcnn_r18_infopro_k2_demo.py work_dirs/.../iter_N.pth
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py', '../_base_/datasets/lv_shapes_inst.py',
    'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['localvision.det'], allow_failed_imports=False)
num_classes = 5
width = 64
model = dict(
    type='LocalTwoStageDetector',
    backbone=dict(_delete_=True, type='StagedTimm', model_name='resnet18', pretrained=False,
                  frozen_stages=-1, norm_eval=False, out_stages=(1, 2, 3, 4)),
    split=dict(num_modules=2, strategy='balanced', input_size=(3, 128, 128)),
    local_objective=dict(type='InfoProDet', lambda_recon=1.0, lambda_task=1.0, mask_weight=1.0,
                         head=dict(type='DenseDetAuxHead', channels=64)),
    neck=dict(out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width, anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=dict(in_channels=width, fc_out_channels=256, num_classes=num_classes),
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(num_convs=2, in_channels=width, conv_out_channels=width, num_classes=num_classes)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=1000, max_per_img=300), rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=100), rcnn=dict(max_per_img=50)),
)
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
                     clip_grad=dict(max_norm=10, norm_type=2))
max_iters = 600  # 6 epochs of the 800 training images at batch 8 (about 25 min on one CPU core)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type="CosineAnnealingLR", eta_min=1e-5, begin=50, end=max_iters, T_max=max_iters - 50, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1, save_last=True),
    visualization=dict(type='DetVisualizationHook', draw=False),
)
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
env_cfg = dict(dist_cfg=dict(backend='auto'))
