# ResNet-101 on ImageNet-1k, AugLocal (Ma et al., ICLR 2024) with K=34: every block its own module, module k's
# auxiliary net d new copies of blocks sampled uniformly after its cut, then pool + linear (cross-entropy only).
# From ChenxiangMA/AugLocal, exp_imagenet:
# cuts: networks/configs.py network_config['resnet101'][34]: the stem, then every block up to (4, 1)
# d=4: run.sh's ImageNet command (given for ResNet-34 K=17; the code has no ResNet-101 command, so its d is a guess)
# no pyramid (tau=0): networks/resnet.py's is_pyramid defaults to False and imagenet_DDP.py never sets it
# recipe of imagenet_resnet101_e2e.py = imagenet_DDP.py's defaults: SGD Nesterov lr 0.4 at batch 1024, weight decay
#   1e-4, cosine per epoch, 90 epochs (run.sh trains ResNet-34 200 epochs)
# nearest: the code builds sampled blocks with the stride folded in where ours bridge widths with a conv1x1-BN adapter.
_base_ = ['./imagenet_resnet101_e2e.py']
model = dict(split=dict(cuts=[(0, 0)] + [(s, b) for s, n in ((1, 3), (2, 4), (3, 23), (4, 3)) for b in range(n)][:-1]),
             local_objective=dict(type='AugLocal', depth=4, pyramid=0.0))
