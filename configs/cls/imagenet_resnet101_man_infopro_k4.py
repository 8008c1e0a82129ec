# ResNet-101 on ImageNet-1k, MAN (Su et al., ECCV 2024; error 21.73 vs 22.03 E2E) on InfoPro with K=4: module k's
# auxiliary net is LB(x) + EMA(x) (a learnable and an EMA copy of the next module's first block), then InfoPro's
# ImageNet decoder and classifier.
# cuts (2,2) (3,8) (3,16): JunhaoSu0/MAN_PlusPlus Exp_on_ImageNet/networks/configs.py Layer['resnet101'][4]
#   (MAN's own code, JunhaoSu0/MAN, lists only K=2)
# momentum 0.995, y = LB + EMA (no scale): JunhaoSu0/MAN 'Exp on ImageNet' README.md (--momentum_MAN 0.995),
#   networks/resnetInfoPro_MAN.py
# lambdas 5 (recon) and 0.75 (task) for every module: networks/resnetInfoPro_MAN.py (loss_ixy1 * 5 + loss_ixy2 * 0.75)
# aux nets per width as networks/InfoProAux.py: at 512 channels the head 128-256-512-2048 and decoder 128-32-12, at
#   1024 the head 256-256-512-2048 and decoder 192-64-32-12 (nearest: the code's 192 -> 64 conv is 1x1, here 3x3)
# recipe of imagenet_resnet101_e2e.py (lr 0.4 at batch 1024, 90 epochs: MAN_PlusPlus README.md's ImageNet command)
_base_ = ['./imagenet_resnet101_infopro_k2.py']
model = dict(
    split=dict(cuts=[(2, 2), (3, 8), (3, 16)]),
    local_objective=[dict(type='MAN', momentum=0.995, base=dict(
        type='InfoPro', loss_mode='softmax', lambda_recon=5, lambda_task=0.75,
        head=dict(type='ConvPoolHead', widths=(w, 256, 512, 2048)), decoder=dict(type='ProgressiveDecoder', widths=d)))
        for w, d in ((128, (128, 32, 12)), (256, (192, 64, 32, 12)), (256, (192, 64, 32, 12)))])
