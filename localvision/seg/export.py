"""Export a trained :class:`LocalEncoderDecoder` to a checkpoint + config that stock mmseg loads.

The exported model is mmseg's ``EncoderDecoder``; the auxiliary nets of local learning (local
objectives) are dropped. The backbone becomes

- for timm models whose levels end timm feature stages (ResNets, ConvNeXts, EfficientNets,
  RegNets, Swin, ... any model whose ``features_only`` extractor timm builds):
  ``TIMMBackbone(features_only=True, pretrained=False, out_indices=...)``, keys ``backbone.model.*``
  (the timm model) -> ``backbone.timm_model.*`` under the extractor's names; the extractor is built
  and checked at export (same weights, its features equal the levels on a random input);
- for timm ViTs: mmseg's own ``VisionTransformer`` with the same sizes (class token, LayerNorm
  eps, final norm on the last block), ``out_indices`` = the level blocks, and timm's weights under
  mmseg's names (as mmseg's ``vit2mmseg`` converter maps them). timm resamples the position
  embedding for other input sizes with antialiased bicubic, mmseg with plain bicubic: predictions
  are identical at the backbone's ``img_size`` (every crop of ``slide`` inference, as in mmseg's
  ViT configs) and differ slightly at other sizes.
"""
from __future__ import annotations

import copy
from typing import Dict

import torch

from localvision.errors import InputError
from localvision.utils.export import StockExport, stock_state_dict, timm_features_backbone

LOCAL_KEYS = ('split', 'local_objective', 'context', 'executor')


def is_timm_vit(model) -> bool:
    """The backbone is timm's ``VisionTransformer`` (exported as mmseg's own ``VisionTransformer``)."""
    from timm.models.vision_transformer import VisionTransformer
    return type(model.backbone.model) is VisionTransformer


def mmseg_vit_backbone(model) -> dict:
    """mmseg ``VisionTransformer`` settings computing what the timm ViT of ``model`` computes."""
    import torch.nn as nn
    vit = model.backbone.model
    name = model.backbone.model_name
    blk = vit.blocks[0]
    checks = [
        (getattr(vit, 'cls_token', None) is not None and vit.num_prefix_tokens == 1,
         'one class token and no register tokens'),
        (not getattr(vit, 'no_embed_class', False), 'a position embedding for the class token'),
        (isinstance(vit.patch_embed.norm, nn.Identity) and isinstance(vit.norm_pre, nn.Identity),
         'no patch norm or pre-norm'),
        (all(isinstance(getattr(b, a, nn.Identity()), nn.Identity) for b in vit.blocks
             for a in ('ls1', 'ls2', 'norm1_post', 'norm2_post')) and
         all(isinstance(getattr(b.attn, a, nn.Identity()), nn.Identity) for b in vit.blocks
             for a in ('q_norm', 'k_norm', 'norm')), 'no layer scale, qk-norm or post-norm'),
        (isinstance(blk.mlp.act, nn.GELU) and getattr(blk.mlp.act, 'approximate', 'none') == 'none',
         'exact GELU activations'),
        (blk.attn.qkv.bias is not None, 'a qkv bias'),
        (isinstance(vit.norm, nn.LayerNorm), 'a LayerNorm as the final norm'),
        (blk.mlp.fc1.out_features % vit.embed_dim == 0, 'an MLP width that is a multiple of the embedding width'),
    ]
    for ok, what in checks:
        if not ok:
            raise InputError(f'{name} cannot be exported to stock mmseg: its VisionTransformer requires {what}')
    depth = len(vit.blocks)
    levels = [b - 1 for b in model.backbone.level_blocks]  # flat block b (0 = patch embedding) = layer b - 1
    if min(levels) < 0:
        raise InputError('a level at the patch embedding (block 0) has no mmseg VisionTransformer output')
    return dict(type='VisionTransformer', img_size=tuple(vit.patch_embed.img_size),
                patch_size=vit.patch_embed.patch_size[0], in_channels=vit.patch_embed.proj.in_channels,
                embed_dims=vit.embed_dim, num_layers=depth, num_heads=blk.attn.num_heads,
                mlp_ratio=blk.mlp.fc1.out_features // vit.embed_dim, out_indices=tuple(levels), qkv_bias=True,
                drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0, with_cls_token=True,
                output_cls_token=False, norm_cfg=dict(type='LN', eps=vit.norm.eps),
                act_cfg=dict(type='GELU'),
                patch_bias=vit.patch_embed.proj.bias is not None, patch_norm=False, pre_norm=False,
                final_norm=True, interpolate_mode='bicubic',
                pretrained=None, init_cfg=None)


