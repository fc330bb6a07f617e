"""Answers: official normalisation, the answer vocabulary, and soft target scores.

* :func:`normalize_answer` — the official evaluation's processing (whitespace, punctuation, lower case,
  number words to digits, articles dropped, contractions restored), so that every vocabulary entry, and
  therefore every prediction, is already in the form the evaluation compares.
* :func:`build_answer_vocab` — answers kept when at least ``min_count`` training questions have them as
  their most common answer (``multiple_choice_answer``; the majority of the ten when absent), the usual
  VQA v2 recipe (min_count 9 gives ~3.1k answers on train2014), most frequent first.
* :func:`soft_scores` — target ``min(1, 0.3 x #annotators who gave the answer)`` for each vocabulary answer
  (1 annotator 0.3, 2 -> 0.6, 3 -> 0.9, 4+ -> 1.0).
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping, Sequence

from ...evaluation.vqa import clean_whitespace, process_digit_article, process_punctuation

__all__ = ['normalize_answer', 'majority_answer', 'build_answer_vocab', 'soft_scores']


def normalize_answer(answer: str) -> str:
    """The official normalisation of one answer (``"Two."`` -> ``"2"``, ``"a dog"`` -> ``"dog"``)."""
    return process_digit_article(process_punctuation(clean_whitespace(answer).lower()))


def majority_answer(answers: Sequence[str]) -> str:
    """The most common normalised answer (ties: the first given), standing in for ``multiple_choice_answer``."""
    normed = [normalize_answer(a) for a in answers]
    counts = Counter(normed)
    best = max(counts.values())
    return next(a for a in normed if counts[a] == best)


def build_answer_vocab(annotations: Iterable[Mapping], min_count: int = 9) -> list[str]:
    """The answer vocabulary from training annotations.

    Args:
        annotations: official annotation records (``answers`` list of ``{'answer': str}``, optionally
            ``multiple_choice_answer``).
        min_count: keep answers that are the (normalised) ``multiple_choice_answer`` of at least this many
            questions.

    Returns:
        Normalised answers, most frequent first (ties alphabetical); empty answers are never kept.
    """
    counts: Counter[str] = Counter()
    for ann in annotations:
        mc = ann.get('multiple_choice_answer')
        answer = normalize_answer(mc) if isinstance(mc, str) else majority_answer([a['answer'] for a in ann['answers']])
        if answer:
            counts[answer] += 1
    return [a for a, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]


def soft_scores(answers: Sequence[str], answer_to_index: Mapping[str, int]) -> tuple[dict[int, float], int]:
    """Soft targets of one question.

    Args:
        answers: the human answers (raw strings; normalised here).
        answer_to_index: vocabulary answer -> index.

    Returns:
        ``({index: score}, n_outside)`` where score = ``min(1, 0.3 * count)`` for each vocabulary answer given,
        and ``n_outside`` is how many of ``answers`` are not in the vocabulary (they get no target).
    """
    counts = Counter(normalize_answer(a) for a in answers)
    scores: dict[int, float] = {}
    outside = 0
    for answer, count in counts.items():
        idx = answer_to_index.get(answer)
        if idx is None:
            outside += count
        else:
            scores[idx] = min(1.0, 0.3 * count)
    return scores, outside
