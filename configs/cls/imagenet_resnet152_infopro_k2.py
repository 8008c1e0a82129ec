# ResNet-152 on ImageNet-1k, InfoPro* with K=2 (Wang et al., ICLR 2021, ImageNet experiments;
# top-1 error 21.60 E2E -> 21.45, memory 26.29 -> 15.53 GB per GPU): the one cut after the sixth
# block of layer2 (stage 2, block 5), module 1 trained by 5 * L_recon + 1 * L_task (the
# published --ixx_r / --ixy_r); recipe of imagenet_resnet152_e2e.py.
#
# Auxiliary nets as in the papers' ImageNet code: the head (ConvPoolHead's defaults) is conv1x1 to
# 128, conv3x3 stride 2 to 256, conv3x3 stride 2 to 512, conv1x1 to 2048, pool, FC; the decoder
# (ProgressiveDecoder's defaults) conv1x1 (C -> 128), then three x2 upsamples with conv3x3
# 128 -> 32 -> 12 -> 3, back to 224x224 from the cut's stride 8.
_base_ = ['./imagenet_resnet152_e2e.py']
model = dict(
    split=dict(cuts=[(2, 5)]),
    local_objective=dict(type='InfoPro', loss_mode='softmax', lambda_recon=5, lambda_task=1,
                         head=dict(type='ConvPoolHead'), decoder=dict(type='ProgressiveDecoder')))
