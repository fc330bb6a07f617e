"""Native CPU kernels of the fast path: small C sources compiled on first use and loaded with ctypes.

Some inference forms need passes over the feature map that stock torch ops cannot fuse: CBAM's spatial statistics
of ``y = x * Mc`` need ``y`` itself in torch (seven extra reads and two writes of the map), against two reads in
one loop (:mod:`attnkit.deploy.cbam_native`); others are a chain of small ops on (N, C) vectors that cost several
times their time alone between a network's convolutions (SE's gate: :mod:`attnkit.deploy.se_native`; GC's
context term: :mod:`attnkit.deploy.gc_native`). ``torch.compile`` writes such loops too, but compiles the whole
model per input shape (minutes here) and measured no faster inside a network (docs/deploy.md). These kernels are
plain C (no torch headers: compiled in about a second; shared helpers in ``common.h``), built with the system's C
compiler (``$CC``, else ``cc``) as ``-O3 -march=native -fopenmp``, and cached under ``$ATTNKIT_CACHE_DIR``
(default ``~/.cache/attnkit``) keyed by the source, the headers, the compiler and this CPU's flags. They bind to
the OpenMP runtime torch has loaded (``libgomp.so.1``), so both share one thread pool.

Without a C compiler, or with ``ATTNKIT_NATIVE=0``, :func:`load_kernel` returns None and says why
(:func:`kernel_status`); the forms then run their stock-op path (same outputs within float rounding).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import Tensor

__all__ = ['load_kernel', 'kernel_status', 'cache_dir', 'map_accepts', 'ptr', 'NativeKernel', 'native_kernel',
           'KERNEL_SOURCES', 'MAP_DTYPES']

KERNEL_SOURCES = {name: Path(__file__).with_name(f'{name}.c') for name in ('cbam_cpu', 'gc_cpu', 'se_cpu')}
_FLAGS = ('-O3', '-march=native', '-fopenmp', '-fPIC', '-shared', '-std=c99')
_loaded: dict[str, ctypes.CDLL | None] = {}
_status: dict[str, str] = {}


def cache_dir() -> Path:
    """Where built kernels are kept: ``$ATTNKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/attnkit``, else
    ``~/.cache/attnkit`` (then ``kernels/`` below it)."""
    root = os.environ.get('ATTNKIT_CACHE_DIR')
    if not root:
        root = os.path.join(os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'attnkit')
    return Path(root) / 'kernels'


def _cpu_flags() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith(('flags', 'Features')):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _compiler() -> tuple[str | None, str]:
    """(the compiler's path or None, its version line or why there is none)."""
    name = os.environ.get('CC') or 'cc'
    path = shutil.which(name)
    if path is None:
        return None, f'no C compiler ({name!r} not found; set $CC)'
    try:
        out = subprocess.run([path, '--version'], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f'the C compiler {path} does not run: {e}'
    return path, (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else path


def _build(name: str, source: Path) -> ctypes.CDLL | None:
    if os.environ.get('ATTNKIT_NATIVE', '1').strip().lower() in ('0', 'false', 'no', 'off'):
        _status[name] = 'off (ATTNKIT_NATIVE=0)'
        return None
    cc, version = _compiler()
    if cc is None:
        _status[name] = version
        return None
    code = b'\0'.join([source.read_bytes()] + [h.read_bytes() for h in sorted(source.parent.glob('*.h'))])
    key = hashlib.sha256(b'\0'.join([code, version.encode(), ' '.join(_FLAGS).encode(),
                                     platform.machine().encode(), _cpu_flags().encode()])).hexdigest()[:16]
    target = cache_dir() / f'{name}-{key}.so'
    for attempt in (0, 1):
        if not target.exists():
            built = _compile(name, cc, source, target)
            if not built:
                return None
        try:
            lib = ctypes.CDLL(str(target))
        except OSError as e:
            if attempt == 0:  # a damaged cache file: build it again once
                target.unlink(missing_ok=True)
                continue
            _status[name] = f'{target} does not load: {e}'
            return None
        _status[name] = f'built with {version} ({target})'
        return lib
    return None


def _compile(name: str, cc: str, source: Path, target: Path) -> bool:
    """Compile ``source`` into ``target`` (atomically: a concurrent build of the same key writes the same file)."""
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix='.so', dir=target.parent)
        os.close(fd)
        out = subprocess.run([cc, *_FLAGS, str(source), '-o', tmp, '-lm'], capture_output=True, text=True,
                             timeout=300)
    except (OSError, subprocess.SubprocessError) as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        _status[name] = f'build failed: {e}'
        return False
    if out.returncode != 0:
        os.unlink(tmp)
        lines = out.stderr.strip().splitlines()
        first = next((line for line in lines if 'error' in line), lines[0] if lines else f'exit {out.returncode}')
        _status[name] = f'build failed ({cc}): {first}'
        return False
    os.replace(tmp, target)
    return True


def load_kernel(name: str) -> ctypes.CDLL | None:
    """The compiled kernel library ``name`` (a key of :data:`KERNEL_SOURCES`), built on first use in this process
    and cached on disk; None where it cannot be built (:func:`kernel_status` says why)."""
    if name not in _loaded:
        _loaded[name] = _build(name, KERNEL_SOURCES[name])
    return _loaded[name]


def kernel_status(name: str) -> str:
    """One line: where kernel ``name`` was built from, or why it is not available ('' before :func:`load_kernel`)."""
    return _status.get(name, '')


MAP_DTYPES = {torch.float32: 0, torch.bfloat16: 1}  # the kernels' dtype codes


def map_accepts(x: Tensor, identity: Tensor | None = None) -> bool:
    """Whether the map x (N, C, H, W) (and identity, the same shape) can go through a kernel: CPU, fp32/bf16,
    channels_last-contiguous, no autograd, not traced, exported or compiled."""
    if (x.device.type != 'cpu' or x.dtype not in MAP_DTYPES or x.dim() != 4
            or not x.is_contiguous(memory_format=torch.channels_last)
            or (x.requires_grad and torch.is_grad_enabled())):
        return False
    if identity is not None and (identity.shape != x.shape or identity.dtype != x.dtype
                                 or identity.device != x.device
                                 or not identity.is_contiguous(memory_format=torch.channels_last)):
        return False
    return not (torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export())


def ptr(t: Tensor | None) -> int | None:
    """A tensor's data pointer for a kernel argument (None: NULL). Keep the tensor referenced across the call."""
    return None if t is None else t.data_ptr()


class NativeKernel:
    """Base of the kernels' bindings: the loaded library (``lib``) with its argument types (:meth:`bind`), the input
    check, and copies and pickles that resolve to this process's instance (a ctypes library is not copyable).

    Subclasses set ``name`` (a key of :data:`KERNEL_SOURCES`) and declare their functions' argument types."""

    name: str = ''

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.bind(lib)

    def bind(self, lib: ctypes.CDLL) -> None:
        """Set ``argtypes`` of the library's functions."""

    @staticmethod
    def accepts(x: Tensor, identity: Tensor | None = None) -> bool:
        """Whether x (and identity) can take the kernel path (:func:`map_accepts`)."""
        return map_accepts(x, identity)

    def __reduce__(self) -> tuple:
        return (native_kernel, (type(self),))


_instances: dict[str, NativeKernel | None] = {}


def native_kernel(cls: type[NativeKernel]) -> NativeKernel | None:
    """The process's instance of binding ``cls``, its library built on first call (None where it cannot be built:
    :func:`kernel_status` ``(cls.name)`` says why)."""
    if cls.name not in _instances:
        lib = load_kernel(cls.name)
        _instances[cls.name] = None if lib is None else cls(lib)
    return _instances[cls.name]
