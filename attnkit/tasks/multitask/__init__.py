"""Multi-task learning on one shared backbone: ``MultiTaskModel`` (model.py, branches.py, weighting.py) and its
training side (data.py: ``MultiTaskDataset``; evaluator.py; infer.py; export.py)."""
from . import data, evaluator, infer  # noqa: F401  (register the dataset, evaluator and inferencer)
from .branches import TASK_MODELS, registered_tasks
from .model import MultiTaskModel
from .weighting import LossWeighting, build_loss_weighting

__all__ = ['MultiTaskModel', 'LossWeighting', 'build_loss_weighting', 'TASK_MODELS', 'registered_tasks']
