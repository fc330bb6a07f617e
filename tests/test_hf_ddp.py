"""Hugging Face question encoders under DDP: loaded without BERT's pooler, so every parameter gets a gradient and
two `accelerate launch` processes train a VQA model with a (tiny, saved-here) BERT through `attnkit train`."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import torch

from attnkit.data.demo import generate_demo_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def save_tiny_bert(out_dir: str, words: list[str]) -> str:
    """A 1-layer, 32-wide BERT with a word-level vocabulary of ``words``, saved (model + tokenizer) in ``out_dir``."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + sorted(set(words))
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=64))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def question_words(questions_file: str) -> list[str]:
    with open(questions_file) as f:
        questions = json.load(f)['questions']
    return [w for q in questions for w in re.findall(r"\w+|[^\w\s]", q['question'].lower())]


def test_hf_encoder_has_no_pooler_and_every_parameter_gets_a_gradient(tmp_path):
    from attnkit.tasks.vqa.text import HFQuestionEncoder, HFTokenizer
    from transformers import BertModel

    path = save_tiny_bert(str(tmp_path / 'bert'), ['how', 'many', 'red', 'circles', '?'])
    encoder = HFQuestionEncoder(path)
    assert encoder.model.pooler is None and encoder.out_channels == 32
    batch = HFTokenizer(path)(['how many red circles?', 'how many?'])
    out = encoder(batch['input_ids'], batch['attention_mask'])
    assert out.shape == (2, batch['input_ids'].shape[1], 32)
    out.square().sum().backward()
    names = [n for n, p in encoder.named_parameters() if p.grad is None]
    assert not names, f'parameters without a gradient (DDP fails on them): {names}'
    # same hidden states as the full model (the pooler only adds an output we do not use)
    full = BertModel.from_pretrained(path).eval()
    encoder.eval()
    with torch.no_grad():
        ref = full(input_ids=batch['input_ids'], attention_mask=batch['attention_mask']).last_hidden_state
        assert torch.allclose(encoder(batch['input_ids'], batch['attention_mask']), ref, atol=1e-6)
    # a state dict saved with the pooler (older attnkit checkpoints) still loads strictly
    old = {f'model.{k}': v for k, v in full.state_dict().items()}
    assert any('pooler' in k for k in old)
    encoder.load_state_dict(old, strict=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_processes_train_vqa_with_a_bert_encoder_through_the_cli(tmp_path):
    paths = generate_demo_data(tmp_path / 'demo', num_train=12, num_val=4, size=64, seed=1)
    bert = save_tiny_bert(str(tmp_path / 'bert'), question_words(paths['vqa_train_questions']) +
                          question_words(paths['vqa_val_questions']))
    splits = {s: dict(img_dir=paths['img_dir'], questions_file=paths[f'vqa_{s}_questions'],
                      annotations_file=paths[f'vqa_{s}_annotations'],
                      pipeline=[dict(type='Resize', height=64, width=64)]) for s in ('train', 'val')}
    config = tmp_path / 'mcan_tiny_bert.py'
    config.write_text(f"""_base_ = [{os.path.join(ROOT, 'configs/demo/mcan_r18_minilm_shapes.py')!r}]
model = dict(backbone=dict(base_channels=8, pretrained=None), question_encoder=dict(path={bert!r}),
             head=dict(dim=32, ffn=64, depth=1, flat_hidden=32, out_dim=64))
data = dict(train=dict(dataset=dict({splits['train']!r}, tokenizer=dict(path={bert!r})), batch_size=8,
                       num_workers=0),
            val=dict(dataset=dict({splits['val']!r}), batch_size=8, num_workers=0))
schedule = dict(by_epoch=False, max_epochs=None, max_iters=3, warmup_iters=1)
train_cfg = dict(eval_interval=3, checkpoint_interval=3)
runtime = dict(tensorboard=False, log_interval=1)
""")
    env = dict(os.environ, ACCELERATE_USE_CPU='1', OMP_NUM_THREADS='1', NO_ALBUMENTATIONS_UPDATE='1',
               HF_HUB_OFFLINE='1')
    cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2',
           '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no',
           '--main_process_port', str(free_port()), '-m', 'attnkit', 'train', str(config),
           '--work-dir', str(tmp_path / 'work')]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(tmp_path / 'work' / 'latest.pth', weights_only=True)
    assert ckpt['iter'] == 3
    assert ckpt['meta']['tokenizer']['type'] == 'hf' and ckpt['meta']['tokenizer']['path'] == bert
    enc = {k[len('question_encoder.model.'):]: v for k, v in ckpt['model'].items()
           if k.startswith('question_encoder.model.')}
    assert enc and not any(k.startswith('pooler') for k in enc)
    from safetensors.torch import load_file
    start = load_file(os.path.join(bert, 'model.safetensors'))
    assert any(not torch.equal(v, start[k]) for k, v in enc.items() if k in start)  # the encoder was fine-tuned
    with open(tmp_path / 'work' / 'log.jsonl') as f:
        assert any(json.loads(line)['mode'] == 'val' for line in f)
