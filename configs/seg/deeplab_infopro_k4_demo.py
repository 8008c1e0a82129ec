# The segmentation demo: DeepLabV3 (mmseg's model config) on a CIFAR-style ResNet-32 (a timm
# model registered by localvision; no pretrained weights) trained as K=4 gradient-isolated modules
# with InfoPro's segmentation objective, on the generated shapes set
# (`python tools/misc/make_demo_data.py seg`), 64x64 images, CPU-friendly. The thin backbone keeps
# weights small, so activations dominate the training memory, as in real segmentation training.
#   python tools/seg_demo.py                                      # this + the E2E baseline, side by side
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
    # levels: stem, layer1 (1/1), layer2 (1/2), layer3 (1/4, the decode head's)
    backbone=dict(_delete_=True, type='StagedTimm', model_name='cifar_resnet32', pretrained=False,
                  out_stages=(0, 1, 2, 3)),
    split=dict(num_modules=4, strategy='balanced', input_size=(3, 64, 64)),
    # lambda as (first, last) local module, interpolated: reconstruction weight falling and task
    # weight rising with depth, the shape of InfoPro's K=4 schedules
    local_objective=dict(type='InfoProSeg', lambda_recon=(1.5, 0.5), lambda_task=(1.0, 2.0),
                         # auxiliary nets narrowed to this thin backbone (the paper's 512/128 suit ResNet-101)
                         head=dict(type='SegAuxHead', channels=32),
                         decoder=dict(type='ProgressiveDecoder', widths=(32, 16, 8))),
    decode_head=dict(channels=64, dilations=(1, 2, 4, 6), num_classes=num_classes, norm_cfg=norm_cfg),
    auxiliary_head=dict(channels=32, num_classes=num_classes, norm_cfg=norm_cfg),
    test_cfg=dict(mode='whole'),
)
train_dataloader = dict(batch_size=8)
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=3e-3, weight_decay=0.01),
                     clip_grad=None)
max_iters = 600
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=30, end=max_iters, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1, save_last=True),
)
# logs the peak training memory of one iteration (exact live-tensor bytes on CPU)
custom_hooks = [dict(type='localvision.PeakMemoryHook', at_iter=5)]
randomness = dict(seed=0)
# 'auto': nccl with CUDA, gloo without (resolved by tools/train.py)
env_cfg = dict(dist_cfg=dict(backend='auto'))
