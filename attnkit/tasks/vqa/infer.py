"""``attnkit infer CONFIG CKPT image.jpg --question "..."`` for VQA models: top-5 answers + attention picture."""
from __future__ import annotations

import os
from typing import Any, Mapping

import torch

from ...data import Pipeline, pad_to_multiple, read_image
from ...data.outputs import OutputNames
from ...errors import ConfigError
from ...registry import INFERENCERS
from .dataset import DEFAULT_PIPELINE
from .text import build_tokenizer
from .visualize import overlay_attention

__all__ = ['infer_vqa', 'eval_pipeline_cfg']


def eval_pipeline_cfg(cfg: Mapping[str, Any]) -> list:
    """The test (else val) dataset's pipeline from a config, or the default resize."""
    data = cfg.get('data') or {}
    for split in ('test', 'val'):
        loader = data.get(split)
        if loader and loader.get('dataset') and loader['dataset'].get('pipeline') is not None:
            return list(loader['dataset']['pipeline'])
    return list(DEFAULT_PIPELINE)


@torch.no_grad()
def infer_vqa(model: torch.nn.Module, cfg: Mapping[str, Any], images: list[str], out_dir: str,
              question: str | None = None) -> list[str]:
    """Answer ``question`` about each image: print the top-5 answers with scores, write a heat-map PNG.

    Args:
        model: a built :class:`VQAModel` in eval mode (its ``metainfo`` has the vocabularies).
        cfg: the config (for the evaluation pipeline).
        images: image files.
        out_dir: where ``<image stem>_vqa.png`` files go (``_vqa_1.png``... when that name is an input, another
            output or an existing file: nothing is overwritten).
        question: the question (required).

    Returns:
        The PNG files written.
    """
    if not question or not question.strip():
        raise ConfigError('VQA inference needs a question: attnkit infer CONFIG CKPT IMAGE --question "..."')
    tokenizer = build_tokenizer(model.metainfo['tokenizer'], model.metainfo.get('question_vocab'))
    pipeline = Pipeline(eval_pipeline_cfg(cfg))
    device = next(model.parameters()).device
    tokens = {k: v.to(device) for k, v in tokenizer([question.strip()]).items()}
    names = OutputNames(out_dir, images)
    written = []
    for path in images:
        image = read_image(path)
        sample = pipeline(image)
        batch = {'images': pad_to_multiple([sample['image']], 32, 0).to(device), 'question_ids': [0],
                 'metas': [{'img_size': sample['img_size']}], **tokens}  # uint8; img_size: padding re-zeroed
        pred = model(batch)[0]
        lines = [f'Q: {question.strip()}']
        print(f'{path}: {question.strip()}')
        for rank, (idx, score) in enumerate(zip(pred['answer_ids'].tolist(), pred['scores'].tolist()), 1):
            print(f'  {rank}. {model.answers[idx]:<20} {score:.3f}')
            lines.append(f'{rank}. {model.answers[idx]} ({score:.2f})')
        att = pred['attention']
        if att is not None:  # crop the grid to the image (not the padding) before resizing over it
            ph, pw = batch['images'].shape[-2:]
            h, w = sample['img_size']
            att = att[: max(1, round(att.shape[0] * h / ph)), : max(1, round(att.shape[1] * w / pw))]
        stem = os.path.splitext(os.path.basename(path))[0]
        written.append(overlay_attention(image, att, names.claim(stem, '_vqa.png'), lines))
    return written


INFERENCERS.register_module('VQAModel', module=infer_vqa)
