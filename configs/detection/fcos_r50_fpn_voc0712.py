# FCOS R50-FPN on Pascal VOC 07+12 trainval, tested on VOC2007 test (VOC 11-point mAP@0.5):
# 12 epochs, lr x0.1 after epochs 9 and 11.
_base_ = ['../_base_/models/fcos_r50_fpn.py', '../_base_/datasets/voc0712.py',
          '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py']
optim = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4), grad_clip=dict(_delete_=True, max_norm=35.0))
schedule = dict(max_epochs=12, milestones=(9, 11))
