"""Which torch device a run uses: the one resolver behind every `--device` option."""

from __future__ import annotations

from robusthyper.errors import UserError


def resolve_device(device: str) -> str:
    """`cpu`, `cuda`, `cuda:N` or `auto` (cuda when available) -> a device string torch accepts."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"--device '{device}' is not one of cpu, cuda, cuda:N, auto")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is available; use --device cpu or auto")
    return device
