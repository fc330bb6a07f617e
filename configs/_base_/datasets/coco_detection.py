# COCO 2017 detection. Layout: data/coco/annotations/instances_{train,val}2017.json, data/coco/{train,val}2017/*.jpg
task = 'detection'
data_root = 'data/coco'
train_pipeline = dict(
    transforms=[
        dict(type='ResizeShortLong', short=800, long=1333),
        dict(type='HorizontalFlip', p=0.5),
    ],
    min_visibility=0.0,
)
test_pipeline = [dict(type='ResizeShortLong', short=800, long=1333)]
data = dict(
    train=dict(dataset=dict(type='CocoDetection', ann_file=f'{data_root}/annotations/instances_train2017.json',
                            img_dir=f'{data_root}/train2017', pipeline=train_pipeline, filter_empty=True),
               batch_size=2, num_workers=2),
    val=dict(dataset=dict(type='CocoDetection', ann_file=f'{data_root}/annotations/instances_val2017.json',
                          img_dir=f'{data_root}/val2017', pipeline=test_pipeline),
             batch_size=1, num_workers=2),
    test=None,
)
evaluator = dict(type='CocoMetric')
