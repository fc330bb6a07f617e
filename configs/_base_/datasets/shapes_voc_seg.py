# The shapes demo data (`attnkit data demo` writes data/demo) as a Pascal VOC segmentation set: 128x128 images,
# 1000 train / 200 val, background + 4 shapes. Configs add their training pipeline and batch sizes.
task = 'segmentation'
data_root = 'data/demo/voc'
metainfo = dict(classes=['background', 'circle', 'square', 'triangle', 'star'])
voc_split = dict(type='VOCSegmentation', root=data_root, pipeline=[], metainfo=metainfo)
data = dict(
    train=dict(dataset=dict(voc_split, split_file='ImageSets/Segmentation/train.txt'), batch_size=8, num_workers=0),
    val=dict(dataset=dict(voc_split, split_file='ImageSets/Segmentation/val.txt'), batch_size=16, num_workers=0),
    test=None,
)
evaluator = dict(type='IoUMetric')
