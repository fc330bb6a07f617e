"""Loss normalisers independent of the number of processes, and host-sync-free, vectorised dense heads.

* 2 gloo processes, each with half the batch and DDP-style averaged gradients, give the gradients of one process
  with the whole batch (FCOS, RetinaNet, segmentation cross-entropy, VQA loss), although the halves hold very
  different numbers of positives / labelled pixels / questions.
* The FCOS demo config trained by ``accelerate launch`` on 2 CPU processes with batch b equals one process with
  batch 2b (demo augmentations on; the backbone's BatchNorm replaced by GroupNorm with
  ``model.backbone.norm=gn``: train-mode BatchNorm statistics are per process by nature).
* The vectorised RetinaNet assignment equals the per-object loop it replaced (kept below as the reference), and
  the dense, masked losses equal the previous boolean-indexed ones.
* The losses (and the GRU question encoder, which no longer packs with host-side lengths) run on the ``meta``
  device: any ``.item()``, ``bool()`` of a tensor, ``.cpu()`` or boolean-mask indexing (all host synchronisations
  on a GPU) would raise there.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from types import SimpleNamespace
from typing import Any, Callable

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou, generalized_box_iou_loss, sigmoid_focal_loss

from attnkit import build_head
from attnkit.heads.detection.anchors import decode_boxes, encode_boxes
from attnkit.heads.detection.fcos import level_points
from attnkit.heads.detection.utils import flatten_level, giou_loss
from attnkit.heads.dist import global_normalizer
from attnkit.heads.segmentation.base import seg_cross_entropy
from attnkit.tasks.vqa.model import VQAModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRIDES = (8, 16, 32)
RANGES = ((-1, 16), (16, 32), (32, 1e8))


# ---------------------------------------------------------------------------------------- the old code, as reference
def old_retina_targets(head: Any, anchors: Tensor, boxes: Tensor, labels: Tensor, ignore: Tensor
                       ) -> tuple[Tensor, Tensor, Tensor]:
    """RetinaHead.get_targets before vectorisation (per-object Python loop), verbatim."""
    num = anchors.shape[0]
    labels_out = torch.full((num,), head.num_classes, dtype=torch.long, device=anchors.device)
    matched = anchors.new_zeros((num, 4))
    gt, gt_labels = boxes[~ignore].float(), labels[~ignore]
    valid = torch.ones(num, dtype=torch.bool, device=anchors.device)
    if gt.shape[0] > 0:
        iou = box_iou(gt, anchors)  # (K, A)
        max_iou, idx = iou.max(dim=0)
        pos = max_iou >= head.pos_iou_thr
        valid = (max_iou < head.neg_iou_thr) | pos
        gt_best = iou.max(dim=1).values  # (K,)
        for k in range(gt.shape[0]):  # low-quality matches: each object claims its best anchors
            if gt_best[k] >= head.min_pos_iou and gt_best[k] > 0:
                best = iou[k] == gt_best[k]
                idx[best] = k
                pos |= best
        valid |= pos
        labels_out[pos] = gt_labels[idx[pos]]
        matched = gt[idx]
    else:
        pos = torch.zeros(num, dtype=torch.bool, device=anchors.device)
    if ignore.any():
        ig_iou = box_iou(boxes[ignore].float(), anchors).max(dim=0).values
        valid &= ~((ig_iou >= head.ignore_iou_thr) & ~pos)
    return labels_out, matched, valid


def old_fcos_targets(head: Any, points: Tensor, level_ids: Tensor, boxes: Tensor, labels: Tensor, ignore: Tensor
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """FCOSHead.get_targets before (boolean indexing, ``if ignore.any()``), verbatim."""
    num_points = points.shape[0]
    bg = torch.full((num_points,), head.num_classes, dtype=torch.long, device=points.device)
    keep = ~ignore
    gt, gt_labels = boxes[keep].float(), labels[keep]
    excluded = torch.zeros(num_points, dtype=torch.bool, device=points.device)
    if ignore.any():
        ig = boxes[ignore].float()
        x, y = points[:, 0:1], points[:, 1:2]
        excluded = ((x > ig[:, 0]) & (y > ig[:, 1]) & (x < ig[:, 2]) & (y < ig[:, 3])).any(dim=1)
    if gt.shape[0] == 0:
        return bg, points.new_zeros((num_points, 4)), excluded
    x, y = points[:, 0:1], points[:, 1:2]
    ltrb = torch.stack([x - gt[:, 0], y - gt[:, 1], gt[:, 2] - x, gt[:, 3] - y], dim=2)
    if head.center_sampling:
        strides = points.new_tensor(head.strides)[level_ids][:, None] * head.center_sample_radius
        cx, cy = (gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2
        x0 = torch.maximum(cx - strides, gt[:, 0])
        y0 = torch.maximum(cy - strides, gt[:, 1])
        x1 = torch.minimum(cx + strides, gt[:, 2])
        y1 = torch.minimum(cy + strides, gt[:, 3])
        inside = (x > x0) & (y > y0) & (x < x1) & (y < y1)
    else:
        inside = ltrb.min(dim=2).values > 0
    max_dist = ltrb.max(dim=2).values
    ranges = points.new_tensor(head.regress_ranges)[level_ids]
    in_range = (max_dist > ranges[:, 0:1]) & (max_dist <= ranges[:, 1:2])
    areas = ((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]))[None].expand(num_points, -1).clone()
    areas[~(inside & in_range)] = 1e8
    min_area, idx = areas.min(dim=1)
    pos = min_area < 1e8
    return torch.where(pos, gt_labels[idx], bg), gt[idx], excluded & ~pos


def old_fcos_loss(head: Any, feats: list[Tensor], boxes: list[Tensor], labels: list[Tensor],
                  ignore: list[Tensor]) -> dict[str, Tensor]:
    """FCOSHead.loss before (local normalisers, positives selected by boolean indexing)."""
    cls_out, reg_out, ctr_out = head(feats)
    n = cls_out[0].shape[0]
    pts = level_points([tuple(c.shape[-2:]) for c in cls_out], head.strides, torch.device('cpu'))
    points = torch.cat(pts)
    level_ids = torch.cat([torch.full((p.shape[0],), i, dtype=torch.long) for i, p in enumerate(pts)])
    cls = torch.cat([flatten_level(c, head.num_classes) for c in cls_out], 1).float()
    reg = torch.cat([flatten_level(r, 4) for r in reg_out], 1).float()
    ctr = torch.cat([flatten_level(c, 1) for c in ctr_out], 1).float().squeeze(2)
    t = [old_fcos_targets(head, points, level_ids, b, l, ig) for b, l, ig in zip(boxes, labels, ignore)]
    tgt_labels, tgt_boxes, valid = (torch.stack([x[0] for x in t]), torch.stack([x[1] for x in t]),
                                    ~torch.stack([x[2] for x in t]))
    pos = tgt_labels < head.num_classes
    num_pos = max(float(pos.sum()), 1.0)
    onehot = F.one_hot(tgt_labels, head.num_classes + 1)[..., : head.num_classes].to(cls.dtype)
    loss_cls = sigmoid_focal_loss(cls[valid], onehot[valid], alpha=head.focal_alpha, gamma=head.focal_gamma,
                                  reduction='sum') / num_pos
    p = points[None].expand(n, -1, -1)[pos]
    d, gt = reg[pos], tgt_boxes[pos]
    pred_boxes = torch.cat([p - d[:, :2], p + d[:, 2:]], dim=1)
    lr = torch.stack([p[:, 0] - gt[:, 0], gt[:, 2] - p[:, 0]], 1)
    tb = torch.stack([p[:, 1] - gt[:, 1], gt[:, 3] - p[:, 1]], 1)
    ctr_t = ((lr.min(1).values / lr.max(1).values).clamp(min=0) *
             (tb.min(1).values / tb.max(1).values).clamp(min=0)).sqrt()
    giou = generalized_box_iou_loss(pred_boxes, gt, reduction='none')
    loss_bbox = (giou * ctr_t).sum() / ctr_t.sum().clamp(min=1e-6)
    loss_ctr = F.binary_cross_entropy_with_logits(ctr[pos], ctr_t, reduction='sum') / num_pos
    return {'loss_cls': loss_cls, 'loss_bbox': loss_bbox, 'loss_centerness': loss_ctr}


def old_retina_loss(head: Any, feats: list[Tensor], boxes: list[Tensor], labels: list[Tensor],
                    ignore: list[Tensor]) -> dict[str, Tensor]:
    """RetinaHead.loss before (local number of positives, boolean indexing)."""
    cls_out, reg_out = head(feats)
    anchors = torch.cat(head.anchor_generator([tuple(c.shape[-2:]) for c in cls_out], torch.device('cpu')))
    cls = torch.cat([flatten_level(c, head.num_classes) for c in cls_out], 1).float()
    reg = torch.cat([flatten_level(r, 4) for r in reg_out], 1).float()
    t = [old_retina_targets(head, anchors, b, l, ig) for b, l, ig in zip(boxes, labels, ignore)]
    t_labels, t_boxes, t_valid = (torch.stack([x[i] for x in t]) for i in range(3))
    pos = t_labels < head.num_classes
    num_pos = max(float(pos.sum()), 1.0)
    onehot = F.one_hot(t_labels, head.num_classes + 1)[..., : head.num_classes].to(cls.dtype)
    loss_cls = sigmoid_focal_loss(cls[t_valid], onehot[t_valid], alpha=head.focal_alpha, gamma=head.focal_gamma,
                                  reduction='sum') / num_pos
    a = anchors[None].expand(pos.shape[0], -1, -1)[pos]
    if head.loss_bbox_type == 'giou':
        loss_bbox = generalized_box_iou_loss(decode_boxes(reg[pos], a), t_boxes[pos], reduction='sum')
    else:
        loss_bbox = F.smooth_l1_loss(reg[pos], encode_boxes(t_boxes[pos], a), beta=head.beta, reduction='sum')
    return {'loss_cls': loss_cls, 'loss_bbox': loss_bbox / num_pos}


# ------------------------------------------------------------------------------------------------ fixtures
def fcos_head() -> nn.Module:
    return build_head(dict(type='FCOSHead', num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1,
                           strides=STRIDES, regress_ranges=RANGES))


def retina_head(loss_bbox: str = 'smooth_l1', min_pos_iou: float = 0.0) -> nn.Module:
    return build_head(dict(type='RetinaHead', num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1,
                           strides=STRIDES, octave_base_scale=2, norm='GN', loss_bbox=loss_bbox,
                           min_pos_iou=min_pos_iou))


def random_boxes(g: torch.Generator, k: int, size: float = 64.0, lo: float = 6.0, hi: float = 40.0) -> Tensor:
    """(k, 4) xyxy boxes with sides in [lo, hi) inside a size x size image."""
    wh = lo + torch.rand(k, 2, generator=g) * (hi - lo)
    xy = torch.rand(k, 2, generator=g) * (size - wh)
    return torch.cat([xy, xy + wh], dim=1)


def detection_batch() -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
    """4 images (64 px) of 8-channel FPN maps: images 0-1 hold one small object between them (the first
    process's half), images 2-3 six objects and an ignore box (the second's), so the halves' positive counts
    differ a lot."""
    g = torch.Generator().manual_seed(3)
    feats = [torch.randn(4, 8, 64 // s, 64 // s, generator=g) for s in STRIDES]
    counts = [1, 0, 3, 4]
    boxes = [random_boxes(g, k) for k in counts]
    labels = [torch.randint(0, 3, (k,), generator=g) for k in counts]
    ignore = [torch.zeros(k, dtype=torch.bool) for k in counts]
    ignore[3][0] = True
    return feats, boxes, labels, ignore


def _detection_case(make: Callable[[], nn.Module]) -> Callable[[slice], tuple[nn.Module, Tensor]]:
    def run(part: slice) -> tuple[nn.Module, Tensor]:
        torch.manual_seed(0)
        head = make()
        feats, boxes, labels, ignore = detection_batch()
        losses = head.loss([f[part] for f in feats], boxes[part], labels[part], ignore[part])
        return head, sum(losses.values())
    return run


def _seg_case(class_weight: bool) -> Callable[[slice], tuple[nn.Module, Tensor]]:
    def run(part: slice) -> tuple[nn.Module, Tensor]:
        g = torch.Generator().manual_seed(5)
        torch.manual_seed(0)
        model = nn.Conv2d(3, 4, 1)
        x = torch.randn(4, 3, 8, 8, generator=g)
        masks = torch.randint(0, 4, (4, 8, 8), generator=g)
        masks[0, :, 1:] = 255  # the first half is mostly unlabelled
        masks[1, 2:] = 255
        weight = torch.tensor([0.5, 1.0, 2.0, 1.5]) if class_weight else None
        return model, seg_cross_entropy(model(x[part]), masks[part], class_weight=weight)
    return run


def _vqa_case(reduction: str) -> Callable[[slice], tuple[nn.Module, Tensor]]:
    def run(part: slice) -> tuple[nn.Module, Tensor]:
        g = torch.Generator().manual_seed(7)
        torch.manual_seed(0)
        model = nn.Linear(6, 5)
        x = torch.randn(8, 6, generator=g)
        scores = (torch.rand(8, 5, generator=g) * 3).floor() / 3
        stub = SimpleNamespace(loss_reduction=reduction, loss_weight=0.5)
        return model, VQAModel.loss(stub, model(x[part]), scores[part])
    return run


CASES: dict[str, Callable[[slice], tuple[nn.Module, Tensor]]] = {
    'fcos': _detection_case(fcos_head),
    'retina_smooth_l1': _detection_case(retina_head),
    'retina_giou': _detection_case(lambda: retina_head('giou')),
    'seg': _seg_case(False),
    'seg_class_weight': _seg_case(True),
    'vqa_num_answers': _vqa_case('num_answers'),
    'vqa_mean': _vqa_case('mean'),
}
# the processes' shares: equal halves for images and pixels; 2 and 6 questions for VQA (unequal counts too)
SHARES = {name: (slice(0, 2), slice(2, 4)) if not name.startswith('vqa') else (slice(0, 2), slice(2, 8))
          for name in CASES}


def _grads(model: nn.Module) -> list[Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def _dist_worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    """One of ``world`` gloo processes: its share of each case, gradients averaged as DDP does."""
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world)
    try:
        results = {}
        for name, case in CASES.items():
            model, loss = case(SHARES[name][rank])
            loss.backward()
            grads = _grads(model)
            for grad in grads:
                dist.all_reduce(grad)
                grad /= world
            results[name] = grads
        if rank == 0:
            torch.save(results, out_file)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_give_the_gradients_of_one_process_with_the_whole_batch(tmp_path):
    mp.spawn(_dist_worker, args=(2, str(tmp_path / 'init'), str(tmp_path / 'grads.pt')), nprocs=2, join=True)
    two = torch.load(tmp_path / 'grads.pt', weights_only=True)
    wrong = {}
    for name, case in CASES.items():
        model, loss = case(slice(None))
        loss.backward()
        refs = _grads(model)
        assert sum(int(r.abs().max() > 0) for r in refs) >= len(refs) - 2, name  # a real gradient to compare
        for ref, got in zip(refs, two[name]):
            if not torch.allclose(got, ref, rtol=1e-5, atol=1e-7):
                wrong[name] = max(wrong.get(name, 0.0), ((got - ref).abs().max() / ref.abs().max()).item())
    assert not wrong, f'relative gradient errors of 2 processes against 1: {wrong}'


def test_global_normalizer_without_process_group_is_the_clamped_count():
    assert global_normalizer(torch.tensor(7)).item() == 7.0
    assert global_normalizer(torch.tensor(0)).item() == 1.0
    assert global_normalizer(torch.tensor(0.0), 1e-6).item() == pytest.approx(1e-6)


# -------------------------------------------------------------------------------------- equal to the old code
@pytest.mark.parametrize('min_pos_iou', [0.0, 0.3])
def test_vectorised_retinanet_assignment_equals_the_per_object_loop(min_pos_iou):
    head = retina_head(min_pos_iou=min_pos_iou)
    anchors = torch.cat(head.anchor_generator([(8, 8), (4, 4), (2, 2)], torch.device('cpu')))
    g = torch.Generator().manual_seed(11)
    checked_claims = 0
    for trial in range(60):
        k = int(torch.randint(0, 9, (1,), generator=g))
        boxes = random_boxes(g, k, lo=2.0, hi=60.0)
        if k >= 3 and trial % 3 == 0:
            boxes[1] = boxes[0]  # two objects tie on their best anchors: the later one wins
            boxes[2] = boxes[2].round()  # box sides on the anchor grid: ties between anchors
        labels = torch.randint(0, 3, (k,), generator=g)
        ignore = torch.rand(k, generator=g) < 0.25
        ref = old_retina_targets(head, anchors, boxes, labels, ignore)
        got = head.get_targets(anchors, boxes, labels, ignore)
        assert torch.equal(got[0], ref[0]), trial
        assert torch.equal(got[2], ref[2]), trial
        pos = ref[0] < head.num_classes
        assert torch.equal(got[1][pos], ref[1][pos]), trial
        checked_claims += int(pos.sum())
    assert checked_claims > 100


def test_fcos_targets_equal_the_previous_indexing_version():
    head = fcos_head()
    pts = level_points([(8, 8), (4, 4), (2, 2)], STRIDES, torch.device('cpu'))
    points = torch.cat(pts)
    level_ids = torch.cat([torch.full((len(p),), i) for i, p in enumerate(pts)])
    g = torch.Generator().manual_seed(12)
    for trial in range(40):
        k = int(torch.randint(0, 7, (1,), generator=g))
        boxes = random_boxes(g, k, lo=4.0, hi=60.0)
        labels = torch.randint(0, 3, (k,), generator=g)
        ignore = torch.rand(k, generator=g) < 0.3
        ref = old_fcos_targets(head, points, level_ids, boxes, labels, ignore)
        got = head.get_targets(points, level_ids, boxes, labels, ignore)
        pos = ref[0] < 3
        assert torch.equal(got[0], ref[0]) and torch.equal(got[2], ref[2]), trial
        assert torch.equal(got[1][pos], ref[1][pos]), trial


@pytest.mark.parametrize('kind', ['fcos', 'retina_smooth_l1', 'retina_giou'])
def test_dense_masked_losses_equal_the_previous_indexed_losses(kind):
    make, old = {'fcos': (fcos_head, old_fcos_loss), 'retina_smooth_l1': (retina_head, old_retina_loss),
                 'retina_giou': (lambda: retina_head('giou'), old_retina_loss)}[kind]
    feats, boxes, labels, ignore = detection_batch()
    torch.manual_seed(0)
    head = make()
    new = head.loss(feats, boxes, labels, ignore)
    sum(new.values()).backward()
    grads_new = _grads(head)
    head.zero_grad()
    ref = old(head, feats, boxes, labels, ignore)
    sum(ref.values()).backward()
    assert set(new) == set(ref)
    for key in ref:
        assert torch.allclose(new[key], ref[key], rtol=1e-5, atol=1e-7), (key, new[key], ref[key])
    for a, b in zip(grads_new, _grads(head)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_giou_loss_equals_torchvision_values_and_gradients():
    g = torch.Generator().manual_seed(13)
    a = random_boxes(g, 400, lo=0.0, hi=30.0)
    b = random_boxes(g, 400, lo=0.0, hi=30.0)
    b[:50] = a[:50]  # identical pairs
    b[50:100, :2] = a[50:100, 2:]  # touching corners: empty intersection
    b[50:100, 2:] = b[50:100, :2] + 5
    a.requires_grad_()
    ours = giou_loss(a, b)
    (ours * torch.linspace(0.5, 2, 400)).sum().backward()
    grad, a.grad = a.grad.clone(), None
    ref = generalized_box_iou_loss(a, b, reduction='none')
    (ref * torch.linspace(0.5, 2, 400)).sum().backward()
    assert torch.allclose(ours, ref, rtol=0, atol=1e-6) and torch.allclose(grad, a.grad, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------- no host synchronisation
@pytest.mark.parametrize('kind', ['fcos', 'retina_smooth_l1', 'retina_giou'])
def test_detection_losses_run_on_the_meta_device(kind):
    """On 'meta' tensors have no values: .item(), bool(tensor), boolean-mask indexing all raise."""
    with torch.device('meta'):
        head = {'fcos': fcos_head, 'retina_smooth_l1': retina_head, 'retina_giou': lambda: retina_head('giou')}[kind]()
        feats = [torch.randn(2, 8, 64 // s, 64 // s, requires_grad=True) for s in STRIDES]
        boxes = [torch.empty(3, 4), torch.empty(2, 4)]
        labels = [torch.empty(3, dtype=torch.long), torch.empty(2, dtype=torch.long)]
        ignore = [torch.empty(3, dtype=torch.bool), torch.empty(2, dtype=torch.bool)]
    losses = head.loss(feats, boxes, labels, ignore)
    total = sum(losses.values())
    assert total.device.type == 'meta' and total.shape == ()
    total.backward()
    assert all(p.grad is not None and p.grad.device.type == 'meta' for p in head.parameters())


def test_segmentation_and_vqa_losses_run_on_the_meta_device():
    with torch.device('meta'):
        logits = torch.randn(2, 4, 8, 8, requires_grad=True)
        target = torch.empty(2, 8, 8, dtype=torch.long)
        loss = seg_cross_entropy(logits, target, class_weight=torch.ones(4))
        vqa = VQAModel.loss(SimpleNamespace(loss_reduction='num_answers', loss_weight=1.0),
                            torch.randn(3, 5, requires_grad=True), torch.empty(3, 5))
    (loss + vqa).backward()
    assert logits.grad.device.type == 'meta'


@pytest.mark.parametrize('layers', [1, 2])
def test_gru_question_encoder_equals_the_packed_gru_and_needs_no_host_lengths(layers):
    from attnkit.tasks.vqa.text import GRUQuestionEncoder

    torch.manual_seed(0)
    enc = GRUQuestionEncoder(30, embed_dim=8, hidden_dim=12, num_layers=layers, dropout=0.0)
    ids = torch.randint(2, 30, (5, 7))
    mask = (torch.arange(7)[None] < torch.tensor([7, 3, 1, 5, 2])[:, None]).long()
    ids = ids * mask
    weights = torch.randn(5, 7, 12)
    out = enc(ids, mask)
    (out * weights).sum().backward()
    grads = _grads(enc)
    enc.zero_grad()
    # reference: the packed bidirectional GRU (what the encoder ran before)
    packed = nn.utils.rnn.pack_padded_sequence(enc.embed(ids), mask.sum(1), batch_first=True, enforce_sorted=False)
    ref, _ = nn.utils.rnn.pad_packed_sequence(enc.gru(packed)[0], batch_first=True, total_length=7)
    (ref * weights).sum().backward()
    assert torch.allclose(out, ref, atol=1e-6) and (out[mask == 0] == 0).all()
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, _grads(enc)))
    assert [n for n, _ in enc.named_parameters()][1:] == [n for n, _ in enc.gru.named_parameters(prefix='gru')]
    with torch.device('meta'):  # no lengths copied to the host
        meta = GRUQuestionEncoder(30, embed_dim=8, hidden_dim=12, num_layers=layers)
        out = meta(torch.empty(3, 5, dtype=torch.long), torch.empty(3, 5, dtype=torch.long))
    out.sum().backward()
    assert out.shape == (3, 5, 12) and meta.gru.weight_hh_l0.grad.device.type == 'meta'


# ------------------------------------------------------------------------------ the FCOS demo config, 2 vs 1 process
def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _fcos_config(tmp_path, paths: dict[str, str]) -> str:
    """The demo FCOS config on a small generated demo set: 3 iterations, no workers (augmentations kept)."""
    path = tmp_path / 'fcos_demo_small.py'
    path.write_text(f"""_base_ = [{os.path.join(ROOT, 'configs/demo/fcos_r18-cbam_fpn_shapes.py')!r}]
