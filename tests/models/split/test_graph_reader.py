"""The fx graph reader: models whose ``forward_features`` does more between its blocks than call
them on the previous output (position embeddings, class tokens, sizes passed to blocks, tables
computed from the grid) are cut where one tensor carries the state."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from localvision.errors import InputError
from localvision.models.split.block_sequence import run_blocks, to_block_sequence


class _Mlp(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc = nn.Linear(c, c)

    def forward(self, x, size=None, table=None):
        if size is not None:  # a sized block: a depthwise conv on the grid, as Twins' / PVT's
            b, n, c = x.shape
            k = n - size[0] * size[1]  # class token first
            grid = x[:, k:].transpose(1, 2).reshape(b, c, size[0], size[1])
            x = x + torch.cat((x[:, :k], grid.flatten(2).transpose(1, 2)), dim=1)
        if table is not None:
            x = x + table
        return x + self.fc(x).relu()


class _TokenNet(nn.Module):
    """A ViT-like model: patch embed, class token and position embedding added in ``forward_features``
    (not a submodule), blocks, norm; ``sized`` passes the grid size to every block, ``table`` a
    table computed from the grid alone, ``shared`` one linear layer to every block."""
    pretrained_cfg = dict(input_size=(3, 32, 32))

    def __init__(self, sized: bool = False, table: bool = False, shared: bool = False, cls: bool = True,
                 training_branch: bool = False) -> None:
        super().__init__()
        self.sized, self.table, self.training_branch = sized, table, training_branch
        self.patch = nn.Conv2d(3, 8, 4, 4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, 8)) if cls else None
        self.pos_embed = nn.Parameter(torch.randn(1, 8, 1, 1))
        self.pos_drop = nn.Dropout(0.0)
        self.blocks = nn.ModuleList(_Mlp(8) for _ in range(4))
        if shared:
            for b in self.blocks:
                b.shared = self.blocks[0].fc
        self.norm = nn.LayerNorm(8)

    def forward_features(self, x):
        x = self.patch(x) + self.pos_embed
        h, w = x.shape[2], x.shape[3]
        x = x.flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        if self.training_branch and self.training:
            x = x * 2
        x = self.pos_drop(x)
        n = h * w + (self.cls_token is not None)
        table = torch.arange(n, dtype=x.dtype, device=x.device).reshape(1, n, 1) / n if self.table else None
        for blk in self.blocks:
            x = blk(x, size=(h, w) if self.sized else None, table=table)
        if self.sized:  # back to a map: the grid is needed up to the end
            x = x[:, x.shape[1] - h * w:].transpose(1, 2).reshape(x.shape[0], 8, h, w)
            return self.norm(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(x.shape[0], 8, h, w)
        return self.norm(x)


def _exact(model, seq, sizes):
    for s in sizes:
        x = torch.randn(2, 3, s, s)
        with torch.no_grad():
            torch.testing.assert_close(run_blocks(seq, x, 0, len(seq) - 1, True), model.forward_features(x),
                                       rtol=0, atol=0)


def test_position_embedding_and_class_token_run_with_the_stem():
    model = _TokenNet().eval()
    seq = to_block_sequence(model)
    assert [(i.stage, i.index_in_stage, i.name) for i in seq.infos] == [
        (0, 0, 'stem'), (1, 0, 'blocks.0'), (1, 1, 'blocks.1'), (1, 2, 'blocks.2'), (1, 3, 'blocks.3')]
    # the stem owns the patch embed and the two parameters added in forward_features
    stem = {id(p) for p in seq.infos[0].parameters()}
    assert {id(model.cls_token), id(model.pos_embed), id(model.patch.weight)} <= stem
    assert list(seq.final_norm.parameters()) == list(model.norm.parameters())
    _exact(model, seq, (32, 48))
    # the class token is dropped on the way to the auxiliary nets
    with torch.no_grad():
        tokens = run_blocks(seq, torch.randn(2, 3, 32, 48), 0, 2)
    assert seq.to_map(tokens, (32, 48)).shape == (2, 8, 8, 12)


def test_sizes_passed_to_blocks_cross_the_cut_in_the_shape_of_a_map():
    """Blocks called with the grid size: the state crosses each cut as an NCHW map, so any input
    size splits exactly (the sizes are read back from the map)."""
    model = _TokenNet(sized=True, cls=False).eval()
    seq = to_block_sequence(model)
    assert len(seq) == 5
    with torch.no_grad():
        mid = run_blocks(seq, torch.randn(2, 3, 32, 48), 0, 1)
    assert mid.shape == (2, 8, 8, 12)  # a map between blocks
    _exact(model, seq, (32, 48, 64))


def test_a_table_computed_from_the_grid_alone_is_recomputed_in_each_block():
    model = _TokenNet(table=True).eval()
    seq = to_block_sequence(model)
    assert len(seq) == 5
    _exact(model, seq, (32, 64))


def test_a_size_the_state_cannot_carry_holds_the_split_to_the_traced_size():
    """With a class token the grid is no map: a model that only runs at one size (as timm's fixed
    ``img_size`` ViTs) reads the grid as a constant, and the stem refuses other sizes in one line."""

    class Fixed(_TokenNet):
        def forward_features(self, x):
            torch._assert(x.shape[-1] == 32, 'fixed input size')  # as timm's PatchEmbed
            return super().forward_features(x)
    model = Fixed(sized=True).eval()
    seq = to_block_sequence(model)
    _exact(model, seq, (32,))
    with pytest.raises(InputError, match='Fixed split into blocks takes 32x32 inputs only') as err:
        run_blocks(seq, torch.randn(1, 3, 48, 48), 0, 0)
    assert '\n' not in str(err.value)


def test_a_condition_on_the_input_takes_the_traced_branch_and_guards_it():
    """``if x.ndim != 4`` / ``if mask.any()`` (Gemma4-style input checks) cannot be traced symbolically:
    the branch is the one the sample input takes, and an input that would take the other is refused."""

    class Checked(_TokenNet):
        def forward_features(self, x):
            if x.ndim != 4:
                raise ValueError('images only')
            if (x.abs() > 1e6).any():  # a condition on values: guarded, not traced
                x = x.clamp(-1e6, 1e6)
            return super().forward_features(x)
    model = Checked().eval()
    seq = to_block_sequence(model)
    _exact(model, seq, (32, 48))
    big = torch.full((1, 3, 32, 32), 1e9)
    with pytest.raises(InputError, match='this input takes another branch of the backbone') as err:
        run_blocks(seq, big, 0, len(seq) - 1, True)
    assert '\n' not in str(err.value)


@pytest.mark.parametrize('kwargs,why', [
    (dict(shared=True), 'a parameter is used by both blocks.0 and blocks.1'),
    (dict(training_branch=True), 'runs different code in training and in eval mode'),
], ids=['shared', 'training'])
def test_models_the_graph_cannot_split_are_refused_in_one_line(kwargs, why):
    with pytest.raises(InputError, match='_TokenNet cannot be split: ') as err:
        to_block_sequence(_TokenNet(**kwargs))
    assert why in str(err.value) and '\n' not in str(err.value)


def test_blocks_share_the_models_parameters_and_train():
    """Gradients of the blocks in a row equal those of forward_features; no parameter is copied."""
    torch.manual_seed(0)
    model = _TokenNet(sized=True, cls=False)
    seq = to_block_sequence(model)
    x = torch.randn(2, 3, 32, 32)
    model.forward_features(x).square().sum().backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    run_blocks(seq, x, 0, len(seq) - 1, True).square().sum().backward()
    for a, b in zip(ref, model.parameters()):
        torch.testing.assert_close(a, b.grad)
    owned = [id(p) for i in seq.infos for p in i.parameters()] + [id(p) for p in seq.final_norm.parameters()]
    assert sorted(owned) == sorted(id(p) for p in model.parameters())


def test_copies_and_twins_run_on_their_own_parameters():
    """A deep copy (of a model holding the sequence) and a twin with copied blocks (AugLocal, MAN)
    are made through the copy's memo, not read again: the copy owns its parameters, the twin's
    copied block new ones and everything else the live model's."""
    import copy

    from localvision.models.split.block_copies import copy_blocks
    model = _TokenNet(sized=True, cls=False).eval()
    seq = to_block_sequence(model)
    mine = {id(p) for p in model.parameters()}
    dup = copy.deepcopy(seq)
    theirs = {id(p) for i in dup.infos for p in i.parameters()} | {id(p) for p in dup.final_norm.parameters()}
    assert theirs == {id(p) for p in dup.model.parameters()} and not theirs & mine
    _exact(dup.model, dup, (32, 48))
    twin = copy_blocks(seq, [2])
    assert not {id(p) for p in twin.infos[2].parameters()} & mine
    assert all({id(p) for p in twin.infos[i].parameters()} <= mine for i in (0, 1, 3, 4))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(run_blocks(twin, x, 0, len(twin) - 1, True), model.forward_features(x),
                                   rtol=0, atol=0)


@pytest.mark.parametrize('name, multiple', [
    ('vit_tiny_patch16_224', (16, 16)),
    ('pvt_v2_b0', (4, 4)),  # 7 px patches at stride 4: the stride is the multiple
    ('tnt_s_patch16_224', (16, 16)),  # a pixel embedding strides inside 16 px patches
])
def test_input_sizes_are_multiples_of_the_patch_stride(name, multiple):
    import timm
    from localvision.models.split.graph_reader import input_multiple
    with torch.device('meta'):
        model = timm.create_model(name, pretrained=False)
    assert input_multiple(model) == multiple


def test_a_wrapped_encoder_is_traced_at_the_size_it_was_built_for():
    # DeepSeek-ViT's patch embedding is ``encoder.patch_embed`` (14 px patches, default 546 px): the
    # trace inputs are 56 px and the size it was built for, not 64 px and the 546 px default
    import timm
    from localvision.models.split.block_sequence import _trace_inputs
    with torch.device('meta'):
        model = timm.create_model('deepseek_vit_412m', pretrained=False, img_size=(112, 112))
    assert [tuple(x.shape[-2:]) for x in _trace_inputs(model)] == [(56, 56), (112, 112)]
