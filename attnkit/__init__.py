"""attnkit: attention-augmented CNN backbones, necks and heads for detection, segmentation and VQA."""
import os as _os
import sys as _sys


def _import_albumentations_without_update_check() -> None:
    """albumentations asks PyPI for a newer version when it is imported unless NO_ALBUMENTATIONS_UPDATE is set:
    set it for that one import and put the user's environment back (importing attnkit changes no variable)."""
    if 'albumentations' in _sys.modules:
        return
    before = _os.environ.get('NO_ALBUMENTATIONS_UPDATE')
    _os.environ['NO_ALBUMENTATIONS_UPDATE'] = '1'
    try:
        import albumentations  # noqa: F401
    finally:
        if before is None:
            del _os.environ['NO_ALBUMENTATIONS_UPDATE']
        else:
            _os.environ['NO_ALBUMENTATIONS_UPDATE'] = before


_import_albumentations_without_update_check()

from . import attention, backbones, necks, heads, tasks, evaluation  # noqa: E402,F401  (registers parts)
from .builder import (build_attention, build_backbone, build_dataset, build_evaluator, build_head,  # noqa: E402
                      build_model, build_neck)
from .config import load_config  # noqa: E402

__version__ = '0.1.0'
__all__ = ['build_attention', 'build_backbone', 'build_neck', 'build_head', 'build_model', 'build_dataset',
           'build_evaluator', 'load_config', '__version__']
