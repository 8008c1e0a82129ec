# ResNet-110 on CIFAR-10, AugLocal (Ma et al., ICLR 2024) with K=55: every block its own module. From ChenxiangMA/AugLocal:
# cuts: networks/configs.py network_config['resnet110'][55]: the stem, then every block up to (3, 16)
# d=3, pyramid tau=0.5: README.md's ResNet110 command (--aux_net_depth 3 --pyramid --pyramid_coeff 0.5)
# 400 epochs, batch 1024, lr 0.8, cosine after a 10-epoch warm-up: run.sh (--epochs 400 --batch_size 1024 --cos_lr)
# nearest: as cifar_resnet32_auglocal_k16.py (no BatchNorm1d in the depth-1 heads, conv1x1-BN width adapters).
_base_ = ['./cifar_resnet110_e2e.py']
model = dict(split=dict(cuts=[(0, 0)] + [(s, b) for s in (1, 2, 3) for b in range(18)][:-1]),
             local_objective=dict(_delete_=True, type='AugLocal', depth=3, pyramid=0.5))
param_scheduler = [dict(type='LinearLR', start_factor=0.01 / 0.8, by_epoch=True, begin=0, end=11),
                   dict(type='CosineAnnealingLR', T_max=400, by_epoch=True, begin=0, end=400)]
train_cfg = dict(max_epochs=400)
