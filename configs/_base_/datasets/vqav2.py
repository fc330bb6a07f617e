# VQA v2 (official files, https://visualqa.org/download.html) laid out as
#   data/vqav2/v2_OpenEnded_mscoco_{train2014,val2014,test-dev2015}_questions.json
#   data/vqav2/v2_mscoco_{train2014,val2014}_annotations.json
#   data/vqav2/{train2014,val2014,test2015}/COCO_<subtype>_<image_id:012d>.jpg
task = 'vqa'
data_root = 'data/vqav2/'
img_size = 448
train_pipeline = [dict(type='Resize', height=img_size, width=img_size)]  # no flip: "left of" questions
test_pipeline = [dict(type='Resize', height=img_size, width=img_size)]
data = dict(
    train=dict(
        dataset=dict(type='VQAv2Dataset',
                     questions_file=data_root + 'v2_OpenEnded_mscoco_train2014_questions.json',
                     annotations_file=data_root + 'v2_mscoco_train2014_annotations.json',
                     img_dir=data_root + 'train2014', pipeline=train_pipeline,
                     answer_min_count=9, max_question_len=14, tokenizer=dict(type='word', min_count=1)),
        batch_size=64, num_workers=8),
    # val/test reuse the training vocabularies (metainfo) and tokenizer
    val=dict(
        dataset=dict(type='VQAv2Dataset',
                     questions_file=data_root + 'v2_OpenEnded_mscoco_val2014_questions.json',
                     annotations_file=data_root + 'v2_mscoco_val2014_annotations.json',
                     img_dir=data_root + 'val2014', pipeline=test_pipeline),
        batch_size=64, num_workers=8),
    # test-dev (no annotations): --cfg-options data.test=... and dump the results file for the server
    test=None,
)
evaluator = dict(type='VQAAccuracy')
