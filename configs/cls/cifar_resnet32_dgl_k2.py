# ResNet-32 on CIFAR-10, DGL (greedy cross-entropy through DGL's auxiliary net), K=2;
# cuts and recipe of cifar_resnet32_greedy_k2.py.
_base_ = ['./cifar_resnet32_greedy_k2.py']
model = dict(local_objective=dict(_delete_=True, type='DGL'))
