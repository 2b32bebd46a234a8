"""Primary networks, their recipe table (`NetSpec`), and `functional_logits`, the one place a net is evaluated
for K parameter samples.

Nets are flat `nn.Sequential`s so that the layers before the first stochastic one can be found and run once
per input instead of K times. Inputs are pixels in [0, 1]; standardisation is the first layer of every net,
so attacks work in pixel space. No BatchNorm: it does not work under `vmap` in train mode.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from enum import Enum
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from robusthyper.settings import StrictModel


class Arch(str, Enum):
    """Primary-net architectures."""

    MLP = "mlp"
    """Fully connected ReLU net; hidden widths configurable (BHN's 784-800-10 is `widths = [800]`)."""
    LENET5 = "lenet5"
    """conv 5x5x20, pool, conv 5x5x50, pool, fc 500, fc C (METHODS.md §2): the papers' MNIST net."""
    CIFAR_CNN = "cifar-cnn"
    """A small CIFAR CNN: conv 32, conv 32, pool, conv 64, conv 64, pool, fc 256, fc C."""


class Standardize(nn.Module):
    """Per-channel (x - mean) / std inside the model, so attacks and clipping live in pixel space."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class MCDropout(nn.Module):
    """Dropout that stays on in `.eval()`: MC dropout's masks are its posterior samples, and attack tools
    (ART's `predict`, torchattacks) switch models to eval mode."""

    stochastic = True

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout p={p} must be in [0, 1)")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, training=True)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _WeightNorm(nn.Module):
    """Shared code of weight-normalised layers: W = g * V / ||V|| with one scale g per output unit.

    BHN puts its posterior on g only, so g is a separate parameter named `g` (not torch's parametrization
    names) and directions `v` keep their own norm out of the way.
    """

    def __init__(self, v: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.v = nn.Parameter(v)
        self.g = nn.Parameter(self.direction_norm(v).detach().clone())
        self.bias = nn.Parameter(bias)

    @staticmethod
    def direction_norm(v: Tensor) -> Tensor:
        return v.flatten(1).norm(dim=1)

    def unit_directions(self) -> Tensor:
        """V / ||V||, shape of the weight."""
        norm = self.direction_norm(self.v).clamp_min(1e-12)
        return self.v / norm.view(-1, *([1] * (self.v.dim() - 1)))

    def weight(self) -> Tensor:
        return self.g.view(-1, *([1] * (self.v.dim() - 1))) * self.unit_directions()


class WNLinear(_WeightNorm):
    """Weight-normalised linear layer (Salimans & Kingma 2016), as BHN's primary net uses."""

    def __init__(self, in_features: int, out_features: int) -> None:
        ref = nn.Linear(in_features, out_features)
        super().__init__(ref.weight.detach().clone(), ref.bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight(), self.bias)


class WNConv2d(_WeightNorm):
    """Weight-normalised 2-d convolution; the norm runs over (in, kh, kw) of each filter."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0) -> None:
        ref = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding)
        assert ref.bias is not None  # bias=True is Conv2d's default
        super().__init__(ref.weight.detach().clone(), ref.bias.detach().clone())
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight(), self.bias, padding=self.padding)


def _linear(n_in: int, n_out: int, weight_norm: bool) -> nn.Module:
    return WNLinear(n_in, n_out) if weight_norm else nn.Linear(n_in, n_out)


def _conv(c_in: int, c_out: int, k: int, weight_norm: bool, padding: int = 0) -> nn.Module:
    return WNConv2d(c_in, c_out, k, padding) if weight_norm else nn.Conv2d(c_in, c_out, k, padding=padding)


def _dropout(p: float) -> list[nn.Module]:
    return [MCDropout(p)] if p > 0 else []


def mlp(
    input_shape: Sequence[int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    widths: Sequence[int] = (800,),
    dropout: float = 0.0,
    weight_norm: bool = False,
) -> nn.Sequential:
    """ReLU MLP; MC dropout (if p > 0) after every hidden activation."""
    layers: list[nn.Module] = [Standardize(mean, std), nn.Flatten()]
    n_in = math.prod(input_shape)
    for width in widths:
        layers += [_linear(n_in, width, weight_norm), nn.ReLU(), *_dropout(dropout)]
        n_in = width
    layers.append(_linear(n_in, num_classes, weight_norm))
    return nn.Sequential(*layers)


def lenet5(
    input_shape: Sequence[int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    dropout: float = 0.0,
    weight_norm: bool = False,
) -> nn.Sequential:
    """LeNet-5 as in both papers' code; MC dropout (if p > 0) only in the fully connected head, so the
    convolutional trunk is deterministic and runs once per input."""
    c, h, w = input_shape
    flat = 50 * (((h - 4) // 2 - 4) // 2) * (((w - 4) // 2 - 4) // 2)
    return nn.Sequential(
        Standardize(mean, std),
        _conv(c, 20, 5, weight_norm), nn.ReLU(), nn.MaxPool2d(2),
        _conv(20, 50, 5, weight_norm), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        *_dropout(dropout),
        _linear(flat, 500, weight_norm), nn.ReLU(),
        *_dropout(dropout),
        _linear(500, num_classes, weight_norm),
    )  # fmt: skip


def cifar_cnn(
    input_shape: Sequence[int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    dropout: float = 0.0,
    weight_norm: bool = False,
) -> nn.Sequential:
    """A small VGG-style CIFAR CNN (no BatchNorm); MC dropout (if p > 0) in the head."""
    c, h, w = input_shape
    return nn.Sequential(
        Standardize(mean, std),
        _conv(c, 32, 3, weight_norm, padding=1), nn.ReLU(),
        _conv(32, 32, 3, weight_norm, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        _conv(32, 64, 3, weight_norm, padding=1), nn.ReLU(),
        _conv(64, 64, 3, weight_norm, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        *_dropout(dropout),
        _linear(64 * (h // 4) * (w // 4), 256, weight_norm), nn.ReLU(),
        *_dropout(dropout),
        _linear(256, num_classes, weight_norm),
    )  # fmt: skip


class NetSpec(StrictModel):
    """A recipe's `[net]` table: the primary net that `build_net` makes (each posterior may adapt it)."""

    arch: Literal["mlp", "lenet5", "cifar-cnn"] = "lenet5"
    widths: list[Annotated[int, Field(gt=0)]] = [800]
    """Hidden widths of the MLP (ignored by the conv nets)."""


def build_net(
    arch: Arch | str,
    input_shape: Sequence[int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    widths: Sequence[int] = (800,),
    dropout: float = 0.0,
    weight_norm: bool = False,
) -> nn.Sequential:
    """Build a primary net by name; `widths` applies to the MLP only."""
    arch = Arch(arch)
    if arch is Arch.MLP:
        return mlp(
            input_shape, num_classes, mean, std, widths=widths, dropout=dropout, weight_norm=weight_norm
        )
    if arch is Arch.LENET5:
        return lenet5(input_shape, num_classes, mean, std, dropout=dropout, weight_norm=weight_norm)
    return cifar_cnn(input_shape, num_classes, mean, std, dropout=dropout, weight_norm=weight_norm)


# --------------------------------------------------------------------------------------------------------
# Evaluation for K parameter samples
# --------------------------------------------------------------------------------------------------------


def is_stochastic(module: nn.Module) -> bool:
    """True when a module draws randomness in its forward pass (MC dropout or any active dropout)."""
    return any(
        getattr(m, "stochastic", False) or (isinstance(m, nn.modules.dropout._DropoutNd) and m.training)
        for m in module.modules()
    )


def _first_stochastic_layer(net: nn.Sequential, sampled: Mapping[str, Tensor]) -> int:
    """Index of the first layer whose output depends on the posterior sample."""
    sampled_layers = {int(name.split(".", 1)[0]) for name in sampled}
    for i, layer in enumerate(net):
        if i in sampled_layers or is_stochastic(layer):
            return i
    return len(net)


def _sample_count(params: Mapping[str, Tensor], k: int | None) -> int:
    counts = {p.shape[0] for p in params.values()}
    if len(counts) > 1:
        raise ValueError(f"parameter samples disagree on K: {sorted(counts)}")
    if counts:
        (k_params,) = counts
        if k is not None and k != k_params:
            raise ValueError(f"k={k} but the parameter samples hold K={k_params}")
        return k_params
    return 1 if k is None else k


@contextmanager
def rng_scope(generator: torch.Generator | None, device: torch.device) -> Iterator[None]:
    """Run module randomness (dropout masks) from `generator` without touching the global RNG.

    Attack tools reseed the global RNG (torchattacks' APGD and Square do on every call); drawing a seed from
    our own generator keeps posterior samples reproducible and fresh regardless.
    """
    if generator is None:
        yield
        return
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Parameters with `requires_grad=False` for the duration: attacks need input gradients only, and ART's
    `loss_gradient` would otherwise also compute every weight gradient (≈1.2× slower, FINDINGS.md)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.Identity)
_POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
"""Layers that act on each element or channel alone: they run unchanged on K samples side by side."""


def channels_last(t: Tensor) -> Tensor:
    """`t` with NHWC strides, even where C = 1 (`.contiguous(memory_format=...)` then keeps NCHW strides, and
    convolutions, ReLU and pooling then run NCHW: on this CPU 2x slower for LeNet-5's first conv and pooling)."""
    if t.stride(1) == 1:
        return t
    return torch.empty_like(t, memory_format=torch.channels_last).copy_(t)


def _grouped_path_applies(suffix: nn.Sequential, params: Mapping[str, Tensor]) -> bool:
    """Whether `_grouped_logits` can run `suffix`: plain convolutions (then a flatten) then linear layers, with
    per-channel layers between, and every sampled parameter a weight or bias of one of them."""
    consumed = set()
    flat = False
    for name, layer in suffix.named_children():
        if type(layer) is nn.Conv2d and not flat and layer.groups == 1 and layer.padding_mode == "zeros":
            consumed |= {f"{name}.weight", f"{name}.bias"}
        elif type(layer) is nn.Linear:
            consumed |= {f"{name}.weight", f"{name}.bias"}
            flat = True
        elif type(layer) is nn.Flatten and layer.start_dim == 1 and layer.end_dim == -1:
            flat = True
        elif not isinstance(layer, _ELEMENTWISE) and (flat or not isinstance(layer, _POOLING)):
            return False
    return set(params) <= consumed


def _grouped_logits(suffix: nn.Sequential, params: Mapping[str, Tensor], h: Tensor, k: int) -> Tensor:
    """`[K, B, C]` logits of K weight samples through `suffix` without `vmap`.

    Convolutions keep the K samples side by side as channel groups, `[B, K*C, H, W]`: the first is one
    convolution with K*C_out filters over the shared input, the next ones grouped convolutions (`groups = K`);
    linear layers are batched matrix products over `[K, B, F]`. On LeNet-5 (K = 20 in chunks of 5, 128
    inputs, one thread) an attack step's forward and backward took 0.88x the time of `vmap`, whose per-sample
    convolutions re-layout their outputs before every pooling layer. Activations are kept channels-last (NHWC): another
    1.26x (mkldnn's convolutions and max pooling are faster so on a CPU, and so are cuDNN's on a GPU).
    """
    batch = h.shape[0]
    grouped = False  # h is [B, K*C, H, W] (True) or shared by all samples [B, ...] (False), until flattened
    batched = False  # h is [K, B, F]

    def sampled(name: str, layer: nn.Module, attr: str) -> Tensor | None:
        if f"{name}.{attr}" in params:
            return params[f"{name}.{attr}"]
        own = getattr(layer, attr)
        return None if own is None else own.expand(k, *own.shape)

    def sampled_weight(name: str, layer: nn.Conv2d | nn.Linear) -> Tensor:
        weight = sampled(name, layer, "weight")
        assert weight is not None  # conv and linear layers always have one
        return weight

    for name, layer in suffix.named_children():
        if isinstance(layer, nn.Conv2d):
            weight, bias = sampled_weight(name, layer), sampled(name, layer, "bias")
            h, weight = channels_last(h), channels_last(weight.flatten(0, 1))
            h = F.conv2d(h, weight, None if bias is None else bias.flatten(), layer.stride,
                         layer.padding, layer.dilation, groups=k if grouped else 1)  # fmt: skip
            grouped = True
        elif isinstance(layer, (nn.Linear, nn.Flatten)):
            if grouped:  # [B, K*C, H, W] -> [K, B, C*H*W]: sample k's channels are the k-th block
                h, grouped = h.reshape(batch, k, -1).transpose(0, 1), False
            elif not batched:
                h = h.flatten(1).unsqueeze(0).expand(k, batch, -1)
            batched = True
            if isinstance(layer, nn.Linear):
                weight, bias = sampled_weight(name, layer), sampled(name, layer, "bias")
                product = torch.bmm(h, weight.transpose(1, 2))
                h = product if bias is None else product + bias.unsqueeze(1)
        else:
            h = layer(h)
    if grouped:
        h = h.reshape(batch, k, -1).transpose(0, 1)
    elif not batched:
        h = h.unsqueeze(0).expand(k, *h.shape)
    return h


def functional_logits(
    net: nn.Module,
    params: Mapping[str, Tensor],
    x: Tensor,
    *,
    k: int | None = None,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    grouped: bool = True,
) -> Tensor:
    """Logits of `net` for K parameter samples: the one evaluation path of every posterior.

    Args:
        net: the primary net (an `nn.Sequential` gets the shared-prefix fast path).
        params: sampled parameters keyed like `net.named_parameters()`, each `[K, *shape]`; names that are
            missing use the net's own (shared) parameters. May be empty (MC dropout, a point estimate).
        x: inputs `[B, *input_shape]`, shared by all samples.
        k: number of samples when `params` is empty (otherwise inferred; default 1).
        generator: drives module randomness (dropout masks).
        chunk_size: samples evaluated per call (bounds memory); default all at once.
        grouped: take `_grouped_logits` where it applies (False: always `vmap`, the reference it is tested
            against).

    Returns:
        `[K, B, C]` logits.

    Layers before the first stochastic one run once per input. When nothing is sampled (MC dropout), the
    K samples are one K*B batch through the shared weights; otherwise, for plain conv/linear layers, the K
    samples side by side as channel groups and batched matrix products (`_grouped_logits`), and for anything
    else `torch.func.vmap` over the samples.
    """
    k = _sample_count(params, k)
    batch = x.shape[0]
    prefix: nn.Module
    suffix: nn.Module
    if isinstance(net, nn.Sequential):
        split = _first_stochastic_layer(net, params)
        prefix, suffix = net[:split], net[split:]  # slices keep the layers' names, so params still match
    else:
        prefix, suffix = nn.Identity(), net
    with rng_scope(generator, x.device):
        h = prefix(x)
        if not params:
            if not is_stochastic(suffix):
                out = suffix(h)
                return out.unsqueeze(0).expand(k, *out.shape)
            h_rep = h.unsqueeze(0).expand(k, *h.shape).reshape(k * batch, *h.shape[1:])
            return suffix(h_rep).view(k, batch, -1)

        def one_sample(p: dict[str, Tensor], inputs: Tensor) -> Tensor:
            return torch.func.functional_call(suffix, p, (inputs,), strict=False)

        if k == 1:  # training's usual case: vmap would only add overhead
            return one_sample({n: p[0] for n, p in params.items()}, h).unsqueeze(0)
        step = chunk_size or k
        if grouped and isinstance(suffix, nn.Sequential) and _grouped_path_applies(suffix, params):
            chunks = [_grouped_logits(suffix, {n: p[i : i + step] for n, p in params.items()}, h, min(step, k - i))
                      for i in range(0, k, step)]  # fmt: skip
            return chunks[0] if len(chunks) == 1 else torch.cat(chunks)

        batched = torch.func.vmap(one_sample, in_dims=(0, None), randomness="different")
        chunks = [batched({n: p[i : i + step] for n, p in params.items()}, h) for i in range(0, k, step)]
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)
