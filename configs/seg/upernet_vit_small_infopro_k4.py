# UPerNet (mmseg's model config) on a timm ViT-Small/16, K=4 gradient-isolated modules with
# InfoPro's segmentation objective. The four levels are the outputs of transformer blocks
# 3, 6, 9, 12 (flat block indices; 0 is the patch embedding), rescaled by mmseg's MultiLevelNeck
# to 1/4..1/32; the levels of earlier modules reach the neck detached.
_base_ = [
    'mmseg::_base_/models/upernet_vit-b16_ln_mln.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_160k.py'
]
custom_imports = dict(imports=['localvision.seg'], allow_failed_imports=False)
crop_size = (512, 512)
norm_cfg = dict(type='SyncBN', requires_grad=True)
embed = 384
model = dict(
    type='LocalEncoderDecoder',
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
    backbone=dict(_delete_=True, type='StagedTimm', model_name='vit_small_patch16_224', pretrained=False,
                  img_size=512, dynamic_img_size=True, out_blocks=(3, 6, 9, 12)),
    split=dict(num_modules=4, strategy='balanced', input_size=(3, 512, 512)),
    local_objective=dict(type='InfoProSeg', lambda_recon=1.5, lambda_task=1.0),
    neck=dict(in_channels=[embed] * 4, out_channels=embed, scales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[embed] * 4, num_classes=150, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=embed, num_classes=150, norm_cfg=norm_cfg),
)
env_cfg = dict(dist_cfg=dict(backend='auto'))
