# VQA v2 test-dev: run a trained model on the official test-dev questions and write the results file the evaluation
# server takes ([{"question_id": int, "answer": str}, ...]; no annotations, so no metrics here):
#   attnkit test configs/vqa/mcan_r50_gru_vqav2_testdev.py work_dirs/mcan_r50_gru_vqav2/best.pth \
#       --out results/vqav2_test-dev2015_mcan_results.json
# Official layout (https://visualqa.org/download.html):
#   data/vqav2/v2_OpenEnded_mscoco_test-dev2015_questions.json   ("data_subtype": "test-dev2015")
#   data/vqav2/test2015/COCO_test2015_<image_id:012d>.jpg         (test-dev asks about a subset of the test2015 images:
#                                                                  VQAv2Dataset names the files after "test2015")
# The full test split: questions_file=...test2015_questions.json, same img_dir.
_base_ = ['./mcan_r50_gru_vqav2.py']
data = dict(
    test=dict(
        _delete_=True,  # the base has test=None
        dataset=dict(type='VQAv2Dataset',
                     questions_file='data/vqav2/v2_OpenEnded_mscoco_test-dev2015_questions.json',
                     annotations_file=None, img_dir='data/vqav2/test2015',
                     pipeline=[dict(type='Resize', height=448, width=448)]),
        batch_size=64, num_workers=8),
)
