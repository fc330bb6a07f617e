#!/usr/bin/env python
"""Diagnostic (issue 18): can a from-scratch ResNet-18 learn which shapes an image holds from image-level labels?

Multi-label BCE on the shape categories present in each demo scene (from the COCO annotations' categories only:
no boxes or masks are used), a 1x1 conv on the backbone's layer-K grid pooled over the cells (``avg`` = global
average pooling, or ``lse`` = log-sum-exp with r = 5, as the answer-bag loss), AdamW 1e-3, random batches of B
scenes; every 100 steps the val ROC AUC per shape. It isolates what the answer-bag loss on VQA batches mixes
together: complete labels vs the incomplete answer bags, the pooling, the number of images per step.

    OMP_NUM_THREADS=1 python tools/diag_shape_presence.py SIZE POOL STEPS OUT_INDEX [BATCH]
    OMP_NUM_THREADS=1 python tools/diag_shape_presence.py 128 avg 400 2 32     # docs/bench/vqa.md, 2026-12-02
"""
import os
os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')
import json, sys, time, torch, numpy as np, torch.nn.functional as F
from PIL import Image
from sklearn.metrics import roc_auc_score
torch.manual_seed(0); torch.set_num_threads(1)
size, pool, steps, out_idx = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]); B = int(sys.argv[5]) if len(sys.argv) > 5 else 32
root='data/demo'
def load(split):
    d=json.load(open(f'{root}/coco/annotations/instances_{split}.json'))
    cats={c['id']:i for i,c in enumerate(sorted(d['categories'],key=lambda c:c['id']))}
    lab={im['id']:np.zeros(len(cats),np.float32) for im in d['images']}
    for a in d['annotations']: lab[a['image_id']][cats[a['category_id']]]=1
    ims=[];ys=[]
    for im in d['images']:
        x=np.asarray(Image.open(f"{root}/voc/JPEGImages/{im['file_name']}").convert('RGB').resize((size,size),Image.BILINEAR))
        ims.append(torch.from_numpy(x.copy()).permute(2,0,1)); ys.append(lab[im['id']])
    return torch.stack(ims).float().div(255).sub(0.45).div(0.25), torch.from_numpy(np.stack(ys)), [c['name'] for c in sorted(d['categories'],key=lambda c:c['id'])]
Xtr,Ytr,names=load('train'); Xva,Yva,_=load('val')
print(names, Xtr.shape, Ytr.mean(0))
from attnkit.backbones.resnet import ResNet
bb=ResNet(depth=18, base_channels=32, out_indices=(out_idx,))
C=bb.out_channels[-1]; head=torch.nn.Conv2d(C, Ytr.shape[1], 1)
params=list(bb.parameters())+list(head.parameters())
opt=torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
from attnkit.tasks.vqa.answer_bag import pool_cells  # the answer-bag loss's own pooling
def fwd(x):
    return pool_cells(head(bb(x)[-1]), {'avg': 'mean'}.get(pool, pool), r=5.0)
t0=time.time()
for s in range(1,steps+1):
    bb.train(); idx=torch.randint(0,len(Xtr),(B,))
    loss=F.binary_cross_entropy_with_logits(fwd(Xtr[idx]),Ytr[idx])
    opt.zero_grad(); loss.backward(); opt.step()
    if s%100==0:
        bb.eval()
        with torch.no_grad(): P=torch.cat([fwd(Xva[i:i+100]) for i in range(0,len(Xva),100)])
        aucs=[roc_auc_score(Yva[:,k],P[:,k]) for k in range(Yva.shape[1])]
        print(s, f'{time.time()-t0:.0f}s loss {loss.item():.3f} AUC', [f'{n}:{a:.2f}' for n,a in zip(names,aucs)], flush=True)
