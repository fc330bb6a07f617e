# RetinaNet R50-FPN (Lin et al. 2017): 9 anchors per location (3 scales x 3 ratios) on P3-P7, focal loss,
# smooth-L1 on (dx, dy, dw, dh) deltas (loss_bbox='giou' for GIoU on decoded boxes); P6 from C5 ('on_input').
model = dict(
    type='Detector',
    backbone=dict(type='ResNet', depth=50, out_indices=(0, 1, 2, 3), frozen_stages=1, norm_eval=True,
                  pretrained='torchvision://resnet50'),
    neck=dict(type='FPN', out_channels=256, num_outs=5, start_level=1, add_extra_convs='on_input'),
    head=dict(type='RetinaHead', feat_channels=256, stacked_convs=4, strides=(8, 16, 32, 64, 128),
              ratios=(0.5, 1.0, 2.0), octave_base_scale=4, scales_per_octave=3, pos_iou_thr=0.5, neg_iou_thr=0.4,
              min_pos_iou=0.0, loss_bbox='smooth_l1', beta=1.0 / 9, score_thr=0.05, nms_pre=1000, iou_thr=0.5,
              max_per_img=100),
)
