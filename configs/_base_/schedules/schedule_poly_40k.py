# 40k iterations, poly decay (power 0.9) to 1e-4 x lr, no warm-up: the usual semantic-segmentation schedule.
# Intervals count iterations here: set train_cfg = dict(eval_interval=4000, checkpoint_interval=4000) in the
# config that uses this file (default_runtime.py owns train_cfg; mmengine forbids one key in two _base_ files).
schedule = dict(by_epoch=False, max_epochs=None, max_iters=40000, warmup_iters=0, warmup_ratio=0.001,
                policy='poly', milestones=(), gamma=0.1, power=0.9, min_lr_ratio=1e-4)
