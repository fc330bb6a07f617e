# 20 epochs, cosine decay to 1% of the lr, 500 warm-up iterations (AdamW-style fine-tuning, VQA).
schedule = dict(by_epoch=True, max_epochs=20, max_iters=None, warmup_iters=500, warmup_ratio=0.001,
                policy='cosine', milestones=(), gamma=0.1, power=0.9, min_lr_ratio=0.01)
