# Faster R-CNN (mmdet's own config: FPN P2-P6, RPN, RoIAlign + shared 2fc head, COCO 1x) on a timm
# ResNet-50 trained from scratch as K=4 gradient-isolated modules with InfoProDet. FPN reads
# layer1..layer4 here (start_level=0), so the stride-4 level of module 0 is kept, detached, for it.
# RPN and RoI head train the last module.
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['localvision.det'], allow_failed_imports=False)
model = dict(
    type='LocalTwoStageDetector',
    backbone=dict(_delete_=True, type='StagedTimm', model_name='resnet50', pretrained=False,
                  frozen_stages=-1, norm_eval=False, out_stages=(1, 2, 3, 4)),
    split=dict(num_modules=4, strategy='balanced', input_size=(3, 512, 512)),
    local_objective=dict(type='InfoProDet', lambda_recon=1.0, lambda_task=1.0),
)
env_cfg = dict(dist_cfg=dict(backend='auto'))
