"""Training engine on Hugging Face Accelerate: Trainer, optimizer/schedule builders, checkpoints, EMA."""
from .checkpoint import load_checkpoint, load_model, load_weights, save_atomic, save_safetensors
from .ema import ModelEMA
from .evaluate import evaluate
from .optim import build_optimizer, param_groups
from .schedule import LRFactor, build_scheduler
from .trainer import NonFiniteLossError, Trainer, TrainingInterrupted

__all__ = ['Trainer', 'NonFiniteLossError', 'TrainingInterrupted', 'load_model', 'load_checkpoint', 'load_weights',
           'save_atomic', 'save_safetensors', 'ModelEMA', 'evaluate', 'build_optimizer', 'param_groups', 'LRFactor',
           'build_scheduler']
