# ResNet-32 on CIFAR-10, MAN (Su et al., ECCV 2024) on InfoPro, the paper's "K=16": module k's auxiliary net is
# LB(x) + EMA(x) (a learnable and an EMA copy of the next module's first block), then InfoPro's decoder and
# classifier. From JunhaoSu0/MAN, 'Exp on CIFAR-SVHN-STL':
# cuts: networks/config.py InfoPro['resnet32'][16] lists 15 module ends (1,0)..(3,4): the stem joins block (1,0),
#   so the code trains 15 modules (14 cuts), not the 16 of InfoPro's table
# momentum 0.995, InfoPro softmax, lambdas (5, 0.5) -> (0, 0): README.md's command (--momentum 0.995 --ixx_1 5
#   --ixy_1 0.5 --ixx_2 0 --ixy_2 0 --local_loss_mode cross_entropy)
# per-module lambdas as networks/resnetInfoPro_MAN.py computes them: ratio = s / (16 - 2), s the stage of the next
#   module's first block (never 1, so no module gets both lambdas 0)
# 400 epochs, batch 1024, lr 0.8, cosine after a 10-epoch warm-up: train.py's training_configurations (--cos_lr)
# nearest: train.py's default classifier is '2c2f' (two convs); ConvFCHead ('1c2f') has one. The decoder is the code's.
_base_ = ['./cifar_resnet32_e2e.py']
model = dict(split=dict(cuts=[(s, b) for s in (1, 2, 3) for b in range(5)][:-1]),
             local_objective=dict(_delete_=True, type='MAN', momentum=0.995, base=dict(
                 type='InfoPro', loss_mode='softmax',
                 lambda_recon=[5 * (1 - s / 14) for s in [1] * 4 + [2] * 5 + [3] * 5],
                 lambda_task=[0.5 * (1 - s / 14) for s in [1] * 4 + [2] * 5 + [3] * 5])))
param_scheduler = [dict(type='LinearLR', start_factor=0.01 / 0.8, by_epoch=True, begin=0, end=11),
                   dict(type='CosineAnnealingLR', T_max=400, by_epoch=True, begin=0, end=400)]
train_cfg = dict(max_epochs=400)
