# RetinaNet R50 (mmdet's COCO 1x, from scratch) as K=4 modules trained by MAN++ (Su et al., TPAMI 2026): module k's
# auxiliary net is s * LB(x) + (2 - s) * EMA(x) (a learnable and an EMA copy of the next module's first block, s
# learnable from 1), then a light dense detection head. From JunhaoSu0/MAN_PlusPlus, Exp_on_COCO:
# cuts at the stage ends (1,2) (2,3) (3,5): networks/resnet_man.py (stem + layer1 | layer2 | layer3 | layer4)
# momentum 0.995, learnable scale s: networks/resnet_man.py, README.md (--momentum-manpp 0.995)
# 256-wide aux head with two convs: networks/retinanet.py AuxiliaryDetectionHead (--aux-head-convs 2, fpn_channels 256)
# nearest: the code's aux head is anchor-based (focal + box loss, one head per stride; the last on P5-P7), here
#   DetGreedy's anchor-free head (focal + GIoU) at the map's stride. Recipe: mmdet's 1x (the code's 90k iterations
#   at batch 16, lr 0.01, steps at 60k/80k).
_base_ = ['./retinanet_r50_infopro_k4.py']
model = dict(split=dict(cuts=[(1, 2), (2, 3), (3, 5)]),
             local_objective=dict(_delete_=True, type='MAN', momentum=0.995, learnable_scale=True,
                                  base=dict(type='DetGreedy', head=dict(type='DenseDetAuxHead', channels=256))))
