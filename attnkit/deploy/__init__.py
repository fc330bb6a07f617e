"""Deployment: the inference fast path (BN folding, identity-attention removal, attention inference forms,
channels_last, bf16 where the hardware has it, torch.compile) and export (see docs/deploy.md)."""
from .fast import FAST_DTYPES, FastReport, cast_weights_bf16, cpu_bf16_units, prepare_fast
from .export import ExportError, check_attention_export, compare_exported, export_model, export_onnx, export_torch
from .fold import FoldReport, fold_batch_norms, fold_identity_attention
from .attention_fast import allow_inplace, inference_form, swap_inference_forms
from .residual_tail import fuse_residual_tails

__all__ = ['prepare_fast', 'FastReport', 'FAST_DTYPES', 'cpu_bf16_units', 'cast_weights_bf16', 'FoldReport',
           'fold_batch_norms', 'fold_identity_attention', 'export_onnx', 'export_torch', 'export_model', 'compare_exported',
           'check_attention_export', 'ExportError', 'inference_form', 'swap_inference_forms', 'allow_inplace',
           'fuse_residual_tails']
