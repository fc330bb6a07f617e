# One ResNet-18 backbone, three heads: FCOS detection + DANet segmentation + MCAN VQA trained jointly on the
# "shapes" demo world (`attnkit data demo` writes data/demo: 128x128 images, 1000 train / 200 val, boxes, masks and
# ~10 questions per image on the SAME images). docs/multitask.md explains the wiring, the sampler and the benchmark.
#
# Compared with the three single-task demos (configs/demo/fcos_r18-cbam_fpn_shapes.py, danet_r18-d8_shapes.py,
# mcan_r18_gru_shapes.py):
# - ONE backbone: ResNet-18 (base 32, CBAM in layers 2-4 as in the FCOS demo), not dilated (detection needs the
#   stride-32 pyramid); the segmentation branch gets the output stride 8 of the DANet demo from an FPN level
#   (P3) instead of a dilated backbone; the VQA branch reads the layer1 + layer3 hypercolumn grid as its demo does.
# - VQA trains from scratch here: no separate segmentation pre-training stage (the shared backbone learns shapes
#   from the detection and segmentation batches).
# - each batch holds one task; tasks are mixed by temperature sampling (T=2) of their batch counts.
# Train:  attnkit train configs/demo/multitask_r18_shapes.py
# Test:   attnkit test configs/demo/multitask_r18_shapes.py work_dirs/multitask_r18_shapes/model.safetensors
# Infer:  attnkit infer configs/demo/multitask_r18_shapes.py work_dirs/multitask_r18_shapes/model.safetensors \
#             data/demo/voc/JPEGImages/001001.jpg --question "what color is the circle?"
_base_ = ['../_base_/default_runtime.py']
task = 'multitask'
data_root = 'data/demo'
img_dir = f'{data_root}/voc/JPEGImages'
seg_meta = dict(classes=['background', 'circle', 'square', 'triangle', 'star'])

# --- per-task datasets: the single-task demos' settings ------------------------------------------------------
det_train = dict(type='CocoDetection', ann_file=f'{data_root}/coco/annotations/instances_train.json', img_dir=img_dir,
                 pipeline=[dict(type='HorizontalFlip', p=0.5), dict(type='VerticalFlip', p=0.5),
                           dict(type='RandomRotate90', p=0.5)], filter_empty=True)
det_val = dict(type='CocoDetection', ann_file=f'{data_root}/coco/annotations/instances_val.json', img_dir=img_dir,
               pipeline=[])
seg_split = dict(type='VOCSegmentation', root=f'{data_root}/voc', metainfo=seg_meta)
seg_train = dict(seg_split, split_file='ImageSets/Segmentation/train.txt', pipeline=[
    dict(type='RandomResizeRatio', ratio_range=(0.9, 1.25)),
    dict(type='RandomCropCatMax', height=128, width=128, cat_max_ratio=1.0),
    dict(type='HorizontalFlip', p=0.5),
    dict(type='PadIfNeeded', min_height=128, min_width=128, position='top_left', border_mode=0, fill=0,
         fill_mask=255)])
seg_val = dict(seg_split, split_file='ImageSets/Segmentation/val.txt', pipeline=[])
vqa_split = dict(type='VQAv2Dataset', img_dir=img_dir, img_name_template='{image_id:06d}.jpg',
                 pipeline=[dict(type='Resize', height=128, width=128)])
vqa_train = dict(vqa_split, questions_file=f'{data_root}/vqa/v2_OpenEnded_mscoco_train_questions.json',
                 annotations_file=f'{data_root}/vqa/v2_mscoco_train_annotations.json', answer_min_count=1,
                 max_question_len=14, tokenizer=dict(type='word', min_count=1), flip_prob=0.5)
vqa_val = dict(vqa_split, questions_file=f'{data_root}/vqa/v2_OpenEnded_mscoco_val_questions.json',
               annotations_file=f'{data_root}/vqa/v2_mscoco_val_annotations.json')

data = dict(
    train=dict(dataset=dict(type='MultiTaskDataset', tasks=dict(det=det_train, seg=seg_train, vqa=vqa_train)),
               # p_t ∝ n_t^(1/T), n_t = batches per pass: det 63, seg 125, vqa ~79 -> 0.28 / 0.40 / 0.32
               sampler=dict(mode='temperature', T=2),
               batch_size=dict(det=16, seg=8, vqa=128),
               group_by=dict(vqa='image'),  # a VQA batch holds all questions of ~13 images: one backbone pass each
               num_workers=1),
    val=dict(dataset=dict(type='MultiTaskDataset', tasks=dict(det=det_val, seg=seg_val, vqa=vqa_val)),
             batch_size=dict(det=16, seg=16, vqa=64), num_workers=1),
    test=None,
)
evaluator = dict(det=dict(type='CocoMetric'), seg=dict(type='IoUMetric'), vqa=dict(type='VQAAccuracy'))

