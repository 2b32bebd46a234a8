"""How many K·B rows one posterior call may hold: cache-sized on a CPU, memory-sized on a GPU.

A stochastic ensemble evaluates K samples of B inputs as K·B rows. On a CPU, throughput falls once a call's
activations outgrow the cache, so the limits are small constants measured on this project's 2-core machine. On
a GPU, small calls leave it idle (launch-bound), so the limits are as many rows as fit in a share of its free
memory, from the bytes an attack step's forward pass keeps per row (`activation_bytes_per_row`, measured with
saved-tensor hooks: the same figure on any device, so it is tested on the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from robusthyper.nets import frozen

if TYPE_CHECKING:
    from robusthyper.posteriors.base import Posterior

CPU_MAX_ROWS = 2048
"""Largest K·B evaluated in one posterior call when gradients are off (bounds memory of big K_eval)."""
CPU_MAX_ROWS_GRAD = 640
"""Largest K·B per posterior call in an attack step (measured fastest on a 2-core CPU; see sample_logits)."""
CPU_MAX_ROWS_BACKWARD = 2560
"""Largest K·B whose graph one backward pass of the ART estimator's `loss_gradient` holds: bounds an attack's
memory as K grows (measured: bbb at K = 100 peaked 3 GB above the model when one graph held the whole batch)."""

GPU_MEMORY_SHARE = 0.25
"""Share of the GPU's free memory one call's graph may take (the rest: the model, ART's copies, fragmentation)."""
BACKWARD_FACTOR = 2.0
"""A backward pass materialises gradients about as large as the activations it consumes."""
GPU_MAX_ROWS = 1 << 16
"""Beyond this a call is long enough to keep any GPU busy; larger ones only cost memory."""


@dataclass(frozen=True)
class RowLimits:
    """K·B rows per posterior call: without gradients, with gradients, and per backward pass."""

    max_rows: int = CPU_MAX_ROWS
    max_rows_grad: int = CPU_MAX_ROWS_GRAD
    max_rows_backward: int = CPU_MAX_ROWS_BACKWARD


CPU_LIMITS = RowLimits()


def activation_bytes_per_row(posterior: Posterior, x: Tensor) -> int:
    """Bytes autograd keeps per K·B row in an attack step's forward pass (input gradients, frozen weights).

    The difference between a 2-row and a 1-row forward pass of one sample, each storage counted once, so that
    weights (saved whatever the batch) cancel. Draws its sample from its own generator: probing never moves
    the caller's random stream, so results do not depend on the device's limits.
    """

    def saved_bytes(rows: int) -> int:
        storages: dict[int, int] = {}

        def pack(t: Tensor) -> Tensor:
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
            return t

        probe = x[:1].expand(rows, *x.shape[1:]).clone().requires_grad_(True)
        with (
            torch.enable_grad(),
            frozen(posterior),
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        ):
            posterior.logits(probe, 1, torch.Generator(device=x.device).manual_seed(0))
        return sum(storages.values())

    return max(1, saved_bytes(2) - saved_bytes(1))


def gpu_row_limits(bytes_per_row: int, free_bytes: int) -> RowLimits:
    """Rows whose graph (activations plus their gradients) fits in `GPU_MEMORY_SHARE` of the free memory, at
    least the CPU's limits (a GPU short of memory for those would fail anyway) and at most `GPU_MAX_ROWS`."""
    fit = int(GPU_MEMORY_SHARE * free_bytes / (BACKWARD_FACTOR * max(1, bytes_per_row)))
    rows = min(GPU_MAX_ROWS, fit)
    return RowLimits(
        max_rows=max(CPU_MAX_ROWS, rows),
        max_rows_grad=max(CPU_MAX_ROWS_GRAD, rows),
        max_rows_backward=max(CPU_MAX_ROWS_BACKWARD, rows),
    )


def row_limits(posterior: Posterior, x: Tensor) -> RowLimits:
    """The limits for inputs like `x` on the device they are on (see the module docstring)."""
    if x.device.type != "cuda":
        return CPU_LIMITS
    free, _ = torch.cuda.mem_get_info(x.device)
    return gpu_row_limits(activation_bytes_per_row(posterior, x), free)
