"""VQA fusion heads: ``san`` (stacked attention) and ``mcan`` (modular co-attention)."""
from .mcan import AttFlat, MCANHead, MultiHeadAttention
from .san import SANHead

__all__ = ['SANHead', 'MCANHead', 'MultiHeadAttention', 'AttFlat']