def vit_key(k: str) -> str:
    """A timm ViT state-dict key under mmseg's VisionTransformer names (mmseg's vit2mmseg mapping)."""
    k = k.replace('patch_embed.proj.', 'patch_embed.projection.')
    if k.startswith('norm.'):
        return 'ln1.' + k[len('norm.'):]
    if k.startswith('blocks.'):
        k = 'layers.' + k[len('blocks.'):]
        for a, b in (('.norm1.', '.ln1.'), ('.norm2.', '.ln2.'), ('.attn.qkv.weight', '.attn.attn.in_proj_weight'),
                     ('.attn.qkv.bias', '.attn.attn.in_proj_bias'), ('.attn.proj.', '.attn.attn.out_proj.'),
                     ('.mlp.fc1.', '.ffn.layers.0.0.'), ('.mlp.fc2.', '.ffn.layers.1.')):
            k = k.replace(a, b)
    return k


def export_state_dict(model) -> Dict[str, torch.Tensor]:
    """The segmentor's weights with stock mmseg's backbone names; local objectives dropped."""
    if is_timm_vit(model):
        def backbone_key(rest):
            if rest.startswith(('head.', 'fc_norm.')):  # the classifier of the timm model (unused)
                return None
            return 'backbone.' + vit_key(rest)
    else:
        keys = timm_features_backbone(model, 'mmseg')[1]

        def backbone_key(rest):  # None: the classifier and what else the feature extractor does not hold
            return 'backbone.timm_model.' + keys[rest] if rest in keys else None
    return stock_state_dict(model, backbone_key)


def stock_model_cfg(model_cfg: dict, model) -> dict:
    """The ``model`` config of the same network as a stock mmseg ``EncoderDecoder``."""
    cfg = copy.deepcopy(dict(model_cfg))
    for k in LOCAL_KEYS:
        cfg.pop(k, None)
    if is_timm_vit(model):
        bb = mmseg_vit_backbone(model)
    else:
        bb = {k: v for k, v in model.backbone.timm_kwargs.items() if k != 'num_classes'}
        bb.update(type='TIMMBackbone', model_name=model.backbone.model_name, features_only=True, pretrained=False,
                  **timm_features_backbone(model, 'mmseg')[0])
    cfg.update(type='EncoderDecoder', backbone=bb, pretrained=None)
    cfg['decode_head'] = dict(cfg['decode_head'], in_channels=model.decode_head.in_channels)
    if cfg.get('auxiliary_head') is not None:
        aux = cfg['auxiliary_head']
        if isinstance(aux, (list, tuple)):
            cfg['auxiliary_head'] = [dict(a, in_channels=h.in_channels) for a, h in zip(aux, model.auxiliary_head)]
        else:
            cfg['auxiliary_head'] = dict(aux, in_channels=model.auxiliary_head.in_channels)
    return cfg


class MmsegExport(StockExport):
    """A :class:`LocalEncoderDecoder` as mmseg's ``EncoderDecoder``."""

    library = 'mmseg'
    api = 'mmseg.apis.init_model'

    def stock_model(self, cfg, model) -> dict:
        return stock_model_cfg(cfg.model.to_dict(), model)

    state_dict = staticmethod(export_state_dict)
