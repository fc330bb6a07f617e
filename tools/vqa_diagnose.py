"""Short from-scratch VQA diagnostics on the shapes demo data (docs/bench/vqa.md, "From scratch").

A plain training loop over images decoded once (cached in work_dirs/vqa_diag_cache_<size>.pt), one variant per
run, so several suspects can be compared in a few minutes each on one thread:

    OMP_NUM_THREADS=1 .venv/bin/python tools/vqa_diagnose.py --name base --steps 300
    OMP_NUM_THREADS=1 .venv/bin/python tools/vqa_diagnose.py --name mix2 --per-image 2

Every ``--eval-every`` steps it prints (and appends to work_dirs/vqa_diag/<name>.jsonl): VQA accuracy on demo val
overall and per question kind, linear-probe accuracy of the grid features for the shape and the colour of the
object at each cell (attnkit.tasks.vqa.probe; fitted on 150 training images, scored on the 200 val images),
and the gradient norms per backbone stage (attnkit.tasks.vqa.grad_norms, mean over the interval); with
``--answer-bag``, also the bag loss and the val ROC AUC of the bag head's image logits for the shape and the
colour answers (``bag_auc_shape`` / ``bag_auc_color``: does the auxiliary task itself detect shapes?).
No augmentation. ``--qonly`` trains the question-only baseline (same head, no image). ``--answer-bag W`` switches
on the library's answer-bag auxiliary loss (attnkit.tasks.vqa.answer_bag; VQAModel aux_loss) with weight W:

    OMP_NUM_THREADS=1 .venv/bin/python tools/vqa_diagnose.py --name M_bag --batch 64 --per-image 0 --steps 800 \
        --eval-every 200 --max-minutes 14 --answer-bag 1
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from attnkit.builder import build_head, build_model  # noqa: E402
from attnkit.engine.question_sampler import GroupCapBatchSampler  # noqa: E402
from attnkit.evaluation.vqa import vqa_accuracy  # noqa: E402
from attnkit.tasks.vqa.answers import majority_answer  # noqa: E402
from attnkit.tasks.vqa.dataset import VQAv2Dataset  # noqa: E402
from attnkit.tasks.vqa.grad_norms import stage_grad_norms  # noqa: E402
from attnkit.tasks.vqa.probe import cell_labels, model_grid, probe_grid  # noqa: E402

ROOT = 'data/demo/'
KINDS = [('rel_yesno', r'^is the .* (left|right) of'), ('exists', r'^is there'), ('count', r'^how many'),
         ('color', r'^what colou?r'), ('rel_what', r'^what shape is (left|right)'), ('shape', r'^what shape')]


def kind_of(q: str) -> str:
    q = q.lower()
    return next(k for k, p in KINDS if re.search(p, q))


def _common(size: int) -> dict:
    return dict(img_dir=ROOT + 'voc/JPEGImages', img_name_template='{image_id:06d}.jpg',
                pipeline=[dict(type='Resize', height=size, width=size)])


def _train_dataset(size: int) -> VQAv2Dataset:
    return VQAv2Dataset(ROOT + 'vqa/v2_OpenEnded_mscoco_train_questions.json',
                        ROOT + 'vqa/v2_mscoco_train_annotations.json', answer_min_count=1, max_question_len=14,
                        tokenizer=dict(type='word', min_count=1), **_common(size))


def add_answer_bags(data: dict, size: int) -> None:
    """Put the answer types into ``data['metainfo']`` and every image's answer bag into ``data[split]['bags']``
    (n_images, A) bool, rows in ``image_ids`` order (read from the annotations: the image cache may predate them;
    the JSON is re-read, no image is decoded)."""
    train = _train_dataset(size)
    if train.metainfo['answers'] != data['metainfo']['answers']:
        raise SystemExit(f'work_dirs/vqa_diag_cache_{size}.pt holds another answer vocabulary than data/demo: '
                         'delete it (it is rebuilt).')
    val = VQAv2Dataset(ROOT + 'vqa/v2_OpenEnded_mscoco_val_questions.json', ROOT + 'vqa/v2_mscoco_val_annotations.json',
                       metainfo=train.metainfo, **_common(size))
    data['metainfo'] = dict(data['metainfo'], answer_types=train.metainfo['answer_types'])
    for name, ds in (('train', train), ('val', val)):
        ids = data[name]['image_ids']
        bags = torch.zeros(len(ids), len(train.metainfo['answers']), dtype=torch.bool)
        for row, image_id in enumerate(ids):
            bags[row, list(ds.answer_bags.get(image_id, ()))] = True
        data[name]['bags'] = bags


@torch.no_grad()
def bag_auc(model, split: dict, answers: list[str]) -> dict:
    """ROC AUC of the answer-bag head's pooled image logits against the val images' bags, averaged over the
    answers of the shape questions and of the colour questions: can the auxiliary task itself tell shapes apart?"""
    z = model.answer_bag.image_logits(model_grid(model, split['images']))  # (n_images, K)
    y = split['bags'][:, model.answer_bag.answer_ids]
    of_kind = {}
    for gts, kind in zip(split['answers'], split['kinds']):
        of_kind.setdefault(kind, set()).add(majority_answer(gts))
    out = {}
    for kind in ('shape', 'color'):
        aucs = []
        for k, a in enumerate(model.answer_bag.answer_ids.tolist()):
            pos, neg = z[y[:, k], k], z[~y[:, k], k]
            if answers[a] in of_kind.get(kind, ()) and len(pos) and len(neg):
                diff = pos[:, None] - neg[None, :]
                aucs.append(float((diff > 0).float().mean() + 0.5 * (diff == 0).float().mean()))
        out[f'bag_auc_{kind}'] = round(sum(aucs) / len(aucs), 4) if aucs else None
    return out


def load(size: int):
    cache = f'work_dirs/vqa_diag_cache_{size}.pt'
    if os.path.exists(cache):
        return torch.load(cache, weights_only=True)  # tensors and plain containers only
    common = _common(size)
    train = _train_dataset(size)
    val = VQAv2Dataset(ROOT + 'vqa/v2_OpenEnded_mscoco_val_questions.json', ROOT + 'vqa/v2_mscoco_val_annotations.json',
                       metainfo=train.metainfo, **common)
    out = {'metainfo': train.metainfo}
    for name, ds in (('train', train), ('val', val)):
        ids = sorted({r['image_id'] for r in ds.records})
        first = {}
        for r in ds.records:
            first.setdefault(r['image_id'], r)
        images = torch.stack([ds._load(first[i])[0] for i in ids])
        slot = {i: k for k, i in enumerate(ids)}
        tok = ds.tokenizer([r['question'] for r in ds.records])
        targets = torch.stack([ds._sample(r, images[0], {})['answer_scores'] for r in ds.records])
        q_image = torch.tensor([slot[r['image_id']] for r in ds.records])
        out[name] = {'image_ids': ids, 'images': images, 'q_image': q_image,
                     'input_ids': tok['input_ids'], 'attention_mask': tok['attention_mask'], 'targets': targets,
                     'answers': [r['answers'] for r in ds.records],
                     'kinds': [kind_of(r['question']) for r in ds.records]}
    os.makedirs('work_dirs', exist_ok=True)
    torch.save(out, cache)
    return out


def batch_of(split: dict, idx: list[int]) -> dict:
    idx_t = torch.tensor(idx)
    img_rows = split['q_image'][idx_t]
    uniq, index = torch.unique(img_rows, return_inverse=True)
    mask = split['attention_mask'][idx_t]
    length = int(mask.sum(1).max())
    out = {'images': split['images'][uniq], 'image_index': index, 'input_ids': split['input_ids'][idx_t, :length],
           'attention_mask': mask[:, :length], 'answer_scores': split['targets'][idx_t]}
    if 'bags' in split:  # complete answer bags of the batch's images (--answer-bag)
        out['answer_bag'] = split['bags'][uniq]
    return out


def batches(split: dict, batch: int, per_image: int, epoch: int, seed: int, kinds_balanced: bool) -> list[list[int]]:
    n = len(split['q_image'])
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    if per_image < 0:  # independent questions
        order = torch.randperm(n, generator=g).tolist()
        if kinds_balanced:
            order = balanced_order(split, g)
        return [order[i:i + batch] for i in range(0, len(order) - batch + 1, batch)]
    groups = split['q_image'].tolist()
    s = GroupCapBatchSampler(n, batch, groups=groups, max_per_group=per_image if per_image > 0 else 10 ** 6,
                             seed=seed, drop_last=True)
    s.set_epoch(epoch)
    return list(s)


def balanced_order(split: dict, g: torch.Generator) -> list[int]:
    """Questions drawn so each kind is equally frequent (with replacement within the rarer kinds)."""
    by = {}
    for i, k in enumerate(split['kinds']):
        by.setdefault(k, []).append(i)
    n = len(split['kinds'])
    per = n // len(by)
    out = []
    for k, idx in by.items():
        pick = torch.randint(len(idx), (per,), generator=g).tolist()
        out += [idx[p] for p in pick]
    return [out[i] for i in torch.randperm(len(out), generator=g).tolist()]


@torch.no_grad()
def evaluate(model, split: dict, answers: list[str]) -> dict:
    model.eval()
    n = len(split['q_image'])
    preds = []
    for i in range(0, n, 256):
        b = batch_of(split, list(range(i, min(n, i + 256))))
        preds += model.forward_logits(b)['logits'].argmax(1).tolist()
    model.train()
    acc, per = [], {}
    for p, gts, k in zip(preds, split['answers'], split['kinds']):
        a = vqa_accuracy(answers[p], gts)
        acc.append(a)
        per.setdefault(k, []).append(a)
    return {'accuracy': sum(acc) / n, **{k: round(sum(v) / len(v), 4) for k, v in sorted(per.items())}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument('--name', required=True)
    ap.add_argument('--img-size', type=int, default=64)
    ap.add_argument('--out-indices', default='1')
    ap.add_argument('--grid-fusion', default='last')
    ap.add_argument('--norm', default='bn')
    ap.add_argument('--base-channels', type=int, default=32)
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--per-image', type=int, default=0, help='0: all questions of an image together (group_by); '
                    'k > 0: at most k per image per batch; -1: independent questions')
    ap.add_argument('--kinds-balanced', action='store_true')
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--backbone-lr-mult', type=float, default=1.0)
    ap.add_argument('--wd', type=float, default=0.01)
    ap.add_argument('--warmup', type=int, default=100)
    ap.add_argument('--steps', type=int, default=300)
    ap.add_argument('--eval-every', type=int, default=100)
    ap.add_argument('--loss-reduction', default='num_answers')
    ap.add_argument('--glimpses', type=int, default=2)
    ap.add_argument('--count-glimpses', type=int, default=4)
    ap.add_argument('--qonly', action='store_true')
    ap.add_argument('--aux-pool', type=float, default=0.0, help='weight of an auxiliary loss from a second, '
                    'attention-free head (mul_fusion: mean-pooled grid x mean question) on the same grid')
    ap.add_argument('--oracle-aux', type=float, default=0.0, help='DIAGNOSTIC ONLY (uses the COCO masks): weight '
                    'of a per-cell cross-entropy on the shape of the object at each grid cell, through a linear map')
    ap.add_argument('--answer-bag', type=float, default=0.0, help="weight of the library's answer-bag auxiliary "
                    "loss (VQAModel aux_loss=dict(type='answer_bag'); attnkit.tasks.vqa.answer_bag): per-cell answer "
                    "logits from a 1x1 conv on the grid, pooled, BCE vs the answers of all the image's questions")
    ap.add_argument('--bag-pool', default='lse', help="answer-bag cell pooling: 'lse', 'max' or 'mean'")
    ap.add_argument('--bag-r', type=float, default=5.0, help="answer-bag log-sum-exp temperature (pool 'lse')")
    ap.add_argument('--bag-types', default='other', help='answer types the answer bag scores (comma-separated)')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--max-minutes', type=float, default=6.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    data = load(args.img_size)
    if args.answer_bag > 0:
        add_answer_bags(data, args.img_size)
    meta = data['metainfo']
    out_idx = tuple(int(i) for i in args.out_indices.split(','))
    cfg = dict(type='VQAModel', use_image=not args.qonly,
               backbone=dict(type='ResNet', depth=18, base_channels=args.base_channels, out_indices=out_idx,
                             norm=args.norm),
               grid_fusion=args.grid_fusion,
               question_encoder=dict(type='gru', embed_dim=64, hidden_dim=128, dropout=0.0),
               head=dict(type='mcan', dim=128, heads=4, ffn=256, depth=2, flat_hidden=128, glimpses=args.glimpses,
                         out_dim=256, dropout=0.0, pos_embed=True, count_glimpses=args.count_glimpses),
               loss_reduction=args.loss_reduction, topk=1)
    if args.answer_bag > 0:
        cfg['aux_loss'] = dict(type='answer_bag', weight=args.answer_bag, pool=args.bag_pool, r=args.bag_r,
                               answer_types=tuple(args.bag_types.split(',')))
    if args.qonly:
        cfg.pop('backbone')
    model = build_model(cfg, metainfo=meta)
    aux = None
    if args.aux_pool > 0:
        aux = build_head(dict(type='mul_fusion', dim=256, hidden=256, dropout=0.0),
                         num_answers=len(meta['answers']), img_channels=model.head.img_proj[0].in_features,
                         q_channels=model.question_encoder.out_channels)
        model.aux_head = aux  # trained with the head (not a backbone parameter)
    oracle = None
    if args.oracle_aux > 0:
        with torch.no_grad():
            gh, gw = model_grid(model, data['val']['images'][:2]).shape[-2:]
        oracle_labels = cell_labels(ROOT + 'coco/annotations/instances_train.json', ROOT + 'voc/JPEGImages', (gh, gw),
                                    data['train']['image_ids'])['shape']
        oracle = torch.nn.Conv2d(model.head.img_proj[0].in_features, int(oracle_labels.max()) + 1, 1)
        model.oracle_head = oracle
    model.train()
    bb = [p for n, p in model.named_parameters() if n.startswith('backbone.')]
    rest = [p for n, p in model.named_parameters() if not n.startswith('backbone.')]
    opt = torch.optim.AdamW([{'params': rest, 'lr': args.lr},
                             {'params': bb, 'lr': args.lr * args.backbone_lr_mult}], weight_decay=args.wd)
    base_lrs = [grp['lr'] for grp in opt.param_groups]

    def lr_factor(step: int) -> float:
        if step < args.warmup:
            return 0.01 + 0.99 * step / args.warmup
        t = (step - args.warmup) / max(1, args.steps - args.warmup)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))

    probe_labels = None
    if not args.qonly:
        with torch.no_grad():
            grid = model_grid(model, data['val']['images'][:2]).shape[-2:]
        fit_ids = data['train']['image_ids'][:150]
        tr = cell_labels(ROOT + 'coco/annotations/instances_train.json', ROOT + 'voc/JPEGImages', tuple(grid), fit_ids)
        va = cell_labels(ROOT + 'coco/annotations/instances_val.json', ROOT + 'voc/JPEGImages', tuple(grid),
                         data['val']['image_ids'])
        probe_labels = {k: torch.cat([tr[k], va[k]]) for k in ('shape', 'colour')}
        probe_labels['n_fit'] = len(fit_ids)
        probe_images = torch.cat([data['train']['images'][:150], data['val']['images']])
    os.makedirs('work_dirs/vqa_diag', exist_ok=True)
    log = open(f'work_dirs/vqa_diag/{args.name}.jsonl', 'w')
    log.write(json.dumps({'args': vars(args)}) + '\n')
    step, epoch, t0 = 0, 0, time.time()
    gn_sum, gn_n, loss_sum, bag_sum = {}, 0, 0.0, 0.0
    done = False
    while not done:
        for idx in batches(data['train'], args.batch, args.per_image, epoch, args.seed, args.kinds_balanced):
            for grp, base in zip(opt.param_groups, base_lrs):
                grp['lr'] = base * lr_factor(step)
            b = batch_of(data['train'], idx)
            if aux is None and oracle is None:
                out = model(b)
            else:
                mask = b['attention_mask'].bool()
                q = model.question_encoder(b['input_ids'], mask)
                grid = model.image_grid(model.normalizer(b['images']))
                main = model.head(grid, q, mask, image_index=b['image_index'])['logits']
                loss = model.loss(main, b['answer_scores'])
                if aux is not None:
                    side = aux(grid, q, mask, image_index=b['image_index'])['logits']
                    loss = loss + args.aux_pool * model.loss(side, b['answer_scores'])
                if oracle is not None:  # batch_of orders the images by their row in the cache (torch.unique)
                    rows = torch.unique(data['train']['q_image'][torch.tensor(idx)])
                    loss = loss + args.oracle_aux * torch.nn.functional.cross_entropy(oracle(grid), oracle_labels[rows])
                out = {'loss': loss}
                if model.answer_bag is not None:
                    out['loss_bag'] = model.answer_bag(grid, b['answer_bag'])
                    out['loss'] = loss + model.aux_weight * out['loss_bag']
            opt.zero_grad(set_to_none=True)
            out['loss'].backward()
            loss_sum += float(out['loss'].detach())
            bag_sum += float(out['loss_bag'].detach()) if 'loss_bag' in out else 0.0
            if step % 5 == 0:
                for k, v in stage_grad_norms(model).items():
                    gn_sum[k] = gn_sum.get(k, 0.0) + v
                gn_n += 1
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            over = time.time() - t0 > args.max_minutes * 60
            if step % args.eval_every == 0 or step == args.steps or over:
                rec = {'step': step, 'epoch': round(step * args.batch / len(data['train']['q_image']), 2),
                       'wall_s': round(time.time() - t0, 1), 'loss': round(loss_sum / max(1, args.eval_every), 4),
                       'uptime': os.getloadavg()[0]}
                if model.answer_bag is not None:
                    rec['loss_bag'] = round(bag_sum / max(1, args.eval_every), 4)
                rec.update(evaluate(model, data['val'], meta['answers']))
                if model.answer_bag is not None:
                    rec.update(bag_auc(model, data['val'], meta['answers']))
                if probe_labels is not None:
                    feats = model_grid(model, probe_images)
                    frac = probe_labels['n_fit'] / len(probe_images)
                    for k in ('shape', 'colour'):
                        r = probe_grid(feats, probe_labels[k], int(probe_labels[k].max()) + 1, fit_fraction=frac,
                                       objects_only=True)
                        rec[f'probe_{k}'] = round(r['accuracy'], 4)
                        rec[f'probe_{k}_chance'] = round(r['majority'], 4)
                rec['grad'] = {k: float(f'{v / max(1, gn_n):.3g}') for k, v in gn_sum.items()}
                gn_sum, gn_n, loss_sum, bag_sum = {}, 0, 0.0, 0.0
                print(json.dumps(rec), flush=True)
                log.write(json.dumps(rec) + '\n')
                log.flush()
            if step >= args.steps or over:
                done = True
                break
        epoch += 1


if __name__ == '__main__':
    main()
