# ResNet-32 on CIFAR-10, HPFF (ECCV 2024) on InfoPro, the paper's "K=16": local module k gets 0.001 x a classifier
# on its own output + 0.999 x InfoPro on the output of modules k and k+1 together (cascade), whose auxiliary nets
# run on 2x2 patches. From Zeudfish/HPFF, 'Exp on CIFAR_SVHN_STL':
# cuts: network/config.py InfoPro['resnet32'][16] lists 15 module ends (1,0)..(3,4): the stem joins block (1,0),
#   so the code trains 15 modules (14 cuts), not the 16 of InfoPro's table
# InfoPro softmax, lambdas (5, 0.5) -> (0, 0): README.md's command (--local_loss_mode cross_entropy --ixx_1 5 --ixy_1 0.5
#   --ixx_2 0 --ixy_2 0 --aux_net_feature_dim 128)
# per-module lambdas as network/resnetInfoPro_HPFF.py computes them: the cascade ending at module i uses ratio
#   i / (16 - 2), i = k + 1; the last cascade (modules 13, 14) is the network's classifier's cross-entropy there:
#   here lambda_recon 0, lambda_task 1 through the cascade's own classifier (hpff.py's documented difference)
# weights 0.001 / 0.999 (wx, wy) and 2x2 patches (the decoder's four quadrants): network/resnetInfoPro_HPFF.py
# 400 epochs, batch 1024, lr 0.8, cosine after a 10-epoch warm-up: train.py's training_configurations (--cos_lr)
# nearest: ConvFCHead ('1c2f') for train.py's default '2c2f' classifier (two convs); the code patches only the
# decoder (one per quadrant) and has no independent term on module 0, here the patches share one decoder, the
# cascade's classifier runs on the patches too and module 0 has the 0.001 independent term.
_base_ = ['./cifar_resnet32_e2e.py']
model = dict(split=dict(cuts=[(s, b) for s in (1, 2, 3) for b in range(5)][:-1]),
             local_objective=dict(_delete_=True, type='HPFF', independent=dict(type='Greedy', head=dict(type='ConvFCHead')),
                                  independent_weight=0.001, cascade_weight=0.999, patches=2, base=dict(
                                      type='InfoPro', loss_mode='softmax',
                                      lambda_recon=[5 * (1 - i / 14) for i in range(1, 14)] + [0],
                                      lambda_task=[0.5 * (1 - i / 14) for i in range(1, 14)] + [1])))
param_scheduler = [dict(type='LinearLR', start_factor=0.01 / 0.8, by_epoch=True, begin=0, end=11),
                   dict(type='CosineAnnealingLR', T_max=400, by_epoch=True, begin=0, end=400)]
train_cfg = dict(max_epochs=400)
