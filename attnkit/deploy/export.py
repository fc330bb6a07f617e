"""Export a task model to ONNX or ``torch.export`` and check the result against PyTorch.

``export_onnx(model, task, size, path)`` writes an ONNX file (torch's dynamo exporter, onnxscript translation)
of the task's export wrapper (:mod:`attnkit.deploy.wrappers`: uint8 images in, normalisation and — for detectors
— box decoding and NMS in the graph); ``export_torch`` writes a ``torch.export`` ``.pt2`` archive (ExecuTorch,
AOTInductor). ``compare_exported`` runs an exported model and the eager wrapper on the same inputs and reports
the largest difference and both speeds.

A model whose export fails is exported again one attention module at a time, so the error names the module that
cannot be exported (its registered name, e.g. ``'cbam'``, and where it sits) and why.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import AttnkitError, ConfigError
from .wrappers import INPUT_NAMES, OUTPUT_NAMES, model_stride, task_of, wrap_for_export

__all__ = ['FORMATS', 'DEPLOY_PACKAGES', 'ExportError', 'require_packages', 'check_size', 'nearest_sizes',
           'example_inputs', 'export_onnx', 'export_torch', 'export_model', 'compare_exported', 'CheckResult',
           'attention_name', 'check_attention_export', 'sample_image', 'run_export', 'DEFAULT_SIZE']

FORMATS = ('onnx', 'torch.export')
DEPLOY_PACKAGES = {'onnx': ('onnx', 'onnxscript', 'onnxruntime'), 'torch.export': ()}
ONNX_OPSET = 18


class ExportError(AttnkitError):
    """A model or module cannot be exported, or a package export needs is missing."""


def require_packages(fmt: str) -> None:
    """Raise :class:`ExportError` (one line naming the ``attnkit[deploy]`` extra) when a package ``fmt`` needs is
    missing; :class:`~attnkit.errors.ConfigError` naming the valid formats for an unknown ``fmt``."""
    if fmt not in FORMATS:
        from ..registry import closest_names
        close = closest_names(fmt, FORMATS)
        raise ConfigError(f'Unknown export format {fmt!r}' + (f" (did you mean {', '.join(map(repr, close))}?)"
                                                               if close else '')
                          + f"; valid formats: {', '.join(FORMATS)}.")
    missing = []
    for name in DEPLOY_PACKAGES[fmt]:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(f"Export to {fmt} needs the package(s) {', '.join(missing)}, not installed: "
                          f"pip install 'attnkit[deploy]' (onnx, onnxruntime, onnxscript).")


def nearest_sizes(value: int, stride: int) -> list[int]:
    """The multiples of ``stride`` nearest to ``value`` (one, or the one below and the one above)."""
    below, above = (value // stride) * stride, -(-value // stride) * stride
    return sorted({s for s in (below, above) if s > 0}) or [stride]


def check_size(model: nn.Module, size: Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` when both are positive multiples of the model's stride (:func:`model_stride`); otherwise a
    :class:`~attnkit.errors.ConfigError` naming the nearest valid sizes."""
    if len(size) != 2:
        raise ConfigError(f'--size takes two numbers H W, got {list(size)!r}.')
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ConfigError(f'--size must be positive, got {h} {w}.')
    stride = model_stride(model)
    if h % stride or w % stride:
        what = ('the largest FPN stride (the backbone level the FPN merges top-down)'
                if task_of(model) == 'detection' else "the backbone's output stride")
        hs, ws = nearest_sizes(h, stride), nearest_sizes(w, stride)
        options = ' or '.join(f'{a} {b}' for a, b in sorted({(a, b) for a in hs for b in ws}))
        raise ConfigError(f'--size {h} {w} is not divisible by {what} ({stride}) of this '
                          f'{type(model).__name__}; nearest valid sizes: {options}.')
    return h, w


