"""attnkit: attention-augmented CNN backbones, necks and heads for detection, segmentation and VQA."""
import os as _os

_os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')
_os.environ.setdefault('HF_HUB_OFFLINE', '1')

from . import attention, backbones, necks, heads, tasks, evaluation  # noqa: E402,F401  (registers parts)
from .builder import (build_attention, build_backbone, build_dataset, build_evaluator, build_head,  # noqa: E402
                      build_model, build_neck)
from .config import load_config  # noqa: E402

__version__ = '0.1.0'
__all__ = ['build_attention', 'build_backbone', 'build_neck', 'build_head', 'build_model', 'build_dataset',
           'build_evaluator', 'load_config', '__version__']
