# ResNet-110 on CIFAR-10, ContSup R1E (context supply at every cut) on greedy local learning, K=8.
_base_ = ['./cifar_resnet110_greedy_k8.py']
model = dict(context=dict(type='ContSup', variant='R1E'))
