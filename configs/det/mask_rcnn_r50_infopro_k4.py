# Mask R-CNN (mmdet's own config: FPN P2-P6, RPN, RoIAlign box head + FCN mask head, COCO 1x) on a
# timm ResNet-50 trained from scratch as K=4 gradient-isolated modules. Module k < 3 is trained by
# InfoProDet: the dense detection head (FCOS-style class + box maps) plus a per-class mask-coverage
# map (mask_weight) and the image reconstruction, on the module's own output; the FPN reads
# layer1..layer4 (start_level=0), so levels of earlier modules reach it detached. RPN, box and mask
# heads train the last module. See docs/instance_segmentation.md.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['localvision.det'], allow_failed_imports=False)
model = dict(
    type='LocalTwoStageDetector',
    backbone=dict(_delete_=True, type='StagedTimm', model_name='resnet50', pretrained=False,
                  frozen_stages=-1, norm_eval=False, out_stages=(1, 2, 3, 4)),
    split=dict(num_modules=4, strategy='balanced', input_size=(3, 512, 512)),
    local_objective=dict(type='InfoProDet', lambda_recon=1.0, lambda_task=1.0, mask_weight=1.0),
)
env_cfg = dict(dist_cfg=dict(backend='auto'))
