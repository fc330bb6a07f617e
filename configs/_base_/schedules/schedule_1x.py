# 12 epochs, lr x0.1 after epochs 8 and 11, linear warm-up over the first 500 iterations (mmdetection "1x").
schedule = dict(by_epoch=True, max_epochs=12, max_iters=None, warmup_iters=500, warmup_ratio=0.001,
                policy='step', milestones=(8, 11), gamma=0.1, power=0.9, min_lr_ratio=0.0)
