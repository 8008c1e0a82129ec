# Module-parallel training, K=2: ResNet-32 cut into two modules of equal block counts (equal
# compute: CIFAR ResNet blocks all cost the same FLOPs), one process each.
#   tools/dist_train.sh configs/cls/cifar_resnet32_shapes_greedy_k2_pipeline.py 2
_base_ = ['./cifar_resnet32_shapes_greedy_k4.py']
model = dict(split=dict(cuts=None, num_modules=2, strategy='equal'))
pipeline = dict(schedule='sync', micro_batches=4, queue_size=2, replicas=1)
