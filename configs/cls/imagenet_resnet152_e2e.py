# ResNet-152 (timm, from scratch) on ImageNet-1k, end-to-end (K=1): the E2E baseline of
# imagenet_resnet152_infopro_k2.py; data, head and the InfoPro ImageNet recipe of
# imagenet_resnet101_e2e.py (mmpretrain's ResNet-101 and ResNet-152 configs differ only in the
# backbone, which is replaced here).
_base_ = ['./imagenet_resnet101_e2e.py']
model = dict(backbone=dict(model_name='resnet152'))
