# ResNet-110 on CIFAR-10, HPFF (ECCV 2024) on InfoPro, the paper's "K=55" (see cifar_resnet32_hpff_k16.py for the
# method). From Zeudfish/HPFF, 'Exp on CIFAR_SVHN_STL':
# cuts: network/config.py InfoPro['resnet110'][55] lists 54 module ends (1,0)..(3,17): the stem joins block (1,0),
#   so the code trains 54 modules (53 cuts)
# InfoPro softmax, lambdas (5, 0.5) -> (0, 0): README.md's ResNet-110 K=55 command (--ixx_1 5 --ixy_1 0.5 --ixx_2 0 --ixy_2 0)
# per-module lambdas as network/resnetInfoPro_HPFF.py computes them: ratio i / (55 - 2), i = k + 1; the last cascade
#   ends in the network's classifier there (here lambda_recon 0, lambda_task 1 through the cascade's classifier)
# weights 0.001 / 0.999 and 2x2 patches: network/resnetInfoPro_HPFF.py; 400 epochs: train.py (--cos_lr)
# nearest: as cifar_resnet32_hpff_k16.py (ConvFCHead for '2c2f', patches on both aux nets, module 0's independent term).
_base_ = ['./cifar_resnet110_e2e.py']
model = dict(split=dict(cuts=[(s, b) for s in (1, 2, 3) for b in range(18)][:-1]),
             local_objective=dict(_delete_=True, type='HPFF', independent=dict(type='Greedy', head=dict(type='ConvFCHead')),
                                  independent_weight=0.001, cascade_weight=0.999, patches=2, base=dict(
                                      type='InfoPro', loss_mode='softmax',
                                      lambda_recon=[5 * (1 - i / 53) for i in range(1, 53)] + [0],
                                      lambda_task=[0.5 * (1 - i / 53) for i in range(1, 53)] + [1])))
param_scheduler = [dict(type='LinearLR', start_factor=0.01 / 0.8, by_epoch=True, begin=0, end=11),
                   dict(type='CosineAnnealingLR', T_max=400, by_epoch=True, begin=0, end=400)]
train_cfg = dict(max_epochs=400)
