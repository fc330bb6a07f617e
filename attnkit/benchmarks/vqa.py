"""VQA benchmarks: ``python tools/benchmark.py vqa {quality,speed} [options]``.

* ``quality``: trains the demo backbone (stage 1), the demo VQA model and the question-only baseline on the
  shapes demo data with the Trainer (their configs as they are), evaluates both on the demo val split, and
  prints accuracy side by side with wall time and the machine load (``uptime``) before and after.
* ``speed``: training throughput (questions/s: forward, backward, optimizer step) of the demo model at its
  demo size and of ``mcan_r50`` at 448x448 (random data, ``--*-questions-per-image`` questions sharing each
  image as a grouped training batch does; no pretrained weights needed).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from typing import Any

import torch

__all__ = ['main']

DEMO_CONFIG = 'configs/demo/mcan_r18_gru_shapes.py'
QONLY_CONFIG = 'configs/demo/qonly_gru_shapes.py'
BACKBONE_CONFIG = 'configs/demo/fcn_r18_shapes_vqa-backbone.py'
MCAN_R50_CONFIG = 'configs/vqa/mcan_r50_gru_vqav2.py'


def _uptime() -> str:
    try:
        return subprocess.run(['uptime'], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:  # pragma: no cover
        return 'uptime unavailable'


def _train_and_eval(config: str, work_dir: str, options: dict[str, Any]) -> dict[str, Any]:
    from ..config import load_config
    from ..engine import Trainer

    cfg = load_config(config, options or None)
    start, cpu_start = time.time(), _cpu_seconds()
    trainer = Trainer(cfg, work_dir=work_dir)
    metrics = trainer.train()
    wall = time.time() - start
    if not metrics:
        metrics = trainer.evaluate('val')
    return {'config': config, 'wall_s': round(wall, 1), 'cpu_s': round(_cpu_seconds() - cpu_start, 1),
            'iters': trainer.iter, 'epochs': trainer.epoch, **{k: round(float(v), 4) for k, v in metrics.items()}}


def _cpu_seconds() -> float:
    """CPU seconds used by this process and its finished children (data-loader workers), all threads."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def quality(args: argparse.Namespace) -> dict[str, Any]:
    """Train + evaluate the demo model and the question-only model; returns both results."""
    from ..data.demo import generate_demo_data

    generate_demo_data('data/demo')  # where the demo configs read it (reused when already there)
    out: dict[str, Any] = {'uptime_before': _uptime(), 'threads': torch.get_num_threads()}
    image_options: dict[str, Any] = {}
    if args.backbone_config:  # stage 1: the backbone pre-training the demo config starts from
        work_dir = os.path.join(args.work_dir, 'backbone')
        out['backbone'] = _train_and_eval(args.backbone_config, work_dir, {})
        out['uptime_after_backbone'] = _uptime()
        image_options['model.backbone.pretrained'] = os.path.join(work_dir, 'model.safetensors')
    for key, config, options in (('image', args.config, image_options), ('question_only', args.qonly_config, {})):
        out[key] = _train_and_eval(config, os.path.join(args.work_dir, key), options)
        out[f'uptime_after_{key}'] = _uptime()
    out['image_total_wall_s'] = round(out['image']['wall_s'] + out.get('backbone', {}).get('wall_s', 0.0), 1)
    out['gap_points'] = round(100 * (out['image']['accuracy'] - out['question_only']['accuracy']), 2)
    return out


