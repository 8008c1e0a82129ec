# ResNet-32 on CIFAR-10, InfoPro (softmax) with K=4: lambda_recon * L_recon + lambda_task * CE,
# lambdas (first, last local module) from the InfoPro paper; cuts and recipe of cifar_resnet32_greedy_k4.py.
_base_ = ['./cifar_resnet32_greedy_k4.py']
model = dict(local_objective=dict(_delete_=True, type='InfoPro', loss_mode='softmax',
                                  lambda_recon=(6, 1), lambda_task=(0, 2)))
