# MCAN-small on a ResNet-50 grid with a fine-tuned BERT-base question encoder (local directory).
# Put bert-base-uncased there first (tokenizer + model, saved with save_pretrained()).
_base_ = ['./mcan_r50_gru_vqav2.py']
bert_path = 'data/pretrained/bert-base-uncased'
model = dict(question_encoder=dict(_delete_=True, type='hf', path=bert_path, freeze=False))
data = dict(train=dict(dataset=dict(max_question_len=32, tokenizer=dict(_delete_=True, type='hf', path=bert_path))))
optim = dict(lr_mult={'backbone': 0.1, 'question_encoder.model': 0.1})
