"""The backend registry: one record per backend, read by export, quantization, runtime, bench and the CLI.

Each backend is a folder here (``__init__.py`` with its ``Backend`` record; ``export.py``, ``quantize.py``,
``runtime.py``), registered by one line below. Reading a record imports no converter or runtime.
"""

from .coreml import COREML
from .executorch import EXECUTORCH
from .onnx import ONNX
from .openvino import OPENVINO
from .registry import (
    BACKENDS,
    COMMON_GRAPHS,
    Backend,
    backend_names,
    get_backend,
    register,
    runnable_backends,
    schemes_by_backend,
    unregister,
)

for _backend in (ONNX, OPENVINO, EXECUTORCH, COREML):
    register(_backend)

__all__ = [
    "BACKENDS",
    "COMMON_GRAPHS",
    "Backend",
    "backend_names",
    "get_backend",
    "register",
    "runnable_backends",
    "schemes_by_backend",
    "unregister",
]
