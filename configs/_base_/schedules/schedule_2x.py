# 24 epochs, lr x0.1 after epochs 16 and 22, 500 warm-up iterations (mmdetection "2x").
schedule = dict(by_epoch=True, max_epochs=24, max_iters=None, warmup_iters=500, warmup_ratio=0.001,
                policy='step', milestones=(16, 22), gamma=0.1, power=0.9, min_lr_ratio=0.0)
