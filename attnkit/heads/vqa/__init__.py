"""VQA fusion heads: ``san`` (stacked attention), ``mcan`` (modular co-attention) and the plain ``mul_fusion``."""
from .mcan import AttFlat, MCANHead, MultiHeadAttention
from .mul_fusion import MulFusionHead
from .san import SANHead

__all__ = ['SANHead', 'MCANHead', 'MultiHeadAttention', 'AttFlat', 'MulFusionHead']
