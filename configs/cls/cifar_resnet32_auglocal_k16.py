# ResNet-32 on CIFAR-10, AugLocal (Ma et al., ICLR 2024) with K=16: module k's auxiliary net is d_k new copies of
# blocks sampled uniformly after its cut, then pool + linear (cross-entropy only). From ChenxiangMA/AugLocal:
# cuts: networks/configs.py network_config['resnet32'][16]: the stem, then every block up to (3, 3) (the greedy K=16 cuts)
# d=2, pyramid tau=0.5: README.md's ResNet32 command (--aux_net_depth 2 --pyramid --pyramid_coeff 0.5; run.sh: d=1/3/5)
# 400 epochs, batch 1024, lr 0.8, cosine after a 10-epoch warm-up: run.sh (--epochs 400 --batch_size 1024 --cos_lr)
# nearest: the code's depth-1 aux nets put a BatchNorm1d before the linear layer (PoolLinearHead has none), and it
# builds sampled blocks with the stride folded in where ours bridge widths with a conv1x1-BN adapter.
_base_ = ['./cifar_resnet32_greedy_k16.py']
model = dict(local_objective=dict(_delete_=True, type='AugLocal', depth=2, pyramid=0.5))
param_scheduler = [dict(type='LinearLR', start_factor=0.01 / 0.8, by_epoch=True, begin=0, end=11),
                   dict(type='CosineAnnealingLR', T_max=400, by_epoch=True, begin=0, end=400)]
train_cfg = dict(max_epochs=400)
