# DANet R50-D8, 512x512 crops, 20k iterations (batch 4 per process; the reference setting is 4 GPUs x 4).
_base_ = ['../_base_/models/danet_r50-d8.py', '../_base_/datasets/voc12aug.py',
          '../_base_/schedules/schedule_poly_40k.py', '../_base_/default_runtime.py']
schedule = dict(max_iters=20000)
optim = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4))
train_cfg = dict(eval_interval=2000, checkpoint_interval=2000)
