# Semantic FPN on a ResNet-50 with CBAM in layers 2-4 (identity-initialised, so the ImageNet weights start
# unchanged), 512x512 crops, 20k iterations.
_base_ = ['../_base_/models/semfpn_r50.py', '../_base_/datasets/voc12aug.py',
          '../_base_/schedules/schedule_poly_40k.py', '../_base_/default_runtime.py']
model = dict(backbone=dict(attention=dict(type='cbam', stages=(False, True, True, True))))
schedule = dict(max_iters=20000)
optim = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4))
train_cfg = dict(eval_interval=2000, checkpoint_interval=2000)
