"""What crosses each cut and who owns what (one process, no process group)."""
import torch

from localvision.engine.pipeline.stage import fields_to_send, ownership, release_foreign, trace_units
from localvision.engine.pipeline.transport import pack, unpack
from localvision.cls import LocalImageClassifier
from mmpretrain.structures import DataSample


def model(**kw):
    torch.manual_seed(0)
    return LocalImageClassifier(
        backbone=dict(model_name='cifar_resnet20'), head=dict(type='LinearClsHead', num_classes=4), split=dict(cuts=[3, 6], input_size=(3, 32, 32)),
        data_preprocessor=dict(type='ImgDataPreprocessor', mean=[127.5] * 3, std=[64.0] * 3), **kw)


def batch(m):
    data = m.data_preprocessor(dict(inputs=[torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8) for _ in range(4)],
                                    data_samples=[DataSample().set_gt_label(i % 4) for i in range(4)]), True)
    return data['inputs'], data['data_samples']


def test_greedy_sends_only_the_labels_and_image_size_with_the_activation():
    m = model(local_objective=dict(type='Greedy', head=dict(type='PoolLinearHead')))
    t = trace_units(m, *batch(m))
    # module 1's head maps tokens/maps by size; the last module: the mmpretrain head's loss (data samples)
    assert sorted(fields_to_send(t['reads'], 0)) == ['data_samples', 'img_hw', 'targets']
    assert sorted(fields_to_send(t['reads'], 1)) == ['data_samples', 'img_hw']


def test_infopro_and_contsup_e_need_the_image_and_pixel_statistics():
    m = model(local_objective=dict(type='InfoPro', loss_mode='softmax', lambda_recon=(5, 1), lambda_task=(1, 1)),
              context=dict(type='ContSup', variant='R1E'))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    t = trace_units(m, *batch(m))
    sent = fields_to_send(t['reads'], 0)
    assert {'inputs', 'targets', 'pixel_mean', 'pixel_std', 'img_hw'} <= set(sent)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # traced on a copy
    param_owner, key_owner, unclaimed = ownership(m, t['callers'])
    assert set(key_owner) >= set(m.state_dict())
    assert key_owner['context.cuts.0.encoder.bn1.running_mean'] == 1  # the cut before module 1 is module 1's
    assert key_owner['objectives.1.decoder.0.weight' if 'objectives.1.decoder.0.weight' in key_owner else
                     next(k for k in key_owner if k.startswith('objectives.1.'))] == 1
    assert key_owner['head.fc.weight'] == 2
    freed = release_foreign(m, param_owner, key_owner, 1, keep=unclaimed)
    assert freed > 0 and m.head.fc.weight.numel() == 0 and m.data_preprocessor.mean.numel() == 3


def test_pack_round_trip_keeps_nesting_and_values():
    obj = dict(h=torch.randn(2, 3), ctx=dict(targets=torch.tensor([1, 2]), img_hw=(32, 32)),
               extras={'contsup.inputs': {0: torch.ones(1)}})
    skeleton, tensors = pack(obj)
    assert len(tensors) == 3
    back = unpack(skeleton, tensors)
    assert back['ctx']['img_hw'] == (32, 32) and torch.equal(back['extras']['contsup.inputs'][0], torch.ones(1))