# --- one backbone, three branches ----------------------------------------------------------------------------
model = dict(
    type='MultiTaskModel',
    backbone=dict(type='ResNet', depth=18, base_channels=32, out_indices=(0, 1, 2, 3),
                  attention=dict(type='cbam', stages=(False, True, True, True))),
    branches=dict(
        # the FCOS demo's neck and head on layers 2-4 (strides 8, 16, 32), with ONE conv per tower instead of 3
        # (inference: docs/multitask.md "Lighter branches"; AP 0.781 as with 3)
        det=dict(task='detection', in_indices=(1, 2, 3),
                 neck=dict(type='FPN', out_channels=64, num_outs=3, start_level=0),
                 head=dict(type='FCOSHead', feat_channels=64, stacked_convs=1, strides=(8, 16, 32),
                           regress_ranges=((-1, 16), (16, 32), (32, 1e8)), center_sampling=True,
                           center_sample_radius=1.5, norm_on_bbox=True, score_thr=0.05, nms_pre=1000,
                           iou_thr=0.6, max_per_img=100)),
        # DANet on the stride-8 level (P3) of its own FPN over layers 2-4 (the DANet demo's output stride 8
        # without dilation; a stride-4 level would be computed and never read); the auxiliary FCN reads layer3
        # (auxiliary heads read the backbone maps in_indices) as in the demo. One FPN shared with the detection
        # branch is possible (necks=..., inputs=...; docs/multitask.md): faster, but VQA 0.886 in its run
        seg=dict(task='segmentation', in_indices=(1, 2, 3),
                 neck=dict(type='FPN', out_channels=64, num_outs=3, start_level=0),
                 decode_head=dict(type='danet', in_index=0, channels=32, pam=dict(type='danet_pam', reduction=8),
                                  cam=dict(type='danet_cam'), identity_init=True, aux_weight=0.5, dropout=0.1),
                 auxiliary_head=dict(type='fcn', in_index=1, channels=16, num_convs=1, concat_input=False,
                                     dropout=0.1, loss_weight=0.4, loss_name='loss_aux'),
                 test_mode='whole'),
        # the MCAN demo (one layer instead of 2: the from-scratch recipe's, docs/bench/vqa.md): layer1 (colour,
        # edges) pooled to layer3's 8x8 grid, next to layer3 (shape)
        vqa=dict(task='vqa', in_indices=(0, 2), grid_fusion='concat',
                 question_encoder=dict(type='gru', embed_dim=64, hidden_dim=128, dropout=0.0),
                 head=dict(type='mcan', dim=128, heads=4, ffn=256, depth=1, flat_hidden=128, glimpses=2,
                           out_dim=256, dropout=0.0, pos_embed=True, count_glimpses=4),
                 loss_reduction='num_answers', topk=5,
                 # the answer-bag loss (docs/vqa.md) starts the colour read-out (colour questions 0.23 -> 0.99);
                 # at weight 1 it starved detection and segmentation (AP 0.314, mIoU 0.536), at 0.1 it does not
                 aux_loss=dict(type='answer_bag', weight=0.1, pool='mean', answer_types=('other',))),
    ),
    loss_weights=dict(det=1.0, seg=1.0, vqa=1.0),
    loss_weighting='fixed',  # or 'uncertainty': learned homoscedastic weights (Kendall et al. 2018)
)
infer_cfg = dict(pipeline=[])  # attnkit infer: one pipeline for all branches (the demo images are 128 px already)

# the VQA branch at half the rate (1e-3, the VQA demo's): at the shared 2e-3 its grid attention never found the
# objects (VQA 0.549 with everything else equal; 0.766 with this, docs/multitask.md "Measured")
optim = dict(_delete_=True, optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
             lr_mult={'branches.vqa': 0.5},
             no_decay=('norm', 'bias', 'scale', 'pos', 'log'), grad_clip=dict(max_norm=35.0))
# the single-task demos run det 630 + seg 1200 + VQA 1580 (+ 300 pre-training) iterations; here 3800 one-task
# iterations: ~1050 det, ~1520 seg, ~1230 VQA batches under the T=2 mix (docs/multitask.md, "Measured": 3600
# gave VQA 0.890, 3800 0.917)
schedule = dict(by_epoch=False, max_epochs=None, max_iters=3800, warmup_iters=100, warmup_ratio=0.01,
                policy='cosine', min_lr_ratio=0.01)
runtime = dict(mixed_precision='no', channels_last=False, log_interval=25, report=False)
train_cfg = dict(eval_interval=1900, checkpoint_interval=950,
                 best_metric={'det/AP': 1.0, 'seg/mIoU': 1.0, 'vqa/accuracy': 1.0})
