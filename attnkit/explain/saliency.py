"""Gradient saliency from ``pytorch_grad_cam`` (PyPI ``grad-cam``): Grad-CAM and Grad-CAM++ for a target.

The layers default to the backbone's output stages: all of them for a detector (its FPN reads them all; the
package averages the per-layer maps), the deepest one for segmentation and VQA. Found by one forward with hooks,
so any backbone (ResNet, timm, HF) works.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ['METHODS', 'cam_layers', 'gradient_saliency']

METHODS = ('gradcam', 'gradcam++')


def cam_layers(model: nn.Module, task: str, images: Tensor) -> list[tuple[str, nn.Module]]:
    """The backbone children whose outputs the backbone returns, for ``images`` (N, 3, H, W) normalised.

    Returns:
        ``[(qualified name, module)]``: every returned stage for detection, the deepest for the other tasks.
    """
    backbone = model.backbone
    seen: list[tuple[str, nn.Module, Any]] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: seen.append((name, mod, out)))
             for name, m in backbone.named_modules() if name and name.count('.') <= 1]
    try:
        with torch.no_grad():
            outs = backbone(images)
    finally:
        for h in hooks:
            h.remove()
    outs = list(outs.values()) if isinstance(outs, dict) else list(outs) if isinstance(outs, (list, tuple)) else [outs]
    found = []
    for target in outs:
        for name, mod, out in reversed(seen):  # the last module that produced this very tensor
            if out is target:
                found.append((f'backbone.{name}', mod))
                break
    if not found:  # no stage returns its tensor as it is: the last 4-D output of a top-level child
        four_d = [(f'backbone.{n}', m) for n, m, o in seen if '.' not in n and isinstance(o, Tensor) and o.dim() == 4]
        found = four_d[-1:]
    return found if task == 'detection' else found[-1:]


def gradient_saliency(scorer: nn.Module, image: Tensor, target: Any, layers: Sequence[nn.Module],
                      methods: Sequence[str] = METHODS) -> dict[str, np.ndarray]:
    """Grad-CAM maps of ``target`` for one image.

    Args:
        scorer: :class:`~attnkit.explain.scorer.TaskScorer`.
        image: (1, 3, H, W) float 0..255.
        target: a callable on one image's output (``targets.Target.make(scorer)``).
        layers: the modules whose activations and gradients make the map.
        methods: any of 'gradcam', 'gradcam++'.

    Returns:
        ``{method: (H, W) float32 in [0, 1]}`` at the input size.
    """
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    classes = {'gradcam': GradCAM, 'gradcam++': GradCAMPlusPlus}
    out = {}
    params = [p for p in scorer.parameters()]
    saved = [p.grad for p in params]  # the package zeroes and fills .grad: a model in training keeps its own
    try:
        for method in methods:
            with classes[method](model=scorer, target_layers=list(layers)) as cam:
                grayscale = cam(input_tensor=image, targets=[target])
            out[method] = np.nan_to_num(np.asarray(grayscale[0], np.float32))
    finally:
        for p, g in zip(params, saved):
            p.grad = g
    return out
