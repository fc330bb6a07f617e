"""Seeing attention: ``attnkit explain`` (every attention map, rollout, Grad-CAM for one prediction) and
interpretability as numbers (``attnkit explain --eval``: attention-object agreement and faithfulness).
See docs/interpretability.md."""
from .evaluate import evaluate_interpretability, format_table
from .maps import attention_rollout
from .metrics import area_fraction, deletion_insertion, energy_inside, pointing_hit
from .run import explain_images, load_for_explain

__all__ = ['explain_images', 'load_for_explain', 'evaluate_interpretability', 'format_table', 'attention_rollout',
           'energy_inside', 'pointing_hit', 'area_fraction', 'deletion_insertion']
