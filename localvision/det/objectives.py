"""Local objectives for detection (registered in ``localvision.registry.OBJECTIVES``).

``InfoProDet``: the local loss of module k is ``lambda_recon * L_recon + lambda_task * L_det``:

- ``L_det``: a light **dense detection head** on the module's own output map
  (:class:`DenseDetAuxHead`: two conv3x3-BN-ReLU, then a per-class logit map and a 4-channel box
  map), trained FCOS-style: every location inside the centre region of a ground-truth box is a
  positive for that box's class (smallest box wins; a box with no location inside gets the
  location nearest its centre), classification by sigmoid focal loss over all locations,
  box regression by GIoU on the positives (distances to the four sides, ``exp(pred) * stride``).
  This gives an early module what the detector needs from it: *where* objects are, *how big*
  and *which class*, at the module's resolution. A global classifier (greedy SL for
  classification) would throw the positions away, and a classifier on box crops (RoIAlign on
  each GT box) teaches the class but not localisation and costs a RoI pass per box;
- ``L_recon``: a decoder (:class:`~localvision.models.objectives.ProgressiveDecoder`: conv1x1 to
  64 channels, x2 upsamples with conv3x3, widths halved, down to ``recon_stride``) predicts the un-normalised image in [0, 1] at
  ``1/target_stride`` of the input (default 1/4: at 512x512 reconstructing the full image from
  a 2048-channel map would cost more memory than the module itself), sigmoid + BCE.

For instance segmentation ``mask_weight > 0`` adds a third task term, ``L_mask``: the dense head
gets one more conv3x3 output with a channel per class, trained with sigmoid BCE against the
**per-class mask coverage** of each location (the fraction of the location's cell covered by masks
of instances of that class: the instance masks area-pooled to the map's stride). It tells an
early module the *shape* of the objects, not only their boxes, which is what the mask head of
the last module will ask of the features (see ``docs/instance_segmentation.md``).

``DetGreedy`` is the same objective without the reconstruction term (greedy supervised local
learning with the dense detection head).

Targets: ``ctx.targets`` is a list (one per image) of ``(bboxes (n, 4) xyxy in input pixels,
labels (n,))``, and ``masks (n, H, W)`` at the batch input size as a third element when
``mask_weight > 0``, as :class:`~localvision.det.local_detector.LocalDetectorMixin` puts them there.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from localvision.models.objectives.base import LocalContext
from localvision.models.objectives.decoders import ProgressiveDecoder
from localvision.models.objectives.infopro import InfoProBase
from localvision.registry import AUX_HEADS, OBJECTIVES

Tensor = torch.Tensor
Weight = Union[float, Sequence[float]]


@AUX_HEADS.register_module()
class DenseDetAuxHead(nn.Module):
    """A light dense detection head: ``num_convs`` x (conv3x3 - BN - ReLU), then conv3x3 to
    ``num_classes`` logits and conv3x3 to 4 box distances (log-space, in units of the stride);
    with ``mask_channels`` a third conv3x3 to per-class mask-coverage logits.

    Args:
        in_channels: channels of the module output.
        num_classes: number of object classes (no background channel: sigmoid per class).
        channels: width of the hidden convs.
        num_convs: number of hidden convs.
        prior_prob: initial foreground probability of the classifier (focal-loss init).
        mask_channels: channels of the mask output (0: none; filled in by ``InfoProDet(mask_weight>0)``).
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int = 128, num_convs: int = 2,
                 prior_prob: float = 0.01, mask_channels: int = 0) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        c = in_channels
        for _ in range(num_convs):
            layers += [nn.Conv2d(c, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                       nn.ReLU(inplace=True)]
            c = channels
        self.tower = nn.Sequential(*layers)
        self.cls = nn.Conv2d(c, num_classes, 3, padding=1)
        self.reg = nn.Conv2d(c, 4, 3, padding=1)
        self.mask = nn.Conv2d(c, mask_channels, 3, padding=1) if mask_channels else None
        self.prior_prob = prior_prob
        self.init_weights()

    def init_weights(self) -> None:
        """Small output convs and the focal-loss prior on the class logits."""
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.constant_(self.cls.bias, -math.log((1 - self.prior_prob) / self.prior_prob))
        nn.init.normal_(self.reg.weight, std=0.01)
        nn.init.zeros_(self.reg.bias)
        if self.mask is not None:
            nn.init.normal_(self.mask.weight, std=0.01)
            nn.init.constant_(self.mask.bias, -math.log((1 - self.prior_prob) / self.prior_prob))

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """``(class logits, box distances)``, and the mask logits when the head has them."""
        x = self.tower(x)
        if self.mask is None:
            return self.cls(x), self.reg(x)
        return self.cls(x), self.reg(x), self.mask(x)


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Summed sigmoid focal loss (Lin et al.), as RetinaNet / FCOS use it."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction='none')
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    a_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (a_t * loss).sum()


def giou_loss(pred: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """Mean ``1 - GIoU`` of xyxy boxes ``pred`` and ``target`` (n, 4)."""
    x1, y1 = torch.max(pred[:, 0], target[:, 0]), torch.max(pred[:, 1], target[:, 1])
    x2, y2 = torch.min(pred[:, 2], target[:, 2]), torch.min(pred[:, 3], target[:, 3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_t = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    union = area_p + area_t - inter + eps
    iou = inter / union
    cx1, cy1 = torch.min(pred[:, 0], target[:, 0]), torch.min(pred[:, 1], target[:, 1])
    cx2, cy2 = torch.max(pred[:, 2], target[:, 2]), torch.max(pred[:, 3], target[:, 3])
    enclose = (cx2 - cx1) * (cy2 - cy1) + eps
    return (1 - (iou - (enclose - union) / enclose)).mean()


@torch.no_grad()
def dense_targets(boxes: Tensor, labels: Tensor, hw: Tuple[int, int], stride: float,
                  center_radius: float = 1.5) -> Tuple[Tensor, Tensor]:
    """FCOS-style targets of one image on an ``hw`` grid of ``stride``.

    Returns ``(assigned (H*W,) long: index of the assigned box or -1, points (H*W, 2) xy)``.
    """
    h, w = hw
    device = boxes.device
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * stride
    py, px = torch.meshgrid(ys, xs, indexing='ij')
    points = torch.stack([px.reshape(-1), py.reshape(-1)], dim=1)
    assigned = torch.full((h * w,), -1, dtype=torch.long, device=device)
    if boxes.numel() == 0:
        return assigned, points
    b = boxes.float()
    x, y = points[:, 0:1], points[:, 1:2]
    inside = (x > b[:, 0]) & (x < b[:, 2]) & (y > b[:, 1]) & (y < b[:, 3])
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    r = center_radius * stride
    central = ((x - cx).abs() < r) & ((y - cy).abs() < r) & inside
    area = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).expand(len(points), -1)
    # every box gets at least the location nearest its centre
    nearest = ((x - cx) ** 2 + (y - cy) ** 2).argmin(dim=0)
    central[nearest, torch.arange(len(b), device=device)] = True
    cost = torch.where(central, area, torch.full_like(area, float('inf')))
    best, idx = cost.min(dim=1)
    assigned = torch.where(torch.isfinite(best), idx, assigned)
    return assigned, points


@OBJECTIVES.register_module()
class InfoProDet(InfoProBase):
    """InfoPro for detection: ``lambda_recon * L_recon + lambda_task * (L_cls + L_box)``.

    Args:
        lambda_recon / lambda_task: weight of each term: a number, ``(first, last)`` local
            module (interpolated), or a list of K-1 numbers (see ``scheduled_value``).
        head: dense detection head config (default :class:`DenseDetAuxHead`).
        decoder: reconstruction decoder config (default :class:`~localvision.models.objectives.ProgressiveDecoder`
            with ``widths`` from the module's stride: 64, halved per x2 step down to ``recon_stride``).
        min_stride: maps finer than this are average-pooled to it before the detection head
            (a stride-4 map at 512x512 costs a lot for little gain).
        recon_stride: the reconstruction target is the image at 1/recon_stride.
        box_weight: weight of the GIoU term relative to the focal loss.
        mask_weight: weight of the per-class mask-coverage term relative to the focal loss (0: no
            mask term; instance segmentation: the targets must carry the instance masks).
        center_radius: FCOS centre-sampling radius, in strides.
        in_stride: stride of the module output (filled in by the task model).
    """

    def __init__(self, in_channels: int, num_classes: int, lambda_recon: Weight = 1.0, lambda_task: Weight = 1.0,
                 head: Optional[dict] = None, decoder: Optional[dict] = None, min_stride: int = 8,
                 recon_stride: int = 4, box_weight: float = 1.0, mask_weight: float = 0.0,
                 center_radius: float = 1.5, image_channels: int = 3, **kwargs) -> None:
        fill = {}
        decoder = dict(decoder or dict(type='ProgressiveDecoder'))
        if decoder.get('type') == 'ProgressiveDecoder' and 'widths' not in decoder:
            fill = dict(widths=ProgressiveDecoder.octave_widths(64, kwargs.get('in_stride', 1), int(recon_stride)))
        head = dict(head or dict(type='DenseDetAuxHead'))
        if float(mask_weight) > 0 and head.get('type', 'DenseDetAuxHead') == 'DenseDetAuxHead':
            head.setdefault('mask_channels', num_classes)
        super().__init__(in_channels, num_classes, lambda_recon, lambda_task,
                         head=head, decoder=decoder,
                         image_channels=image_channels, decoder_fill=fill, **kwargs)
        self.mask_weight = float(mask_weight)
        self.min_stride = int(min_stride)
        self.recon_stride = int(recon_stride)
        self.box_weight = float(box_weight)
        self.center_radius = float(center_radius)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f', in_stride={self.in_stride}, '
                f'min_stride={self.min_stride}, recon_stride={self.recon_stride}')

    def det_loss(self, feat: Tensor, ctx: LocalContext) -> Dict[str, Tensor]:
        stride = float(self.in_stride)
        if self.min_stride > self.in_stride:
            f = int(round(self.min_stride / self.in_stride))
            feat = F.avg_pool2d(feat, f, f, ceil_mode=True)
            stride = stride * f
        outs = self.head(feat)
        cls_logits, reg = outs[0], outs[1]
        b, c, h, w = cls_logits.shape
        losses = {}
        if self.mask_weight > 0:
            if len(outs) < 3:
                raise ValueError('InfoProDet(mask_weight > 0) needs a head with a mask output (DenseDetAuxHead with '
                                 'mask_channels=num_classes)')
            mask = self.mask_loss(outs[2], ctx.targets, ctx.img_hw)
            losses['loss_det_mask'] = self.lambda_task * self.mask_weight * mask
        cls_logits = cls_logits.float().permute(0, 2, 3, 1).reshape(b, h * w, c)
        reg = reg.float().permute(0, 2, 3, 1).reshape(b, h * w, 4)
        cls_target = torch.zeros_like(cls_logits)
        pred_boxes, gt_boxes = [], []
        for i, target in enumerate(ctx.targets):
            boxes, labels = target[0], target[1]
            assigned, points = dense_targets(boxes, labels, (h, w), stride, self.center_radius)
            pos = assigned >= 0
            if not bool(pos.any()):
                continue
            cls_target[i, pos, labels[assigned[pos]].long()] = 1.0
            d = torch.exp(reg[i, pos].clamp(max=8.0)) * stride
            p = points[pos]
            pred_boxes.append(torch.stack([p[:, 0] - d[:, 0], p[:, 1] - d[:, 1], p[:, 0] + d[:, 2],
                                           p[:, 1] + d[:, 3]], dim=1))
            gt_boxes.append(boxes[assigned[pos]].float())
        num_pos = max(sum(len(p) for p in pred_boxes), 1)
        losses = {**losses, 'loss_det_cls': self.lambda_task * sigmoid_focal_loss(cls_logits, cls_target) / num_pos}
        if pred_boxes:
            box = giou_loss(torch.cat(pred_boxes), torch.cat(gt_boxes))
        else:
            box = reg.sum() * 0.0
        losses['loss_det_box'] = self.lambda_task * self.box_weight * box
        return losses

    @staticmethod
    @torch.no_grad()
    def mask_targets(targets: list, num_classes: int, hw: Tuple[int, int], input_hw: Tuple[int, int]) -> Tensor:
        """Per-class mask coverage ``(B, num_classes, h, w)`` in [0, 1]: each class's union of
        instance masks (``target[2]``; padded at the bottom / right to the batch ``input_hw`` when
        smaller) area-pooled to the ``hw`` grid."""
        maps = []
        for target in targets:
            if len(target) < 3:
                raise ValueError('InfoProDet(mask_weight > 0): the targets carry no instance masks; load them with '
                                 'LoadAnnotations(with_mask=True)')
            masks, labels = target[2], target[1].long()
            H, W = masks.shape[-2:]
            onehot = F.one_hot(labels, num_classes).float()  # (n, C): the union of each class's masks
            sem = (onehot.t() @ masks.reshape(len(labels), -1).float()).clamp_(max=1.0).reshape(num_classes, H, W)
            if (H, W) != tuple(input_hw):
                sem = F.pad(sem, (0, int(input_hw[1]) - W, 0, int(input_hw[0]) - H))
            maps.append(sem)
        sem = torch.stack(maps)
        # cells of the map's grid: the input is padded to a multiple of the stride, so the grid is
        # the map's; adaptive pooling also covers maps with ceil-mode sizes
        return F.adaptive_avg_pool2d(sem, hw)

    def mask_loss(self, logits: Tensor, targets: list, input_hw: Tuple[int, int]) -> Tensor:
        """Sigmoid BCE against the per-class mask coverage, summed over classes, mean over locations."""
        target = self.mask_targets(targets, logits.shape[1], tuple(logits.shape[-2:]), input_hw)
        bce = F.binary_cross_entropy_with_logits(logits.float(), target, reduction='none')
        return bce.sum(1).mean()

    def loss(self, feat: Tensor, ctx: LocalContext) -> Dict[str, Tensor]:
        losses: Dict[str, Tensor] = {}
        if self.head is not None:
            losses.update(self.det_loss(feat, ctx))
        if self.decoder is not None:
            image = ctx.extras.get('image01_det')
            if image is None or image.shape[-1] != math.ceil(ctx.img_hw[1] / self.recon_stride):
                image = ctx.image01()
                if self.recon_stride > 1:
                    image = F.avg_pool2d(image, self.recon_stride, self.recon_stride, ceil_mode=True)
                ctx.extras['image01_det'] = image
            losses['loss_recon'] = self.recon_loss(feat, image)
        return losses


@OBJECTIVES.register_module()
class DetGreedy(InfoProDet):
    """Greedy local learning for detection: the dense detection head's loss only."""

    def __init__(self, in_channels: int, num_classes: int, loss_weight: float = 1.0, **kwargs) -> None:
        kwargs.pop('lambda_recon', None)
        kwargs.pop('lambda_task', None)
        kwargs.pop('decoder', None)
        super().__init__(in_channels, num_classes, lambda_recon=0.0, lambda_task=loss_weight, **kwargs)