data = dict(
    train=dict(dataset=dict(ann_file={paths['coco_train_json']!r}, img_dir={paths['img_dir']!r}), batch_size=4,
               num_workers=0),
    val=dict(dataset=dict(ann_file={paths['coco_val_json']!r}, img_dir={paths['img_dir']!r}), batch_size=2,
             num_workers=0))
schedule = dict(by_epoch=False, max_epochs=None, max_iters=3, warmup_iters=2)
train_cfg = dict(eval_interval=3, checkpoint_interval=3)
runtime = dict(tensorboard=False, log_interval=1)
""")
    return str(path)


def test_fcos_demo_two_processes_equal_one_process_with_the_whole_batch(tmp_path):
    from attnkit.config import load_config
    from attnkit.data.demo import generate_demo_data
    from attnkit.engine import Trainer

    paths = generate_demo_data(tmp_path / 'demo', num_train=12, num_val=2, size=64, seed=0)
    config = _fcos_config(tmp_path, paths)
    cfg = load_config(config)
    assert [t['type'] for t in cfg.data.train.dataset.pipeline] == ['HorizontalFlip', 'VerticalFlip',
                                                                    'RandomRotate90']  # augmentations on
    # AdamW's update of a gradient that is ~0 is +-lr whatever its size, so float-rounding noise in the order of
    # the reduction (one process vs an all-reduce) would flip it: eps 1e-6 (instead of 1e-8) keeps such
    # gradients' updates proportional to them, while real normaliser errors (2e-3 before the fix) still show
    one = Trainer(load_config(config, {'model.backbone.norm': 'gn', 'optim.optimizer.eps': 1e-6,
                                       'work_dir': str(tmp_path / 'one')}))
    one.train()

    env = dict(os.environ, ACCELERATE_USE_CPU='1', OMP_NUM_THREADS='1', NO_ALBUMENTATIONS_UPDATE='1',
               HF_HUB_OFFLINE='1')
    cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2',
           '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no',
           '--main_process_port', str(free_port()), '-m', 'attnkit', 'train', config,
           '--work-dir', str(tmp_path / 'two'), '--cfg-options', 'model.backbone.norm=gn', 'data.train.batch_size=2',
           'optim.optimizer.eps=1e-6']
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]

    two = torch.load(tmp_path / 'two' / 'latest.pth', weights_only=True)
    ref = torch.load(tmp_path / 'one' / 'latest.pth', weights_only=True)
    assert two['iter'] == ref['iter'] == 3
    init = Trainer(load_config(config, {'model.backbone.norm': 'gn', 'work_dir': str(tmp_path / 'init')}))
    start = init.unwrapped_model.state_dict()
    moved, worst = 0, 0.0
    for key, value in ref['model'].items():
        worst = max(worst, float((value - two['model'][key]).abs().max()))
        assert torch.allclose(value, two['model'][key], atol=1e-5, rtol=0), \
            (key, (value - two['model'][key]).abs().max().item())
        moved += int(not torch.equal(value, start[key].cpu()))
    assert moved > 50  # the parameters did train
    print(f'max |param(2 processes) - param(1 process)| after 3 steps: {worst:.2e}')
