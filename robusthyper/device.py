"""`--device`: one resolver for every command and library entry point, so they accept the same names."""

from __future__ import annotations

import re

import torch

from robusthyper.errors import UserError

_CUDA_INDEX = re.compile(r"cuda:(\d+)")


def resolve_device(device: str) -> str:
    """`cpu`, `cuda`, `cuda:N` or `auto` (cuda when available, else cpu) as a torch device name.

    A name torch would not know, or a CUDA device this machine does not have, is a one-line `UserError` that
    names the value and the fix: better at the start of a run than as a torch error in its middle.
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    index = _CUDA_INDEX.fullmatch(device)
    if device != "cuda" and index is None:
        raise UserError(f"--device '{device}' is not one of cpu, cuda, cuda:N, auto; pass one of those")
    if not torch.cuda.is_available():
        raise UserError(f"--device {device} but no CUDA device is available; use --device cpu or auto")
    if index is not None and int(index.group(1)) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise UserError(
            f"--device {device} but this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}; "
            "pass one of those"
        )
    return device


__all__ = ["resolve_device"]
