# ResNet-110 on CIFAR-10, DGL (greedy cross-entropy through DGL's auxiliary net), K=8;
# cuts and recipe of cifar_resnet110_greedy_k8.py.
_base_ = ['./cifar_resnet110_greedy_k8.py']
model = dict(local_objective=dict(_delete_=True, type='DGL'))
