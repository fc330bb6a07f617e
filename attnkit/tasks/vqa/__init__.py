"""The VQA task: VQA v2 dataset, answer/question vocabularies, question encoders, VQAModel, pictures."""
from . import infer  # noqa: F401  (registers the 'VQAModel' inferencer)
from .answers import build_answer_vocab, normalize_answer, soft_scores
from .dataset import VQAv2Dataset
from .model import VQAModel
from .text import build_question_encoder, build_question_vocab, build_tokenizer

__all__ = ['VQAv2Dataset', 'VQAModel', 'normalize_answer', 'build_answer_vocab', 'soft_scores',
           'build_question_vocab', 'build_tokenizer', 'build_question_encoder']