def _synthetic_batch(metainfo: dict, batch: int, size: int, length: int,
                     questions_per_image: int = 1, vocab: int | None = None) -> dict[str, Any]:
    """Random questions (token ids in [2, vocab)) about ``ceil(batch / questions_per_image)`` random images,
    grouped as the VQA collate groups them (``images`` once per distinct image, ``image_index`` per question)."""
    vocab = vocab or len(metainfo.get('question_vocab') or [0, 0, 0])
    targets = torch.zeros(batch, len(metainfo['answers']))
    targets[torch.arange(batch), torch.randint(len(metainfo['answers']), (batch,))] = 1.0
    num_images = -(-batch // questions_per_image)
    images = torch.randint(0, 256, (num_images, 3, size, size), dtype=torch.uint8)  # uint8: the model normalises
    out = {'images': images.contiguous(memory_format=torch.channels_last),
           'input_ids': torch.randint(2, vocab, (batch, length)),
           'attention_mask': torch.ones(batch, length, dtype=torch.long),
           'answer_scores': targets, 'question_ids': list(range(batch))}
    if questions_per_image > 1:
        out['image_index'] = torch.arange(batch) // questions_per_image
    return out


def _synthetic_metainfo(cfg: Any, num_answers: int = 16, num_words: int = 40) -> dict[str, Any]:
    """Vocabularies for random data, with the tokenizer the config's training split uses (word or hf)."""
    meta = {'answers': [f'a{i}' for i in range(num_answers)], 'tokenizer': {'type': 'word', 'max_len': 14},
            'question_vocab': ['<pad>', '<unk>'] + [f'w{i}' for i in range(num_words)]}
    tokenizer = (((cfg.get('data') or {}).get('train') or {}).get('dataset') or {}).get('tokenizer')
    if tokenizer and tokenizer.get('type') == 'hf':  # a transformers encoder (the MiniLM demo): its tokenizer
        meta['tokenizer'] = dict(tokenizer, max_len=14)
        del meta['question_vocab']
    return meta


def _throughput(model_cfg: dict, metainfo: dict, batch: int, size: int, iters: int, warmup: int,
                bf16: bool, questions_per_image: int = 1) -> dict[str, Any]:
    from ..builder import build_model

    torch.manual_seed(0)
    model = build_model(model_cfg, metainfo=metainfo).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    encoder = getattr(model.question_encoder, 'model', None)  # a transformers model: its own vocabulary
    vocab = int(encoder.config.vocab_size) if encoder is not None else None
    data = _synthetic_batch(metainfo, batch, size, 14, questions_per_image, vocab)
    times, cpu = [], []
    for i in range(warmup + iters):
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.autocast('cpu', torch.bfloat16, enabled=bf16):
            loss = model(data)['loss']
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - cpu_start)
    median = sorted(times)[len(times) // 2]
    cpu_median = sorted(cpu)[len(cpu) // 2]
    # wall-clock throughput depends on the machine's load; CPU seconds per step do not (much): batch / cpu_s is
    # the throughput per fully available core at this thread count
    return {'batch': batch, 'questions_per_image': questions_per_image, 'size': size, 'bf16': bf16, 'iters': iters,
            'median_step_s': round(median, 3),
            'questions_per_s': round(batch / median, 2), 'median_step_cpu_s': round(cpu_median, 3),
            'questions_per_cpu_s': round(batch / cpu_median, 2),
            'params_M': round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}


def speed(args: argparse.Namespace) -> dict[str, Any]:
    """Training throughput of the demo model and of mcan_r50 at 448x448 on random data."""
    from ..config import load_config

    out: dict[str, Any] = {'uptime_before': _uptime(), 'threads': torch.get_num_threads()}
    demo = load_config(args.config)
    demo_meta = _synthetic_metainfo(demo)
    size = int(demo.get('img_size', 128))
    if demo.model.get('backbone'):
        demo.model.backbone.pretrained = None  # speed only: random weights
    out['demo'] = _throughput(demo.model.to_dict(), demo_meta, args.demo_batch, size, args.iters, 2, args.bf16,
                              args.demo_questions_per_image)
    r50_cfg = load_config(MCAN_R50_CONFIG)
    r50 = r50_cfg.model.to_dict()
    r50['backbone']['pretrained'] = None  # random weights: speed only, nothing to download
    r50_meta = _synthetic_metainfo(r50_cfg, num_answers=3129, num_words=15000)  # VQA v2 vocabulary sizes
    out['mcan_r50_448'] = _throughput(r50, r50_meta, args.r50_batch, 448, args.iters, 1, args.bf16,
                                      args.r50_questions_per_image)
    out['uptime_after'] = _uptime()
    return out


def main(argv: list[str]) -> int:
    """Command line: ``vqa quality`` or ``vqa speed`` (see ``--help``); prints a JSON report."""
    parser = argparse.ArgumentParser(prog='benchmark.py vqa', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='kind', required=True)
    q = sub.add_parser('quality', help='demo model vs question-only model on the demo val split')
    q.add_argument('--config', default=DEMO_CONFIG)
    q.add_argument('--qonly-config', default=QONLY_CONFIG)
    q.add_argument('--backbone-config', default=BACKBONE_CONFIG,
                   help="stage 1 (backbone pre-training) run first and loaded by --config; '' to skip")
    q.add_argument('--work-dir', default='work_dirs/bench_vqa')
    s = sub.add_parser('speed', help='training throughput (questions/s)')
    s.add_argument('--config', default=DEMO_CONFIG)
    s.add_argument('--demo-batch', type=int, default=128, help='questions per step (the demo config: 128)')
    s.add_argument('--demo-questions-per-image', type=int, default=10,
                   help='questions sharing one image in a batch (demo data: ~10, grouped by image)')
    s.add_argument('--r50-batch', type=int, default=8)
    s.add_argument('--r50-questions-per-image', type=int, default=1,
                   help='1: every question its own image, as the VQA v2 configs sample; ~5.4 with group_by=image')
    s.add_argument('--iters', type=int, default=5)
    s.add_argument('--bf16', action='store_true', help='bf16 autocast (as the demo config trains)')
    for p in (q, s):
        p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch default)')
        p.add_argument('--out', default=None, help='also write the JSON report here')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = quality(args) if args.kind == 'quality' else speed(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            f.write(text + '\n')
    return 0
