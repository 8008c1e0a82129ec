# DeepLabV3 (mmseg's own model config) on a timm ResNet-50-D at output stride 8, trained as
# K=4 gradient-isolated modules with InfoPro's segmentation objective (aux seg head + image
# reconstruction decoder) on modules 0..2; the decode head (ASPP) trains the last module.
# Swap the backbone with one line, e.g. --cfg-options model.backbone.model_name=resnet101d
# (the heads' in_channels follow the backbone). Data: Cityscapes as in mmseg's base config.
_base_ = [
    'mmseg::_base_/models/deeplabv3_r50-d8.py', 'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_80k.py'
]
custom_imports = dict(imports=['localvision.seg'], allow_failed_imports=False)
crop_size = (512, 1024)
norm_cfg = dict(type='SyncBN', requires_grad=True)  # BN is fine on a single device
model = dict(
    type='LocalEncoderDecoder',
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
    # never download weights: pretrained=False, or checkpoint_path='/path/to/resnet50d.pth'
    # levels: out_stages=(1, 2, 3, 4) = layer1..layer4 (decode_head.in_index=3: layer4)
    backbone=dict(_delete_=True, type='StagedTimm', model_name='resnet50d', pretrained=False,
                  output_stride=8, out_stages=(1, 2, 3, 4)),
    split=dict(num_modules=4, strategy='balanced', input_size=(3, 512, 512)),
    local_objective=dict(type='InfoProSeg', lambda_recon=1.5, lambda_task=1.0),
    decode_head=dict(norm_cfg=norm_cfg),
    auxiliary_head=dict(norm_cfg=norm_cfg),
    # each parameter is updated as soon as its gradient is final, inside the module's backward,
    # and the gradient freed: the same SGD step, without holding every gradient until the end
    # (under dist_train.sh: each module steps after its all-reduce)
    executor=dict(type='PerModuleBackward', step_in_backward=True),
)
# 'auto': nccl with CUDA, gloo without (resolved by tools/train.py)
env_cfg = dict(dist_cfg=dict(backend='auto'))
