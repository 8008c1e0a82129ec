# ResNet-32 on CIFAR-10, ContSup R1E (context supply at every cut) on greedy local learning, K=4.
_base_ = ['./cifar_resnet32_greedy_k4.py']
model = dict(context=dict(type='ContSup', variant='R1E'))
