"""Where the work runs and in which precision: one ``--device`` (``auto`` = cuda, then mps, then cpu; or ``cpu``,
``cuda``, ``cuda:1``, ``mps``) and one ``--precision`` (``fp32``, ``bf16``, ``fp16``) for every command and the
Python API. Errors a user can cause (no such device) are one clear line."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .errors import UsageError

AUTO = "auto"
DEVICE_HELP = "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps."
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(spec: str | torch.device | None = AUTO) -> torch.device:
    """``auto``/None -> the best device present; otherwise the named one, checked to exist."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == AUTO):
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec.strip().lower() if isinstance(spec, str) else spec)
    except (RuntimeError, ValueError):
        raise UsageError(f"unknown device {str(spec)!r}: use {DEVICE_HELP}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = torch.version.cuda
            why = f"this torch {torch.__version__} was built without CUDA" if built is None else "no GPU is visible"
            raise UsageError(f"--device {spec}: no CUDA GPU available ({why}); use --device cpu or auto")
        index = 0 if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {spec}: only {torch.cuda.device_count()} CUDA GPU(s) visible (0-based index)")
        return torch.device("cuda", index)
    if device.type == "mps" and not _mps_available():
        raise UsageError(f"--device {spec}: Apple's MPS backend is not available here; use --device cpu or auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported device {str(spec)!r}: use {DEVICE_HELP}")
    return device


def configure(device: torch.device, precision: str) -> None:
    """fp32 on a GPU means fp32: no TF32 in convolutions (cuDNN's default) or matrix products, so scores agree with
    the CPU's to ~1e-6 rather than ~1e-3. bf16/fp16 runs are mixed precision anyway."""
    if device.type == "cuda":
        exact = precision_dtype(precision) == torch.float32
        torch.backends.cudnn.allow_tf32 = not exact
        torch.backends.cuda.matmul.allow_tf32 = not exact


def precision_dtype(precision: str) -> torch.dtype:
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[object]:
    """Mixed precision for a forward pass: fp32 runs as is; bf16/fp16 under ``torch.autocast`` on the device."""
    dtype = precision_dtype(precision)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def full_precision(tensor: torch.Tensor) -> Iterator[None]:
    """Turn autocast off for a numerically delicate part (Cholesky, eigenvalues, codebook distances): inside it,
    ops run in the dtype of their inputs, which the caller casts to fp32."""
    with torch.autocast(device_type=tensor.device.type, enabled=False):
        yield


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels (for honest timings)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
