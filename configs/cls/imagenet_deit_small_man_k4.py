# DeiT-S on ImageNet-1k at 224, MAN++ (Su et al., TPAMI 2026) with K=4: module k's auxiliary net is
# s * LB(x) + (2 - s) * EMA(x) (a learnable and an EMA copy of the next module's first block, s learnable from 1),
# then pool + linear (cross-entropy). From JunhaoSu0/MAN_PlusPlus, Exp_on_ImageNet/networks/vit_man.py:
# cuts after blocks 2, 5, 8: K=4 groups of depth // K = 3 blocks
# momentum 0.995, learnable scale s: vit_man.py (MANPPVisionTransformer, MANPPAuxClassifier); cross-entropy only
# nearest: the code's auxiliary net adds a second learnable block (MANPP_VIT_AUX_DEPTH = 2) and reads the class token
#   after a LayerNorm; here one block pair and PoolLinearHead on the pooled patch tokens.
# recipe: DeiT's, of imagenet_deit_small_e2e.py (comparable with the E2E and InfoPro configs); imagenet_DDP_vit.py
#   trains 90 epochs with AdamW lr 1e-3 at batch 1024, weight decay 0.05, crop + flip only.
_base_ = ['./imagenet_deit_small_infopro_k4.py']
model = dict(split=dict(cuts=[(1, 2), (1, 5), (1, 8)]),
             local_objective=dict(_delete_=True, type='MAN', momentum=0.995, learnable_scale=True,
                                  base=dict(type='Greedy', head=dict(type='PoolLinearHead'))))
