# The instance-segmentation demo with greedy local learning: K=2, module 0 trained by the dense
# detection head alone (DetGreedy: no reconstruction, no mask term).
_base_ = ['./mask_rcnn_r18_infopro_k2_demo.py']
model = dict(local_objective=dict(_delete_=True, type='DetGreedy', head=dict(type='DenseDetAuxHead', channels=64)))
