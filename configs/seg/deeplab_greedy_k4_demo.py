# The demo with greedy local learning (aux segmentation head only, no reconstruction).
_base_ = ['./deeplab_infopro_k4_demo.py']
model = dict(local_objective=dict(_delete_=True, type='SegGreedy', head=dict(type='SegAuxHead', channels=64)))
