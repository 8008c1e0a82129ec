# RetinaNet (mmdet's own config: FPN P3-P7, focal loss, COCO 1x) on a timm ResNet-50 trained from
# scratch as K=4 gradient-isolated modules. Modules 0..2 are trained by InfoProDet (a light dense
# detection head + image reconstruction on their own output map); the last module by FPN +
# RetinaHead. FPN reads layer2..layer4 (start_level=1); the levels of earlier modules reach it
# detached. Swap the backbone with one line (--cfg-options model.backbone.model_name=resnet101);
# FPN's in_channels follow the backbone. Data: COCO as in mmdet's base config (data/coco/).
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['localvision.det'], allow_failed_imports=False)
model = dict(
    type='LocalSingleStageDetector',
    # never download weights: pretrained=False, or checkpoint_path='/path/to/resnet50.pth'.
    # From scratch nothing is frozen and BN statistics are learned: frozen_stages=-1, norm_eval=False
    # (mmdet's ImageNet-pretrained defaults are frozen_stages=1, norm_eval=True).
    # levels: out_stages=(1, 2, 3, 4) = layer1..layer4 (what mmdet's ResNet calls out_indices 0..3)
    backbone=dict(_delete_=True, type='StagedTimm', model_name='resnet50', pretrained=False,
                  frozen_stages=-1, norm_eval=False, out_stages=(1, 2, 3, 4)),
    split=dict(num_modules=4, strategy='balanced', input_size=(3, 512, 512)),
    local_objective=dict(type='InfoProDet', lambda_recon=1.0, lambda_task=1.0),
    # mmdet's FocalLoss, keeping little for backward off CUDA (same values; see localvision/det/losses.py)
    bbox_head=dict(loss_cls=dict(type='LowMemFocalLoss')),
)
# 'auto': nccl with CUDA, gloo without (resolved by tools/train.py)
env_cfg = dict(dist_cfg=dict(backend='auto'))
