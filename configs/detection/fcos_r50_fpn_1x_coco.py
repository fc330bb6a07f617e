# FCOS R50-FPN, 1x schedule (12 epochs) on COCO 2017: 16 images per step (8 GPUs x 2), SGD lr 0.01.
# attnkit train configs/detection/fcos_r50_fpn_1x_coco.py  (accelerate launch -m attnkit train ... on 8 GPUs)
_base_ = ['../_base_/models/fcos_r50_fpn.py', '../_base_/datasets/coco_detection.py',
          '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py']
optim = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4),
             grad_clip=dict(_delete_=True, max_norm=35.0))
