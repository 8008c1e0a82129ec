# ResNet-32 on CIFAR-10, InfoPro (softmax) with K=8: lambda_recon * L_recon + lambda_task * CE,
# lambdas (first, last local module) from the InfoPro paper; cuts and recipe of cifar_resnet32_greedy_k8.py.
_base_ = ['./cifar_resnet32_greedy_k8.py']
model = dict(local_objective=dict(_delete_=True, type='InfoPro', loss_mode='softmax',
                                  lambda_recon=(5, 0), lambda_task=(0, 2)))
