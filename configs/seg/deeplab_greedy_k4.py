# Greedy supervised local learning: each local module trained by an auxiliary segmentation
# head only (no reconstruction term).
_base_ = ['./deeplab_infopro_k4.py']
model = dict(local_objective=dict(_delete_=True, type='SegGreedy'))
