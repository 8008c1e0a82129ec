"""The generic block reader on a fixed sample of timm architectures of each kind: the K modules
run in a row equal ``forward_features``, the blocks own exactly the parameters outside the head,
and one local training step runs."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from localvision.errors import InputError
from localvision.models.split import StagedTimm
from localvision.models.split.block_sequence import run_blocks, to_block_sequence

# (model name, timm kwargs, input size): small variants, small inputs where the model allows
FAST = [
    ('mobilenetv3_small_050', {}, 64),  # conv_stem/bn1 + blocks stages (head convs are the head)
    ('regnetx_002', {}, 64),  # stem, s1..s4 with named blocks b1..
    ('swin_tiny_patch4_window7_224', dict(img_size=64, window_size=4), 64),  # NHWC maps
    ('deit3_small_patch16_224', dict(img_size=64), 64),
    ('vgg11', {}, 32),  # no stage container: the chain's units are the blocks, pools run with the next
    ('dpn48b', {}, 64),  # units of a single ``features`` container, the final BnAct ends the last block
    ('levit_128s', {}, 224),  # ``flatten(2).transpose(1, 2)`` between the stem and the stages
    # read from the fx graph: blocks get the grid size, the state crosses cuts as an NCHW map
    ('twins_svt_small', dict(img_size=64), 64),
    # read from the fx graph: position embedding in the stem, class-attention blocks end the last block
    ('cait_xxs24_224', dict(img_size=64), 64),
]
SLOW = [
    ('efficientnet_b0', {}, 64),  # conv_head ends the last block (it changes channels), bn2 is the final norm
    ('resnext26ts', {}, 64),  # ByobNet
    ('fastvit_t8', {}, 64),  # stages called in a loop, final_conv
    ('poolformerv2_s12', {}, 64),  # MetaFormer
    ('vit_small_patch14_reg4_dinov2', dict(img_size=56), 56),  # register tokens
    ('eva02_tiny_patch14_224', dict(img_size=56), 56),  # RoPE passed to every block
    ('cspresnet50', {}, 64),
    ('nf_regnet_b0', {}, 64),
    ('maxvit_nano_rw_256', dict(img_size=128), 128),
    ('efficientformer_l1', {}, 224),  # tokens after the last downsample; attention biases fix the size
    ('beitv2_base_patch16_224', dict(img_size=64), 64),  # relative position bias per block
    ('legacy_xception', {}, 64),  # conv1..act2 stem, block1..block12, conv3 / conv4 as blocks
    ('inception_v3', {}, 96),  # Mixed_* blocks (75 px at least)
    ('inception_resnet_v2', {}, 96),  # the ``repeat`` Sequentials read element by element
    ('nest_tiny', dict(img_size=64), 64),  # ``norm(x.permute(...)).permute(...)`` after the levels
    ('swinv2_cr_tiny_224', dict(img_size=64, window_size=4), 64),  # NCHW <-> NHWC inside every stage
    # read from the fx graph
    ('convit_tiny', dict(img_size=64), 64),  # class token concatenated after the local blocks
    ('pit_ti_224', dict(img_size=64), 64),  # class token with the grid: sizes fixed, the stem checks them
    ('xcit_nano_12_p8_224', dict(img_size=64), 64),  # blocks called with (Hp, Wp)
    ('vit_relpos_small_patch16_224', dict(img_size=64), 64),  # relative position blocks
    ('hiera_tiny_224', dict(img_size=(64, 64)), 64),  # mask-unit unroll in the stem
    ('mvitv2_tiny', dict(img_size=64), 64),  # stages pass (x, feat_size)
    ('visformer_tiny', dict(img_size=64), 64),  # position embedding per stage
    ('volo_d1_224', dict(img_size=64), 64),  # outlookers, downsample between stages, class attention
]
SAMPLE = [pytest.param(*c, id=c[0]) for c in FAST] + [pytest.param(*c, id=c[0], marks=pytest.mark.slow) for c in SLOW]
TRAIN = [pytest.param(*c, id=c[0], marks=() if c in (FAST[0], FAST[-2]) else pytest.mark.slow)
         for c in FAST + SLOW[:6] + SLOW[-13:-12] + SLOW[-8:]]


def resplit(st: StagedTimm, k: int) -> StagedTimm:
    st.split_cfg = dict(st.split_cfg, num_modules=k)
    st.resolve_split()
    return st


@pytest.mark.parametrize('name,kwargs,size', SAMPLE)
def test_modules_in_a_row_equal_forward_features(name, kwargs, size):
    x = torch.randn(2, 3, size, size)
    st = StagedTimm(name, split=dict(strategy='equal', input_size=(3, size, size)), num_classes=5, **kwargs).eval()
    for k in (2, 4):
        resplit(st, k)
        with torch.no_grad():
            h = x
            for m in range(k):
                h = st.forward_module(m, h)
                fmap = st.to_map(h, (size, size))
                assert fmap.dim() == 4 and fmap.shape[1] == st.out_channels(m)
            torch.testing.assert_close(h, st.model.forward_features(x), rtol=0, atol=0)
    # the blocks and the final norm own every parameter forward_features uses, none of the head's
    seq = st.seq
    owned = {id(p) for info in seq.infos for p in info.parameters()} | {id(p) for p in seq.final_norm.parameters()}
    heads = st.model.get_classifier()
    head = {id(p) for m in (heads if isinstance(heads, tuple) else (heads,)) for p in m.parameters()}
    assert not owned & head
    st.model.forward_features(x).sum().backward()
    used = {id(p) for p in st.model.parameters() if p.grad is not None}
    assert used <= owned
    ids = [id(p) for k in range(st.num_modules) for p in st.module_parameters(k)]
    assert len(ids) == len(set(ids)) == len(list(st.model.parameters()))


@pytest.mark.parametrize('name,kwargs,size', TRAIN)
def test_one_local_training_step(name, kwargs, size):
    from mmengine.optim import OptimWrapper

    from localvision.cls import LocalImageClassifier
    from mmpretrain.structures import DataSample
    torch.manual_seed(0)
    model = LocalImageClassifier(
        backbone=dict(model_name=name, **kwargs), head=dict(type='LinearClsHead', num_classes=4),
        split=dict(num_modules=3, strategy='equal', input_size=(3, size, size)),
        local_objective=dict(type='InfoPro', lambda_recon=1.0, lambda_task=1.0, head=dict(type='PoolLinearHead')),
        data_preprocessor=dict(type='ImgDataPreprocessor', mean=[127.5] * 3, std=[64.0] * 3))
    g = torch.Generator().manual_seed(1)
    batch = dict(inputs=[torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8) for _ in range(2)],
                 data_samples=[DataSample().set_gt_label(i) for i in range(2)])
    before = [p.detach().clone() for p in model.parameters()]
    losses = model.train_step(batch, OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1)))
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_parallel_branches_are_refused_in_one_line():
    with pytest.raises(InputError, match='HighResolutionNet cannot be split') as err:
        StagedTimm('hrnet_w18_small', split=dict(num_modules=2, strategy='equal', input_size=(3, 64, 64)))
    assert 'from stage2.0 to stage4.0 its state is more than one tensor (parallel branches)' in str(err.value)
    assert '\n' not in str(err.value)


# -- chains without a stage container: read unit by unit ---------------------------------------------
class _Chain(nn.Module):
    """A tiny timm-like model whose ``forward_features`` runs ``self.features`` (a chain)."""
    pretrained_cfg = dict(input_size=(3, 32, 32))

    def __init__(self, *mods: nn.Module) -> None:
        super().__init__()
        self.features = nn.Sequential(*mods)

    def forward_features(self, x):
        return self.features(x)


class _Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return self.conv(x), x


class _Unpair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)

    def forward(self, xs):
        return self.conv(xs[0] + xs[1])


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)

    def forward(self, x):
        return self.conv2(self.conv1(x).relu())


def test_unit_by_unit_reading_of_a_chain():
    """Single convs lead (the stem), a pool runs with the block after, a norm / activation with the
    block before, a stage starts where the resolution halves; blocks in a row equal the forward."""
    model = _Chain(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3),
                   nn.MaxPool2d(2), _Block(8, 16), nn.ReLU(), _Block(16, 16), _Block(16, 32, stride=2),
                   nn.BatchNorm2d(32)).eval()
    seq = to_block_sequence(model)
    f = model.features
    assert [(i.stage, i.index_in_stage, i.name) for i in seq.infos] == [
        (0, 0, 'stem'), (1, 0, 'features.5'), (1, 1, 'features.7'), (2, 0, 'features.8')]
    assert [i.modules for i in seq.infos] == [[f[0], f[1], f[2], f[3]], [f[4], f[5], f[6]], [f[7]], [f[8], f[9]]]
    assert isinstance(seq.final_norm, nn.Identity) and seq.index_of((2, 0)) == 3
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(run_blocks(seq, x, 0, len(seq) - 1, True), model.forward_features(x),
                                   rtol=0, atol=0)


def test_vgg_stages_follow_the_output_stride():
    st = StagedTimm('vgg11', split=dict(num_modules=2, strategy='equal', input_size=(3, 32, 32)))
    assert [(i.stage, i.reduction) for i in st.seq.infos] == [
        (0, 1), (1, 2), (2, 4), (2, 4), (3, 8), (3, 8), (4, 16), (4, 32)]
    assert st.level_blocks == [1, 3, 5, 7]


@pytest.mark.parametrize('model,why', [
    (_Chain(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()), 'it runs 1 submodule'),
    (_Chain(nn.Conv2d(3, 8, 3), _Pair(), _Unpair()), 'features.1 outputs a tuple, not a tensor'),
], ids=['one-unit', 'tuple'])
def test_chains_that_cannot_be_read_unit_by_unit_are_refused_in_one_line(model, why):
    with pytest.raises(InputError, match='_Chain cannot be split: no stem and blocks found') as err:
        to_block_sequence(model)
    assert why in str(err.value) and '\n' not in str(err.value)


class _Tokens(nn.Module):
    """Layout changes between submodules: ``stem -> flatten/transpose -> blocks -> norm -> transpose``."""
    pretrained_cfg = dict(input_size=(3, 16, 16))

    def __init__(self, reshape: bool = False) -> None:
        super().__init__()
        self.reshape = reshape
        self.stem = nn.Conv2d(3, 8, 4, 4)
        self.blocks = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
        self.norm = nn.LayerNorm(8)

    def forward_features(self, x):
        x = self.stem(x)
        x = x.reshape(x.shape[0], 8, -1).transpose(1, 2) if self.reshape else x.flatten(2).transpose(1, 2)
        return self.norm(self.blocks(x)).transpose(1, 2)


def test_layout_changes_between_submodules_run_with_the_blocks():
    model = _Tokens().eval()
    seq = to_block_sequence(model)
    assert [i.name for i in seq.infos] == ['stem', 'blocks.0', 'blocks.1']
    assert [type(m).__name__ for m in seq.infos[0].modules] == ['Conv2d', '_Layout']
    assert [type(m).__name__ for m in seq.infos[-1].modules] == ['Linear', 'LayerNorm', '_Layout']
    for size in (16, 32):  # replayed on any input size
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            torch.testing.assert_close(run_blocks(seq, x, 0, len(seq) - 1, True), model.forward_features(x),
                                       rtol=0, atol=0)
    # a reshape to sizes read off the input is no layout change: the fx graph reader takes it, for any size
    model = _Tokens(reshape=True).eval()
    seq = to_block_sequence(model)
    assert [i.name for i in seq.infos] == ['stem', 'blocks.0', 'blocks.1']
    for size in (16, 32):
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            torch.testing.assert_close(run_blocks(seq, x, 0, len(seq) - 1, True), model.forward_features(x),
                                       rtol=0, atol=0)


@pytest.mark.slow
def test_balanced_split_and_contsup_on_a_graph_read_model():
    """Twins (read from its fx graph): balanced cuts from the profiled blocks, ContSup R1E context and
    InfoPro at every cut, one local step with every module's loss."""
    from mmengine.optim import OptimWrapper

    from localvision.cls import LocalImageClassifier
    from mmpretrain.structures import DataSample
    torch.manual_seed(0)
    model = LocalImageClassifier(
        backbone=dict(model_name='twins_svt_small', img_size=64), head=dict(type='LinearClsHead', num_classes=4),
        split=dict(num_modules=3, strategy='balanced', input_size=(3, 64, 64)),
        local_objective=dict(type='InfoPro', lambda_recon=1.0, lambda_task=1.0, head=dict(type='PoolLinearHead')),
        context=dict(type='ContSup', variant='R1E'),
        data_preprocessor=dict(type='ImgDataPreprocessor', mean=[127.5] * 3, std=[64.0] * 3))
    assert len(model.backbone.cuts) == 2
    g = torch.Generator().manual_seed(1)
    batch = dict(inputs=[torch.randint(0, 256, (3, 64, 64), generator=g, dtype=torch.uint8) for _ in range(2)],
                 data_samples=[DataSample().set_gt_label(i) for i in range(2)])
    losses = model.train_step(batch, OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1)))
    assert {'m0.loss_recon', 'm0.loss_cls', 'm1.loss_recon', 'm1.loss_cls', 'loss_cls'} <= set(losses)
    assert all(torch.isfinite(v).all() for v in losses.values())
