# Pascal VOC 2012 + SBD "aug" labels: train on the 10,582 trainaug images, evaluate on the 1,449 val images.
# Layout (docs/segmentation.md): data/VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, SegmentationClassAug,
# ImageSets/Segmentation/{train,val,trainaug}.txt}.
task = 'segmentation'
data_root = 'data/VOCdevkit/VOC2012'
crop_size = (512, 512)
train_pipeline = [
    dict(type='RandomResizeRatio', ratio_range=(0.5, 2.0), base_size=(2048, 512)),
    dict(type='RandomCropCatMax', height=crop_size[0], width=crop_size[1], cat_max_ratio=0.75, ignore_index=255),
    dict(type='HorizontalFlip', p=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PadIfNeeded', min_height=crop_size[0], min_width=crop_size[1], position='top_left',
         border_mode=0, fill=0, fill_mask=255),
]
test_pipeline = [dict(type='RescaleKeepRatio', scale=(2048, 512))]
data = dict(
    train=dict(dataset=dict(type='VOCSegmentation', root=data_root, split_file='ImageSets/Segmentation/trainaug.txt',
                            ann_dir='SegmentationClassAug', pipeline=train_pipeline),
               batch_size=4, num_workers=4),
    val=dict(dataset=dict(type='VOCSegmentation', root=data_root, split_file='ImageSets/Segmentation/val.txt',
                          ann_dir='SegmentationClass', pipeline=test_pipeline),
             batch_size=1, num_workers=2),
    test=None,
)
evaluator = dict(type='IoUMetric')
# attnkit infer: query pixel (y, x) of the attention heat maps (None = image centre; floats = relative)
infer_cfg = dict(attn_point=None)
