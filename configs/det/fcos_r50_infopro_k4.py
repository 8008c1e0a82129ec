# FCOS (mmdet's own config: FPN P3-P7 with extra convs on P5, GN head, focal + IoU + centerness)
# on a timm ResNet-50 trained from scratch as K=4 gradient-isolated modules with InfoProDet.
# The base config is for caffe-style pretrained weights; a timm ResNet expects RGB images
# normalised with the ImageNet mean/std, so the data preprocessor is replaced.
_base_ = ['mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py']
custom_imports = dict(imports=['localvision.det'], allow_failed_imports=False)
model = dict(
    type='LocalSingleStageDetector',
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(_delete_=True, type='StagedTimm', model_name='resnet50', pretrained=False,
                  frozen_stages=-1, norm_eval=False, out_stages=(1, 2, 3, 4)),
    split=dict(num_modules=4, strategy='balanced', input_size=(3, 512, 512)),
    local_objective=dict(type='InfoProDet', lambda_recon=1.0, lambda_task=1.0),
    # mmdet's FocalLoss, keeping little for backward off CUDA (same values; see localvision/det/losses.py)
    bbox_head=dict(loss_cls=dict(type='LowMemFocalLoss')),
)
env_cfg = dict(dist_cfg=dict(backend='auto'))
