# SAN (two attention hops) on a ResNet-50 grid with a BERT-base question encoder (local directory).
_base_ = ['../_base_/models/san_r50.py', '../_base_/datasets/vqav2.py', '../_base_/default_runtime.py']
bert_path = 'data/pretrained/bert-base-uncased'
model = dict(question_encoder=dict(_delete_=True, type='hf', path=bert_path, freeze=False))
data = dict(train=dict(dataset=dict(max_question_len=32, tokenizer=dict(_delete_=True, type='hf', path=bert_path))))
optim = dict(optimizer=dict(_delete_=True, type='AdamW', lr=3e-4, weight_decay=0.0),
             lr_mult={'backbone': 0.1, 'question_encoder.model': 0.1}, grad_clip=dict(_delete_=True, max_norm=10.0))
schedule = dict(by_epoch=True, max_epochs=13, warmup_iters=2000, warmup_ratio=0.25, policy='step',
                milestones=(10, 12), gamma=0.2)
runtime = dict(mixed_precision='bf16', channels_last=True)
train_cfg = dict(eval_interval=1, checkpoint_interval=1)
