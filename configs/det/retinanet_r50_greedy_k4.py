# Greedy supervised local learning: each local module trained by the dense detection head only
# (no reconstruction term).
_base_ = ['./retinanet_r50_infopro_k4.py']
model = dict(local_objective=dict(_delete_=True, type='DetGreedy'))
