# MCAN-small, ResNet-50 grid (backbone at 0.1x lr), built-in word tokens + BiGRU, VQA v2 train -> val.
_base_ = ['../_base_/models/mcan_r50.py', '../_base_/datasets/vqav2.py', '../_base_/default_runtime.py']
optim = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.98), weight_decay=0.0),
             lr_mult={'backbone': 0.1}, grad_clip=dict(_delete_=True, max_norm=10.0))
schedule = dict(by_epoch=True, max_epochs=13, warmup_iters=2000, warmup_ratio=0.25, policy='step',
                milestones=(10, 12), gamma=0.2)
runtime = dict(mixed_precision='bf16', channels_last=True)
train_cfg = dict(eval_interval=1, checkpoint_interval=1)
