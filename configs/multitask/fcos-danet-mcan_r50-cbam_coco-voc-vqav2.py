# One ImageNet-pretrained ResNet-50 with CBAM in layers 2-4, three branches trained jointly: FCOS detection on COCO
# 2017, DANet segmentation on Pascal VOC 2012 aug, MCAN VQA on VQA v2. docs/multitask.md explains the wiring.
#
# Data layout (the same as the single-task configs; see docs/multitask.md "Real data"):
#   data/coco/annotations/instances_{train,val}2017.json, data/coco/{train,val}2017/*.jpg          (detection)
#   data/VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, SegmentationClassAug,
#                           ImageSets/Segmentation/{trainaug,val}.txt}                            (segmentation)
#   data/vqav2/v2_OpenEnded_mscoco_{train2014,val2014}_questions.json,
#   data/vqav2/v2_mscoco_{train2014,val2014}_annotations.json,
#   data/vqav2/{train2014,val2014}/COCO_<subtype>_<image_id:012d>.jpg                                (VQA)
# Note: VQA v2 val2014 images are largely in COCO train2017, so the detection branch trains on images the VQA
# branch is evaluated on (no VQA labels leak; the backbone has seen the pixels). Hold them out of data/coco for
# a strict VQA evaluation.
#
# Each batch holds one task at its own input size (COCO 800x1333, VOC 512 crops, VQA 448); tasks are mixed by
# temperature sampling (T=2) of their batch counts: per 8-GPU step n_t = 7.4k COCO, 331 VOC, 866 VQA batches
# per pass -> p = 0.65 / 0.14 / 0.22. The task losses are balanced by learned uncertainty weights.
# accelerate launch -m attnkit train configs/multitask/fcos-danet-mcan_r50-cbam_coco-voc-vqav2.py  (8 GPUs)
_base_ = ['../_base_/default_runtime.py']
task = 'multitask'
coco_root = 'data/coco'
voc_root = 'data/VOCdevkit/VOC2012'
vqa_root = 'data/vqav2/'

# --- per-task datasets (the single-task configs' settings) -----------------------------------------------------
det_train = dict(type='CocoDetection', ann_file=f'{coco_root}/annotations/instances_train2017.json',
                 img_dir=f'{coco_root}/train2017', filter_empty=True,
                 pipeline=dict(transforms=[dict(type='ResizeShortLong', short=800, long=1333),
                                           dict(type='HorizontalFlip', p=0.5)], min_visibility=0.0))
det_val = dict(type='CocoDetection', ann_file=f'{coco_root}/annotations/instances_val2017.json',
               img_dir=f'{coco_root}/val2017', pipeline=[dict(type='ResizeShortLong', short=800, long=1333)])
crop = (512, 512)
seg_train = dict(type='VOCSegmentation', root=voc_root, split_file='ImageSets/Segmentation/trainaug.txt',
                 ann_dir='SegmentationClassAug', pipeline=[
                     dict(type='RandomResizeRatio', ratio_range=(0.5, 2.0), base_size=(2048, 512)),
                     dict(type='RandomCropCatMax', height=crop[0], width=crop[1], cat_max_ratio=0.75,
                          ignore_index=255),
                     dict(type='HorizontalFlip', p=0.5),
                     dict(type='PhotoMetricDistortion'),
                     dict(type='PadIfNeeded', min_height=crop[0], min_width=crop[1], position='top_left',
                          border_mode=0, fill=0, fill_mask=255)])
seg_val = dict(type='VOCSegmentation', root=voc_root, split_file='ImageSets/Segmentation/val.txt',
               ann_dir='SegmentationClass', pipeline=[dict(type='RescaleKeepRatio', scale=(2048, 512))])
vqa_pipeline = [dict(type='Resize', height=448, width=448)]  # no flip: "left of" questions
vqa_train = dict(type='VQAv2Dataset', questions_file=vqa_root + 'v2_OpenEnded_mscoco_train2014_questions.json',
                 annotations_file=vqa_root + 'v2_mscoco_train2014_annotations.json',
                 img_dir=vqa_root + 'train2014', pipeline=vqa_pipeline, answer_min_count=9, max_question_len=14,
                 tokenizer=dict(type='word', min_count=1))
vqa_val = dict(type='VQAv2Dataset', questions_file=vqa_root + 'v2_OpenEnded_mscoco_val2014_questions.json',
               annotations_file=vqa_root + 'v2_mscoco_val2014_annotations.json', img_dir=vqa_root + 'val2014',
               pipeline=vqa_pipeline)

