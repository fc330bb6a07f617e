# Pascal VOC 2007+2012 trainval ("0712", 16,551 images), tested on VOC2007 test (4,952 images).
# Layout: data/VOCdevkit/VOC2007/{Annotations,JPEGImages,ImageSets/Main/{trainval,test}.txt}, same for VOC2012.
task = 'detection'
data_root = 'data/VOCdevkit'
train_pipeline = dict(
    transforms=[
        dict(type='ResizeShortLong', short=600, long=1000),
        dict(type='RandomRelativeCrop', scale=(0.7, 1.0), p=0.3),
        dict(type='PhotoMetricDistortion'),
        dict(type='HorizontalFlip', p=0.5),
    ],
    min_visibility=0.3,  # boxes keeping less than 30% of their area after a crop are dropped
)
test_pipeline = [dict(type='ResizeShortLong', short=600, long=1000)]
data = dict(
    train=dict(dataset=dict(type='VOCDetection',
                            root=[(f'{data_root}/VOC2007', 'ImageSets/Main/trainval.txt'),
                                  (f'{data_root}/VOC2012', 'ImageSets/Main/trainval.txt')],
                            pipeline=train_pipeline, filter_empty=True),
               batch_size=2, num_workers=2),
    val=dict(dataset=dict(type='VOCDetection', root=f'{data_root}/VOC2007', split_file='ImageSets/Main/test.txt',
                          pipeline=test_pipeline),
             batch_size=1, num_workers=2),
    test=None,
)
evaluator = dict(type='VOCMetric', iou_thr=0.5, mode='11points')  # VOC2007 test: 11-point AP
