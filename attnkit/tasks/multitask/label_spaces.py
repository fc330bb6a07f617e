"""Stand-in metainfo of the standard benchmarks' sizes, for timing and counting models without their data.

The heads' sizes follow the label spaces (classes, answers, question words); a model built from a real-data config
(COCO, VOC, VQA v2) needs them, and reading them from the training split needs the dataset on disk. For timing and
parameter counts only the sizes matter: :func:`synthetic_metainfo` gives each dataset config the label-space sizes
of its benchmark (or the ``metainfo`` the config itself lists), with placeholder names.

Sizes: COCO detection 80 classes, VOC detection 20, VOC segmentation 21 (with background), VQA v2 3,129 answers
(the common ``answer_min_count=9`` vocabulary) and a 13,000-word question vocabulary (the word tokenizer's
``min_count=1`` vocabulary of the 2014 train questions, rounded).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ['LABEL_SPACE_SIZES', 'synthetic_metainfo']

LABEL_SPACE_SIZES = {'CocoDetection': 80, 'VOCDetection': 20, 'VOCSegmentation': 21, 'VQAv2Dataset': 3129}
VQA_QUESTION_WORDS = 13000


def _dataset_metainfo(ds: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One dataset config (or a task's list of them: the first's) -> its stand-in metainfo (``{'classes': [...]}``
    or the VQA vocabularies)."""
    if not isinstance(ds, Mapping):
        return _dataset_metainfo(ds[0])
    kind = ds.get('type')
    given = dict(ds.get('metainfo') or {})
    if kind == 'VQAv2Dataset':
        tok = dict(ds.get('tokenizer') or {'type': 'word'})
        tok.setdefault('max_len', int(ds.get('max_question_len', 14)))
        meta: dict[str, Any] = {'answers': [f'answer{i}' for i in range(LABEL_SPACE_SIZES[kind])], 'tokenizer': tok}
        meta['answer_types'] = ['other'] * len(meta['answers'])
        if tok.get('type') == 'word':
            from ..vqa.text import PAD, UNK
            meta['question_vocab'] = [PAD, UNK] + [f'word{i}' for i in range(VQA_QUESTION_WORDS)]
        return meta
    if given.get('classes'):
        return {'classes': list(given['classes'])}
    if kind not in LABEL_SPACE_SIZES:
        raise ValueError(f'synthetic_metainfo: no standard label space for dataset type {kind!r} '
                         f'(known: {", ".join(sorted(LABEL_SPACE_SIZES))}); list metainfo=dict(classes=[...]) in it')
    return {'classes': [f'class{i}' for i in range(LABEL_SPACE_SIZES[kind])]}


def synthetic_metainfo(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The stand-in metainfo of config ``cfg``'s training dataset: one task's, or ``{'tasks': {name: ...}}`` for a
    ``MultiTaskDataset``."""
    ds = cfg['data']['train']['dataset']
    if ds.get('type') == 'MultiTaskDataset':
        return {'tasks': {str(name): _dataset_metainfo(task) for name, task in ds['tasks'].items()}}
    return _dataset_metainfo(ds)