def sample_image(size: Sequence[int], path: str | None = None, seed: int = 0) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image: ``path`` resized to ``size``, or a shapes demo scene of that size."""
    import cv2
    h, w = int(size[0]), int(size[1])
    if path is not None:
        from ..data.io import read_image
        image = read_image(path, record='attnkit export --image')
    else:
        from ..data.demo_scene import render_scene, sample_scene
        rng = np.random.default_rng(seed)
        image = render_scene(sample_scene(rng, max(h, w, 32)), rng)[0]
    if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(image[..., :3], dtype=np.uint8)


def example_inputs(model: nn.Module, task: str, size: Sequence[int], batch: int = 1,
                   image: np.ndarray | None = None, question: str = 'what shape is in the image?'
                   ) -> tuple[Tensor, ...]:
    """The wrapper's inputs: ``images`` (batch, 3, H, W) uint8 (``image`` repeated, or a demo scene) and for VQA
    ``input_ids``, ``attention_mask`` (batch, L) int64 from the model's own tokenizer and ``question``."""
    if image is None:
        image = sample_image(size)
    images = torch.from_numpy(image).permute(2, 0, 1)[None].repeat(batch, 1, 1, 1).contiguous()
    if task != 'vqa':
        return (images,)
    from ..tasks.vqa.text import build_tokenizer
    meta = model.metainfo
    tokens = build_tokenizer(meta['tokenizer'], meta.get('question_vocab'))([question] * batch)
    return images, tokens['input_ids'].long(), tokens['attention_mask'].long()