data = dict(
    train=dict(dataset=dict(type='MultiTaskDataset', tasks=dict(det=det_train, seg=seg_train, vqa=vqa_train)),
               sampler=dict(mode='temperature', T=2),
               batch_size=dict(det=2, seg=4, vqa=64),  # per process
               group_by=dict(vqa='image'), num_workers=4),
    val=dict(dataset=dict(type='MultiTaskDataset', tasks=dict(det=det_val, seg=seg_val, vqa=vqa_val)),
             batch_size=dict(det=1, seg=1, vqa=64), num_workers=4),
    test=None,
)
evaluator = dict(det=dict(type='CocoMetric'), seg=dict(type='IoUMetric'), vqa=dict(type='VQAAccuracy'))

# --- one backbone, three branches ------------------------------------------------------------------------------
model = dict(
    type='MultiTaskModel',
    # not dilated: the detection pyramid needs strides 8-32 (the segmentation branch gets stride 8 from its FPN)
    backbone=dict(type='ResNet', depth=50, out_indices=(0, 1, 2, 3), frozen_stages=1, norm_eval=True,
                  pretrained='torchvision://resnet50', identity_init=True,
                  attention=dict(type='cbam', stages=(False, True, True, True))),
    branches=dict(
        # configs/_base_/models/fcos_r50_fpn.py: FPN P3-P7 over layers 2-4
        det=dict(task='detection', in_indices=(0, 1, 2, 3),
                 neck=dict(type='FPN', out_channels=256, num_outs=5, start_level=1, add_extra_convs='on_output',
                           relu_before_extra_convs=True),
                 head=dict(type='FCOSHead', feat_channels=256, stacked_convs=4, strides=(8, 16, 32, 64, 128),
                           regress_ranges=((-1, 64), (64, 128), (128, 256), (256, 512), (512, 1e8)),
                           center_sampling=True, center_sample_radius=1.5, norm_on_bbox=True,
                           centerness_on_reg=True, norm='GN', focal_alpha=0.25, focal_gamma=2.0, score_thr=0.05,
                           nms_pre=1000, iou_thr=0.6, max_per_img=100)),
        # DANet (configs/_base_/models/danet_r50-d8.py) on the stride-8 level (P3) of its own FPN over layers 2-4;
        # auxiliary FCN on P4. (An FPN from layer 1 would also compute a stride-4 level that nothing reads: its 3x3
        # output conv alone is ~10 GFLOP at 512 px, ~45 ms of the branch here.)
        seg=dict(task='segmentation', in_indices=(1, 2, 3),
                 neck=dict(type='FPN', out_channels=256, num_outs=3, start_level=0),
                 decode_head=dict(type='danet', in_index=0, channels=256, pam=dict(type='danet_pam', reduction=8),
                                  cam=dict(type='danet_cam'), identity_init=True, aux_weight=1.0, dropout=0.1),
                 auxiliary_head=dict(type='fcn', in_index=1, channels=256, num_convs=1, concat_input=False,
                                     dropout=0.1, loss_weight=0.4, loss_name='loss_aux'),
                 test_mode='whole'),
        # MCAN-small (configs/_base_/models/mcan_r50.py) on the C5 grid (14x14 at 448 px)
        vqa=dict(task='vqa', in_indices=(3,),
                 question_encoder=dict(type='gru', embed_dim=300, hidden_dim=512),
                 head=dict(type='mcan', dim=512, heads=8, ffn=2048, depth=6, flat_hidden=512, glimpses=1,
                           out_dim=1024, dropout=0.1, pos_embed=True),
                 loss_reduction='num_answers', topk=5),
    ),
    loss_weighting='uncertainty',  # learned log-variances, loss_weighting.log_vars.<task> (Kendall et al. 2018)
)
infer_cfg = dict(pipeline=[dict(type='ResizeShortLong', short=800, long=1333)])  # one pass for all branches

optim = dict(_delete_=True, optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
             no_decay=('norm', 'bias', 'pos', 'log'), grad_clip=dict(max_norm=35.0))
schedule = dict(by_epoch=False, max_epochs=None, max_iters=120000, warmup_iters=1500, warmup_ratio=0.001,
                policy='step', milestones=(90000, 110000), gamma=0.1)
runtime = dict(mixed_precision='bf16', channels_last=True, report=False)
train_cfg = dict(eval_interval=10000, checkpoint_interval=5000, keep_ckpts=2,
                 best_metric={'det/AP': 1.0, 'seg/mIoU': 1.0, 'vqa/accuracy': 1.0})
