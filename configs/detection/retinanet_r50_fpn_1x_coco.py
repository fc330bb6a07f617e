# RetinaNet R50-FPN, 1x schedule on COCO 2017 (16 images per step, SGD lr 0.01).
_base_ = ['../_base_/models/retinanet_r50_fpn.py', '../_base_/datasets/coco_detection.py',
          '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py']
optim = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4), grad_clip=dict(_delete_=True, max_norm=35.0))
