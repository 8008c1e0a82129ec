# The segmentation demo: DeepLabV3 on a small timm ResNet-18-D (output stride 8, no pretrained
# weights) trained as K=4 gradient-isolated modules with InfoPro, on the generated shapes set
# (`python tools/misc/make_demo_data.py seg`), 64x64 images, CPU-friendly.
#   python tools/train.py configs/seg/deeplab_infopro_k4_demo.py
#   python tools/train.py configs/seg/deeplab_e2e_demo.py          # the E2E baseline
_base_ = [
    'mmseg::_base_/models/deeplabv3_r50-d8.py', '../_base_/datasets/lv_shapes_seg.py',
    'mmseg::_base_/default_runtime.py'
]
custom_imports = dict(imports=['localvision.seg'], allow_failed_imports=False)
crop_size = (64, 64)
num_classes = 6
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    type='LocalEncoderDecoder',
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
    backbone=dict(_delete_=True, model_name='resnet18d', pretrained=False, output_stride=8),
    out_indices=(1, 2, 3, 4),
    split=dict(num_modules=4, strategy='balanced', input_size=(3, 64, 64)),
    local_objective=dict(type='InfoProSeg', lambda_recon=1.5, lambda_task=1.0,
                         head=dict(type='SegAuxHead', channels=64)),
    decode_head=dict(channels=64, dilations=(1, 2, 4, 6), num_classes=num_classes, norm_cfg=norm_cfg),
    auxiliary_head=dict(channels=32, num_classes=num_classes, norm_cfg=norm_cfg),
    test_cfg=dict(mode='whole'),
)
train_dataloader = dict(batch_size=8)
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01),
                     clip_grad=None)
max_iters = 600
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=30, end=max_iters, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=600)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=600, max_keep_ckpts=1, save_last=True),
)
randomness = dict(seed=0)
# 'auto': nccl with CUDA, gloo without (resolved by tools/train.py)
env_cfg = dict(dist_cfg=dict(backend='auto'))
