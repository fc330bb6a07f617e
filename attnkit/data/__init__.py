"""Shared data plumbing: image reading, albumentations pipelines, collate, the demo-data generator."""
from .collate import collate, pad_to_multiple
from .io import read_image, read_label_png
from .pipeline import IMAGENET_MEAN, IMAGENET_STD, Pipeline, as_pipeline, build_transform
from .randomness import SeededDataset, current_seed, epoch_random, sample_random, sample_seed

__all__ = ['collate', 'pad_to_multiple', 'read_image', 'read_label_png', 'Pipeline', 'as_pipeline',
           'build_transform',
           'IMAGENET_MEAN', 'IMAGENET_STD', 'SeededDataset', 'sample_random', 'epoch_random', 'current_seed',
           'sample_seed']
