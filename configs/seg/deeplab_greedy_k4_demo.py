# The demo with greedy local learning: the InfoPro demo's auxiliary segmentation head (32 channels)
# without its reconstruction decoder, so the two differ only in InfoPro's reconstruction term.
_base_ = ['./deeplab_infopro_k4_demo.py']
model = dict(local_objective=dict(_delete_=True, type='SegGreedy', head=dict(type='SegAuxHead', channels=32)))
