# Runtime defaults shared by every config (see docs/engine.md for each key).
runtime = dict(
    seed=0,
    deterministic=False,          # torch.use_deterministic_algorithms(True, warn_only=True)
    mixed_precision='no',         # 'no' | 'fp16' (GPU) | 'bf16' (GPU and CPU); `attnkit train --amp bf16`
    channels_last='auto',         # channels_last memory format: True, False, or 'auto' (CUDA; CPU inference)
    sync_bn=False,                # BatchNorm -> SyncBatchNorm with more than one GPU process
    log_interval=20,              # iterations between log.jsonl / TensorBoard lines
    find_unused_parameters=False,  # DDP option for models with branches unused in some steps
    tensorboard=True,             # TensorBoard logs in work_dir/tb (skipped with a warning if not installed)
)
optim = dict(
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4),  # any torch.optim class
    lr_mult=dict(),               # name prefix -> lr multiplier, e.g. dict(backbone=0.1)
    no_decay=('norm', 'bias', 'pos'),  # no weight decay on norm layers, biases, position tables
    grad_clip=None,               # e.g. dict(max_norm=35.0)
    accumulate_steps=1,           # gradient accumulation (batches per optimizer update)
)
train_cfg = dict(
    eval_interval=1,              # epochs (by_epoch schedules) or iterations between evaluations
    checkpoint_interval=1,        # epochs / iterations between latest.pth saves
    keep_ckpts=0,                 # also keep the last k epoch_N.pth / iter_N.pth files (0 = none)
    ema=None,                     # e.g. dict(momentum=0.0002): evaluate and export EMA weights
    early_stopping=None,          # e.g. dict(patience=3, min_delta=0.0) on the primary metric
    max_nonfinite_steps=10,       # a step with NaN/Inf gradients is skipped; stop after this many in a row
)
work_dir = None                   # default work_dirs/<config file name>
