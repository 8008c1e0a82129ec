# Module-parallel training of the demo job: ResNet-32, K=4 greedy modules at the published cuts,
# one process per module, micro-batches streamed forward (no backward communication).
#   tools/dist_train.sh configs/cls/cifar_resnet32_shapes_greedy_k4_pipeline.py 4
# Global batch 64 (train_dataloader.batch_size) in 4 micro-batches of 16; the synchronous schedule
# gives the same parameters as single-process training with those micro-batches.
_base_ = ['./cifar_resnet32_shapes_greedy_k4.py']
pipeline = dict(schedule='sync', micro_batches=4, queue_size=2, replicas=1)