def _dynamic_shapes(task: str, stride: int, inputs: Sequence[Tensor]) -> tuple[dict[int, Any], ...]:
    """Batch, height and width (multiples of ``stride``) and question length (VQA) as symbolic dimensions."""
    from torch.export import Dim
    batch = Dim('batch', min=1, max=1024)
    height = stride * Dim('height_blocks', min=1, max=8192 // stride)
    width = stride * Dim('width_blocks', min=1, max=8192 // stride)
    image = {0: batch, 2: height, 3: width}
    if task != 'vqa':
        return (image,)
    # the question length: AUTO lets export adopt an encoder's own bound (a transformer's max_len) instead of failing
    text = {0: batch, 1: Dim.AUTO} if inputs[1].shape[1] > 1 else {0: batch}
    return image, text, dict(text)


def _trace_inputs(model: nn.Module, task: str, size: tuple[int, int], inputs: tuple[Tensor, ...] | None,
                  dynamic: bool) -> tuple[tuple[Tensor, ...], Any]:
    """The inputs to trace with and the dynamic shapes (``None`` when static). A dynamic export traces a batch of
    at least 2 (torch.export fixes a dimension of size 1), repeating the first sample."""
    inputs = inputs if inputs is not None else example_inputs(model, task, size)
    if not dynamic:
        return inputs, None
    batch = 3 if task == 'vqa' and inputs[1].shape[1] == 2 else 2  # keep batch and question length apart
    if inputs[0].shape[0] < 2:
        inputs = tuple(x[:1].expand(batch, *x.shape[1:]).contiguous() for x in inputs)
    return inputs, _dynamic_shapes(task, model_stride(model), inputs)


def attention_name(module: nn.Module) -> str:
    """The registered name (``attnkit.registry.ATTENTION``) of an attention module's class, else its class name."""
    from ..registry import ATTENTION
    for name, cls in ATTENTION.module_dict.items():
        if type(module) is cls:
            return name
    for name, cls in ATTENTION.module_dict.items():  # a subclass (e.g. swapped for insertion)
        if isinstance(module, cls):
            return name
    return type(module).__name__


def _reason(exc: BaseException) -> str:
    """The root cause of an exporter failure in one short phrase (type and first line, colour codes removed)."""
    import re
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:  # torch.onnx wraps torch.export's error
        exc = exc.__cause__
        seen.add(id(exc))
    lines = [re.sub(r'\x1b\[[0-9;]*m', '', ln).strip() for ln in str(exc).strip().splitlines()]
    lines = [ln for ln in lines if ln]
    text = next((ln for ln in lines if not ln.startswith(('[', '#', 'Traceback', 'File '))), lines[0] if lines else '')
    return f'{type(exc).__name__}: {text[:160]}' if text else type(exc).__name__


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No warnings, prints or log records (torch dumps whole graphs when a trace fails) while exporting; all of
    them stay on with ``ATTNKIT_DEBUG=1``."""
    if os.environ.get('ATTNKIT_DEBUG'):
        yield
        return
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter('ignore')
            yield
    finally:
        logging.disable(previous)


def _onnx_program(module: nn.Module, inputs: tuple[Tensor, ...], dynamic_shapes: Any,
                  input_names: Sequence[str], output_names: Sequence[str]) -> Any:
    """torch's dynamo ONNX exporter (onnxscript translation), quiet; returns the ONNXProgram.

    onnxscript's graph optimizer runs on static exports only: in a dynamic graph it folds the static sequence
    length that the GRU translation writes on its output into later shapes (wrong answers at another length).
    """
    with _quiet():
        return torch.onnx.export(module, inputs, dynamo=True, external_data=False, opset_version=ONNX_OPSET,
                                 input_names=list(input_names), output_names=list(output_names),
                                 dynamic_shapes=dynamic_shapes, verbose=False, report=False,
                                 optimize=dynamic_shapes is None)


def _torch_program(module: nn.Module, inputs: tuple[Tensor, ...], dynamic_shapes: Any) -> Any:
    with _quiet():
        return torch.export.export(module, inputs, dynamic_shapes=dynamic_shapes, strict=False)


def _attention_inputs(model: nn.Module, inputs: tuple[Tensor, ...]) -> dict[str, Tensor]:
    """One forward of ``model(*inputs)``: the input of every attention module, by module name."""
    from ..attention.base import AttentionModule
    seen: dict[str, Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: seen.setdefault(name, args[0].detach()))
             for name, m in model.named_modules() if isinstance(m, AttentionModule)]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _blame_attention(wrapper: nn.Module, inputs: tuple[Tensor, ...], fmt: str, exc: BaseException,
                     try_export: Callable[[nn.Module, tuple[Tensor, ...]], Any]) -> ExportError:
    """The error for a failed export: the first attention module that fails on its own (registered name, path in
    the model, reason), or the exporter's own reason when every attention module exports."""
    try:
        attention_inputs = _attention_inputs(wrapper, inputs)
    except Exception:  # noqa: BLE001 - the model does not even run: report the exporter's error
        attention_inputs = {}
    modules = dict(wrapper.named_modules())
    for name, x in attention_inputs.items():
        module = modules[name]
        try:
            try_export(module, (x,))
        except Exception as inner:  # noqa: BLE001 - any exporter failure names the module
            where = name[len('model.'):] if name.startswith('model.') else name
            return ExportError(f"attention module {attention_name(module)!r} ({where}) cannot be exported to "
                               f'{fmt}: {_reason(inner)}')
    return ExportError(f'{type(wrapper).__name__} cannot be exported to {fmt}: {_reason(exc)}')


def _prepare(model: nn.Module, task: str | None, size: Sequence[int], inputs: tuple[Tensor, ...] | None,
             dynamic: bool) -> tuple[str, nn.Module, tuple[Tensor, ...], Any]:
    """``(task, export wrapper, example inputs, dynamic shapes)`` shared by both formats (size checked first)."""
    task = task or task_of(model)
    size = check_size(model, size)
    wrapper = wrap_for_export(model, task)
    inputs, shapes = _trace_inputs(model, task, size, inputs, dynamic)
    return task, wrapper, inputs, shapes


def _output_path(path: str | os.PathLike) -> str:
    """``path`` as a string, its folder created."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return path


def export_onnx(model: nn.Module, task: str | None, size: Sequence[int], path: str | os.PathLike,
                dynamic: bool = False, inputs: tuple[Tensor, ...] | None = None) -> str:
    """Write ``model``'s export wrapper as ONNX to ``path``.

    Args:
        model: a Detector, Segmentor or VQAModel (put in eval mode).
        task: ``'detection'``, ``'segmentation'``, ``'vqa'`` or ``None`` (from the model's class).
        size: (H, W) of the example input; must be multiples of the model's stride.
        dynamic: batch, H, W (multiples of the stride) and question length symbolic; else all fixed.
        inputs: example inputs (default :func:`example_inputs` with a demo scene).

    Returns:
        ``path``. Inputs are named ``images`` (N, 3, H, W) uint8 (+ ``input_ids``, ``attention_mask`` (N, L)
        int64 for VQA); outputs as in :data:`~attnkit.deploy.wrappers.OUTPUT_NAMES`.

    Raises:
        ExportError: a missing package, or a model that cannot be exported (naming the attention module).
    """
    require_packages('onnx')
    task, wrapper, inputs, shapes = _prepare(model, task, size, inputs, dynamic)
    try:
        with torch.no_grad():
            program = _onnx_program(wrapper, inputs, shapes, INPUT_NAMES[task], OUTPUT_NAMES[task])
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; name the module instead
        raise _blame_attention(wrapper, inputs, 'ONNX', exc,
                               lambda m, x: _onnx_program(m, x, None, ['x'], ['y'])) from exc
    path = _output_path(path)
    program.save(path, external_data=False)
    return path


def export_torch(model: nn.Module, task: str | None, size: Sequence[int], path: str | os.PathLike,
                 dynamic: bool = False, inputs: tuple[Tensor, ...] | None = None) -> str:
    """Write ``model``'s export wrapper as a ``torch.export`` ExportedProgram (``.pt2``, ``torch.export.load``).

    Same arguments and errors as :func:`export_onnx`.
    """
    require_packages('torch.export')
    task, wrapper, inputs, shapes = _prepare(model, task, size, inputs, dynamic)
    try:
        with torch.no_grad():
            program = _torch_program(wrapper, inputs, shapes)
    except Exception as exc:  # noqa: BLE001
        raise _blame_attention(wrapper, inputs, 'torch.export', exc,
                               lambda m, x: _torch_program(m, x, None)) from exc
    path = _output_path(path)
    torch.export.save(program, path)
    return path


def export_model(model: nn.Module, fmt: str, size: Sequence[int], path: str | os.PathLike, dynamic: bool = False,
                 task: str | None = None, inputs: tuple[Tensor, ...] | None = None) -> str:
    """:func:`export_onnx` or :func:`export_torch` by ``fmt`` (``'onnx'`` or ``'torch.export'``)."""
    require_packages(fmt)
    exporter = export_onnx if fmt == 'onnx' else export_torch
    return exporter(model, task, size, path, dynamic=dynamic, inputs=inputs)


@dataclass
class CheckResult:
    """An exported model against the eager wrapper on the same inputs.

    Attributes:
        max_diff: largest absolute difference over all float outputs (inf when the shapes differ).
        same_shapes: every output has the same shape (for detectors: the same number of detections).
        labels_equal: integer outputs (labels, batch index) identical.
        torch_ms, exported_ms: median time of one forward (milliseconds).
        runtime: ``'onnxruntime'`` or ``'torch.export'``.
    """

    max_diff: float
    same_shapes: bool
    labels_equal: bool
    torch_ms: float
    exported_ms: float
    runtime: str

    def line(self) -> str:
        """``check: ...`` — the line ``attnkit export`` prints."""
        status = 'same shapes' if self.same_shapes else 'DIFFERENT shapes'
        if not self.labels_equal:
            status += ', DIFFERENT labels'
        speed = self.torch_ms / self.exported_ms if self.exported_ms > 0 else float('nan')
        return (f'check: max |{self.runtime} - pytorch| = {self.max_diff:.3g} ({status}); '
                f'pytorch {self.torch_ms:.2f} ms, {self.runtime} {self.exported_ms:.2f} ms '
                f'({speed:.2f}x pytorch speed)')


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def _numpy(values: Sequence[Any]) -> list[np.ndarray]:
    return [np.asarray(v.detach().cpu().numpy() if isinstance(v, Tensor) else v) for v in values]


def _by_image(outputs: list[np.ndarray]) -> list[np.ndarray]:
    """Detections (boxes, scores, labels, batch_index) ordered by image, then decreasing score: images with equal
    scores (a repeated image) may interleave in any order in a score-sorted list."""
    boxes, scores, labels, index = outputs
    order = np.lexsort((-scores, index))
    return [boxes[order], scores[order], labels[order], index[order]]


def _compare(reference: Sequence[Any], outputs: Sequence[Any], task: str) -> tuple[float, bool, bool]:
    reference, outputs = _numpy(reference), _numpy(outputs)
    if task == 'detection' and len(reference) == len(outputs) == 4 and reference[1].shape == outputs[1].shape:
        reference, outputs = _by_image(reference), _by_image(outputs)
    max_diff, same, labels = 0.0, True, True
    for ref, out in zip(reference, outputs):
        if ref.shape != out.shape:
            same, max_diff = False, float('inf')
            continue
        if ref.size == 0:
            continue
        if np.issubdtype(ref.dtype, np.floating):
            max_diff = max(max_diff, float(np.abs(ref.astype(np.float64) - out.astype(np.float64)).max()))
        elif not np.array_equal(ref, out):
            labels = False
    return max_diff, same, labels


def compare_exported(model: nn.Module, path: str | os.PathLike, fmt: str, inputs: tuple[Tensor, ...],
                     task: str | None = None, repeats: int = 5) -> CheckResult:
    """Run the exported model at ``path`` (ONNX in onnxruntime on the CPU; ``.pt2`` through its ``module()``)
    and the eager export wrapper on ``inputs``; compare outputs and time both."""
    task = task or task_of(model)
    wrapper = wrap_for_export(model, task)
    with torch.no_grad():
        reference = wrapper(*inputs)
    reference = (reference,) if isinstance(reference, Tensor) else tuple(reference)
    if fmt == 'onnx':
        require_packages('onnx')
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        session = ort.InferenceSession(os.fspath(path), options, providers=['CPUExecutionProvider'])
        feed = {i.name: x.cpu().numpy() for i, x in zip(session.get_inputs(), inputs)}
        outputs = session.run(None, feed)
        exported_ms = _median_ms(lambda: session.run(None, feed), repeats)
        runtime = 'onnxruntime'
    else:
        program = torch.export.load(os.fspath(path)).module()
        with torch.no_grad():
            outputs = program(*inputs)
            outputs = (outputs,) if isinstance(outputs, Tensor) else tuple(outputs)
            exported_ms = _median_ms(lambda: program(*inputs), repeats)
        runtime = 'torch.export'
    with torch.no_grad():
        torch_ms = _median_ms(lambda: wrapper(*inputs), repeats)
    max_diff, same, labels = _compare(reference, outputs, task)
    return CheckResult(max_diff, same, labels, torch_ms, exported_ms, runtime)


def check_attention_export(name: str, channels: int = 16, sizes: Sequence[tuple[int, int]] = ((8, 8), (12, 10)),
                           batch: int = 2, options: Mapping[str, Any] | None = None, seed: int = 0
                           ) -> list[float]:
    """Export the registered attention module ``name`` alone to ONNX (H, W symbolic) and return, per size in
    ``sizes``, the max |onnxruntime - PyTorch| on a random (batch, channels, H, W) input.

    The module is built without identity init (its output depends on the attention) and its ``gamma``, when it
    has one, set to 0.5. Raises :class:`ExportError` naming the module when it cannot be exported.
    """
    require_packages('onnx')
    import onnxruntime as ort

    from ..builder import build_attention
    from torch.export import Dim
    torch.manual_seed(seed)
    module = build_attention(dict(type=name, **dict(options or {})), channels).eval()
    if getattr(module, 'gamma', None) is not None:
        with torch.no_grad():
            module.gamma.fill_(0.5)
    x = torch.randn(batch, channels, *sizes[0])
    shapes = ({0: Dim('batch', min=1, max=1024), 2: Dim('height', min=1, max=4096),
               3: Dim('width', min=1, max=4096)},)
    try:
        with torch.no_grad():
            program = _onnx_program(module, (x,), shapes, ['x'], ['y'])
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f'attention module {name!r} cannot be exported to ONNX: {_reason(exc)}') from exc
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=['CPUExecutionProvider'])
    diffs = []
    for h, w in sizes:
        x = torch.randn(batch, channels, h, w)
        with torch.no_grad():
            ref = module(x).numpy()
        try:
            out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        except Exception as exc:  # noqa: BLE001 - onnxruntime refuses the graph at this size
            raise ExportError(f'attention module {name!r} exported to ONNX fails in onnxruntime at {h}x{w}: '
                              f'{_reason(exc)}') from exc
        diffs.append(float(np.abs(out - ref).max()) if out.shape == ref.shape else float('inf'))
    return diffs


DEFAULT_SIZE = (512, 512)
_SUFFIX = {'onnx': '.onnx', 'torch.export': '.pt2'}
_OUTPUTS = {'detection': 'boxes (K, 4) xyxy input pixels, scores (K,), labels (K,), batch_index (K,); box '
                         'decoding and NMS in the graph',
            'segmentation': 'logits (N, K, H, W) at the input size',
            'vqa': 'scores (N, A) sigmoid answer scores'}


def run_export(config: str, checkpoint: str, fmt: str = 'onnx', size: Sequence[int] | None = None,
               dynamic: bool = False, out: str | None = None, image: str | None = None,
               question: str = 'what shape is in the image?', cfg_options: Mapping[str, Any] | None = None
               ) -> Iterator[str]:
    """``attnkit export``: load ``checkpoint``, export it, check it against PyTorch; yields the lines to print.

    Raises:
        ConfigError: unknown format, a size not divisible by the model's stride, a bad ``out``.
        ExportError: a missing package, a module that cannot be exported, or an exported model whose outputs
            differ from PyTorch's in shape or labels.
    """
    require_packages(fmt)  # before the (slow) model load
    from ..config import load_config
    from ..engine import load_model
    from ..engine.utils import import_custom_modules
    cfg = load_config(config, dict(cfg_options) if cfg_options else None)
    import_custom_modules(cfg)
    model = load_model(cfg, checkpoint).cpu().eval()
    task = task_of(model)
    size = check_size(model, size if size is not None else DEFAULT_SIZE)
    if out is None:
        out = os.path.splitext(checkpoint)[0] + _SUFFIX[fmt]
    if os.path.isdir(out) or out.endswith(('/', os.sep)):
        raise ConfigError(f'--out {out!r} is a folder; give a file name, e.g. '
                          f"{os.path.join(out, 'model' + _SUFFIX[fmt])!r}.")
    if os.path.realpath(out) in {os.path.realpath(config), os.path.realpath(checkpoint)}:
        raise ConfigError(f'--out {out!r} is the config or the checkpoint; give another file name.')
    inputs = example_inputs(model, task, size, image=sample_image(size, image), question=question)
    path = export_model(model, fmt, size, out, dynamic=dynamic, task=task, inputs=inputs)
    shape = 'N x 3 x H x W' if dynamic else 'x'.join(map(str, inputs[0].shape))
    yield (f'wrote {path} ({fmt}, {task}, images {shape} uint8'
           + (' + input_ids, attention_mask' if task == 'vqa' else '') + f' -> {_OUTPUTS[task]})')
    result = compare_exported(model, path, fmt, inputs, task)
    yield result.line()
    if not (result.same_shapes and result.labels_equal):
        raise ExportError(f'the exported model at {path} disagrees with PyTorch on the sample input '
                          f'(shapes equal: {result.same_shapes}, labels equal: {result.labels_equal}).')
