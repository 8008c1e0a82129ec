# ResNet-110 on CIFAR-10, MAN (Su et al., ECCV 2024) on InfoPro, the papers' "K=55". From JunhaoSu0/MAN,
# 'Exp on CIFAR-SVHN-STL' (K=55 for ResNet-110: JunhaoSu0/MAN_PlusPlus Exp_on_CIFAR-SVHN-STL/README.md):
# cuts: networks/config.py InfoPro['resnet110'][55] lists 54 module ends (1,0)..(3,17): the stem joins block (1,0),
#   so the code trains 54 modules (53 cuts)
# momentum 0.995, InfoPro softmax, lambdas (5, 0.5) -> (0, 0): MAN's README.md command (given for ResNet-32; no
#   ResNet-110 lambdas are published in MAN's code; HPFF's ResNet-110 K=55 command uses the same)
# per-module lambdas as networks/resnetInfoPro_MAN.py computes them: ratio = s / (55 - 2), s the stage of the next
#   module's first block
# 400 epochs, batch 1024, lr 0.8, cosine after a 10-epoch warm-up: train.py's training_configurations (--cos_lr)
# nearest: ConvFCHead ('1c2f') for train.py's default '2c2f' classifier (two convs).
_base_ = ['./cifar_resnet110_e2e.py']
model = dict(split=dict(cuts=[(s, b) for s in (1, 2, 3) for b in range(18)][:-1]),
             local_objective=dict(_delete_=True, type='MAN', momentum=0.995, base=dict(
                 type='InfoPro', loss_mode='softmax',
                 lambda_recon=[5 * (1 - s / 53) for s in [1] * 17 + [2] * 18 + [3] * 18],
                 lambda_task=[0.5 * (1 - s / 53) for s in [1] * 17 + [2] * 18 + [3] * 18])))
param_scheduler = [dict(type='LinearLR', start_factor=0.01 / 0.8, by_epoch=True, begin=0, end=11),
                   dict(type='CosineAnnealingLR', T_max=400, by_epoch=True, begin=0, end=400)]
train_cfg = dict(max_epochs=400)
