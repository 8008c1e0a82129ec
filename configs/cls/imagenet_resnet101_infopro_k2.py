# ResNet-101 on ImageNet-1k, InfoPro* with K=2 (Wang et al., ICLR 2021, ImageNet experiments;
# top-1 error 22.03 E2E -> 21.85, memory 19.71 -> 12.06 GB per GPU): the one cut after the first
# block of layer2 (stage 2, block 0), module 1 trained by 5 * L_recon + 0.75 * L_task (the
# published --ixx_r / --ixy_r); recipe of imagenet_resnet101_e2e.py.
#
# Auxiliary nets. The papers' ImageNet head is four conv-BN-ReLU (1x1 to 128, 3x3 s2 to 256,
# 3x3 s2 to 512, 1x1 to 2048), pool, FC; its decoder conv1x1 (C -> 128), then three x2 upsamples
# with conv3x3 128 -> 32 -> 12 -> 3. Neither is expressible with the aux heads of
# localvision/models/objectives: the closest are used:
# - head: DGLHead (conv3x3-BN-ReLU layers, pool, one FC): two 3x3 convs of 128 channels
#   (in_channels * 0.25) at the module's resolution, global pool, FC; no strides, no 2048 widening;
# - decoder: ReconDecoder (the CIFAR decoder: bilinear upsample to 224x224 first, conv3x3 -> 12,
#   conv3x3 -> 3), which keeps the upsampled 512-channel map at full resolution and so costs far
#   more activation memory than the papers' decoder. The papers' decoder is SegReconDecoder
#   (localvision.seg), which cannot be used here without importing mmseg.
_base_ = ['./imagenet_resnet101_e2e.py']
model = dict(
    split=dict(cuts=[(2, 0)]),
    local_objective=dict(type='InfoPro', loss_mode='softmax', lambda_recon=5, lambda_task=0.75,
                         head=dict(type='DGLHead', num_convs=2, width_mult=0.25, pool_size=1),
                         decoder=dict(type='ReconDecoder')))
