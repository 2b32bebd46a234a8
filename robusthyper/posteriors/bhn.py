"""`bhn`: Bayesian Hypernetworks (Krueger, Huang, Islam, Turner, Lacoste, Courville 2017; arXiv 1710.04759).

The primary net is weight-normalised, `W[:, j] = g_j * V[:, j] / ||V[:, j]||`, and only the scales are
Bayesian: a normalizing flow q(g) over the vector of all scales (D = sum of the layers' output units; LeNet-5:
20 + 50 + 500 + 10 = 580). Directions V and biases are point estimates; the net's own `g` parameters are
frozen placeholders, replaced by flow samples in every evaluation.

Flow, in the sampling direction (METHODS.md §1): `eps ~ N(0, I_D)` -> elementwise affine
`eps * (exp(w) + 1e-3) + b` (b starts at the net's initial scales, w at `init_log_sigma` = -7, so sigma ~ 2e-3
and the posterior starts almost deterministic) -> `transforms` affine coupling layers (RealNVP style, zuko's
`GeneralCouplingTransform`: a random half of the features, drawn afresh per layer, conditions a `hidden_features`
ReLU net giving scale and shift of the other half, `y_b = x_b * s + m`; the last conditioner layer is scaled
down so each coupling starts near the identity) or IAF layers (`flow = "iaf"`: one pass per sample, D passes to
score a given g). `log q(g) = log N(eps; 0, I) - log|det dg/deps|` (exact).

Why coupling layers and not zuko's MAF with `passes = 2`: that masked layer computes the same coupling through
dense D x hidden weights half of which are masked (2x the parameters and Adam's work, a mask product per step)
and samples through its inverse, which calls the conditioner three times (two passes, then the log-det); the
coupling layer calls it once in either direction. A LeNet-5 BHN training epoch went from 1.9x to 1.3x det's.

Prior `p(g) = N(0, 1/lambda)` i.i.d.; the KL is the Monte Carlo estimate `mean_k log q(g_k) - log p(g_k)` from
the same samples that produce the logits. Shapes: `sample_params(k)` gives `{"<layer>.g": [K, n_out]}`.

Fast path: all K samples share V, so a layer's output for sample k is `(x @ (V/||V||)^T) * g_k + b`; the layers
before the first weight-normalised one and that layer's product with V run once per input, the rest as one
K*B batch (chunked over K to bound memory). It equals `functional_logits` on the same samples (tested).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
import zuko
from pydantic import Field
from torch import Tensor, nn
from torch.distributions import AffineTransform, Transform

from robusthyper.data import DatasetInfo
from robusthyper.nets import (
    NetSpec,
    WNConv2d,
    WNLinear,
    _WeightNorm,
    build_net,
    channels_last,
    functional_logits,
)
from robusthyper.posteriors.base import Posterior
from robusthyper.settings import StrictModel

SIGMA_FLOOR = 1e-3
"""sigma = exp(w) + 1e-3 in the affine layer, as in the authors' code: the scale never collapses to 0."""


class BHNOptions(StrictModel):
    flow: Literal["coupling", "iaf"] = "coupling"
    """Layers after the affine one: RealNVP-style affine coupling (fast both ways) or IAF (fast sampling)."""
    transforms: int = Field(4, ge=0, le=32)
    """Number of coupling / IAF layers (the authors swept 4-16); 0 leaves the elementwise affine flow."""
    hidden_features: list[Annotated[int, Field(gt=0)]] = [200]
    """Hidden widths of each layer's ReLU conditioner (the authors: 200)."""
    init_log_sigma: float = Field(-7.0, le=0)
    """Initial w of the affine layer, sigma = exp(w) + 1e-3 (-7: sigma ~ 2e-3, almost deterministic)."""
    init_identity_scale: float = Field(1e-2, ge=0, le=1)
    """Factor on the conditioners' last layer at init: small, so each coupling starts near the identity."""
    prior_precision: float = Field(1.0, gt=0)
    """lambda of the N(0, 1/lambda) prior on every scale g."""
    chunk_size: int = Field(8, gt=0)
    """Posterior samples evaluated together in `logits` (bounds memory: conv activations are K*B big)."""


class ElementwiseAffine(zuko.flows.LazyTransform):
    """`g = eps * (exp(w) + 1e-3) + b`, stored as zuko's data -> noise direction (its inverse)."""

    def __init__(self, loc: Tensor, log_sigma: float) -> None:
        super().__init__()
        self.loc = nn.Parameter(loc.detach().clone())
        self.log_scale = nn.Parameter(torch.full_like(self.loc, log_sigma))

    def scale(self) -> Tensor:
        return self.log_scale.exp() + SIGMA_FLOOR

    def forward(self, c: Tensor | None = None) -> Transform:
        return AffineTransform(self.loc, self.scale(), event_dim=1).inv


def build_flow(base_loc: Tensor, options: BHNOptions) -> zuko.flows.Flow:
    """The flow over D = len(base_loc) scales; `transform` maps g -> eps (zuko's convention)."""
    features = base_loc.numel()
    layers: list[zuko.flows.LazyTransform] = []
    hidden = tuple(options.hidden_features)
    for _ in range(options.transforms):
        layer: zuko.flows.LazyTransform
        if options.flow == "coupling":
            # the half that conditions: a buffer of the layer, so checkpoints keep it
            mask = torch.zeros(features, dtype=torch.bool)
            mask[torch.randperm(features)[: features // 2]] = True
            layer = zuko.flows.GeneralCouplingTransform(features, mask=mask, hidden_features=hidden)
        else:
            order = torch.randperm(features)  # a buffer of the layer, so checkpoints keep it
            layer = zuko.flows.MaskedAutoregressiveTransform(
                features=features, order=order, hidden_features=hidden
            )
        with torch.no_grad():
            last = layer.hyper[-1]
            last.weight.mul_(options.init_identity_scale)
            last.bias.mul_(options.init_identity_scale)
        # Listed in zuko's scoring direction (g -> eps) as inverses, so that sampling runs each layer's own
        # `call_and_ladj` (one conditioner call; an inverse's would call it again for the log-det) and the
        # coupling samples as `y_b = x_b * s + m`. An IAF is thereby fast when sampling, slow when scoring.
        layers.append(layer.inv)
    # zuko applies transform[0] first when scoring g and transform[-1] first when sampling: the affine layer
    # acts right after the base noise, as in the paper.
    layers.append(ElementwiseAffine(base_loc, options.init_log_sigma))
    base = zuko.flows.UnconditionalDistribution(
        zuko.distributions.DiagNormal, torch.zeros(features), torch.ones(features), buffer=True
    )
    return zuko.flows.Flow(layers, base)


def standard_normal_log_prob(eps: Tensor) -> Tensor:
    """`log N(eps; 0, I)` summed over the last dim."""
    return -0.5 * eps.square().sum(-1) - 0.5 * eps.shape[-1] * math.log(2 * math.pi)


def wn_layers(net: nn.Module) -> list[tuple[str, _WeightNorm]]:
    return [(name, m) for name, m in net.named_modules() if isinstance(m, _WeightNorm)]


def _directions_only(layer: _WeightNorm, h: Tensor) -> Tensor:
    """`h` through the layer's unit directions, no scale and no bias: `[N, n_out, ...]`."""
    if isinstance(layer, WNConv2d):
        # channels-last (NHWC) activations: the K*B-row ReLU, pooling and convolutions after this one ran 1.2x
        # faster so (LeNet-5, K = 20, one CPU thread)
        return F.conv2d(channels_last(h), channels_last(layer.unit_directions()), padding=layer.padding)
    if isinstance(layer, WNLinear):
        return F.linear(h, layer.unit_directions())
    raise TypeError(f"no fast path for {type(layer).__name__}")


def scaled_logits(
    net: nn.Module, scales: dict[str, Tensor], x: Tensor, chunk_size: int | None = None
) -> Tensor:
    """Logits `[K, B, C]` of a weight-normalised `net` whose scales are `scales` `{"<layer>.g": [K, n_out]}`.

    V and biases are shared by all K samples, so each layer computes `x @ unit(V)^T` once per input and scales
    its outputs per sample; nothing before the first scaled layer (nor that layer's product) runs K times.
    Layers without sampled scales use the net's own `g`. Equals `functional_logits(net, scales, x)`.
    """
    if not isinstance(net, nn.Sequential):
        raise TypeError("the scaled fast path needs an nn.Sequential primary net")
    (k,) = {s.shape[0] for s in scales.values()} or {1}
    batch = x.shape[0]
    layers = list(net.named_children())
    unreachable = set(scales) - {f"{n}.g" for n, layer in layers if isinstance(layer, _WeightNorm)}
    if unreachable:  # a nested layer would silently run with its own g
        raise ValueError(
            f"scales {sorted(unreachable)} are not top-level weight-normalised layers of the net"
        )

    h = x
    start = len(layers)
    for i, (_, layer) in enumerate(layers):  # the shared part: runs once per input
        if isinstance(layer, _WeightNorm):
            h, start = _directions_only(layer, h), i
            break
        h = layer(h)

    def finish(first: Tensor, kk: slice) -> Tensor:
        n = kk.stop - kk.start
        out = first
        for i in range(start, len(layers)):
            name, layer = layers[i]
            if isinstance(layer, _WeightNorm):
                u = first if i == start else _directions_only(layer, out)
                u = u.unsqueeze(0) if i == start else u.view(n, batch, *u.shape[1:])
                extra = [1] * (u.dim() - 3)
                g = scales[f"{name}.g"][kk] if f"{name}.g" in scales else layer.g.expand(n, -1)
                out = (u * g.view(n, 1, -1, *extra) + layer.bias.view(1, 1, -1, *extra)).flatten(0, 1)
            else:
                out = layer(out)
        return out.view(n, batch, *out.shape[1:])

    if start == len(layers):  # nothing weight-normalised: one deterministic evaluation
        return h.unsqueeze(0).expand(k, *h.shape)
    step = chunk_size or k
    return torch.cat([finish(h, slice(i, min(i + step, k))) for i in range(0, k, step)])


class BayesianHypernetwork(Posterior):
    """A normalizing flow over the weight-norm scales of the primary net; see the module docstring."""

    kind = "bhn"
    Options = BHNOptions

    def __init__(self, net: nn.Module, options: BHNOptions | None = None) -> None:
        super().__init__(net)
        self.options = options or BHNOptions()
        self.layers = wn_layers(net)
        if not self.layers:
            raise ValueError("BHN needs a weight-normalised primary net (build it with weight_norm=True)")
        self.sizes = [layer.g.numel() for _, layer in self.layers]
        for _, layer in self.layers:
            layer.g.requires_grad_(False)  # replaced by flow samples; the flow's affine loc starts from it
        base_loc = torch.cat([layer.g.detach().flatten() for _, layer in self.layers])
        self.flow = build_flow(base_loc, self.options)

    @classmethod
    def build_net(cls, spec: NetSpec, info: DatasetInfo, options: Any) -> nn.Module:
        return build_net(
            spec.arch, info.input_shape, info.num_classes, info.mean, info.std,
            widths=spec.widths, weight_norm=True,
        )  # fmt: skip

    @property
    def features(self) -> int:
        return sum(self.sizes)

    def sample_with_log_prob(self, k: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """K flow samples `[K, D]` and their exact `log q` `[K]`; the base noise comes from `generator`."""
        loc = self.flow.transform.transforms[-1].loc
        eps = torch.randn((k, self.features), generator=generator, device=loc.device, dtype=loc.dtype)
        g, ladj = self.flow.transform().inv.call_and_ladj(eps)
        return g, standard_normal_log_prob(eps) - ladj

    def log_prob(self, g: Tensor) -> Tensor:
        """Exact `log q(g)` `[K]` of given scales `[K, D]` (change of variables in the scoring direction)."""
        return self.flow().log_prob(g)

    def prior_log_prob(self, g: Tensor) -> Tensor:
        lam = self.options.prior_precision
        return -0.5 * lam * g.square().sum(-1) + 0.5 * g.shape[-1] * math.log(lam / (2 * math.pi))

    def split(self, g: Tensor) -> dict[str, Tensor]:
        """`[K, D]` -> `{"<layer>.g": [K, n_out]}`."""
        parts = g.split(self.sizes, dim=-1)
        return {f"{name}.g": part for (name, _), part in zip(self.layers, parts, strict=True)}

    def join(self, params: dict[str, Tensor]) -> Tensor:
        return torch.cat([params[f"{name}.g"] for name, _ in self.layers], dim=-1)

    def sample_params(self, k: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        return self.split(self.sample_with_log_prob(k, generator)[0])

    def kl(self, params: dict[str, Tensor] | None = None) -> Tensor:
        """Monte Carlo `mean_k log q(g_k) - log p(g_k)` over `params` (or 8 fresh samples)."""
        if params is None:
            g, log_q = self.sample_with_log_prob(8)
        else:
            g = self.join(params)
            log_q = self.log_prob(g)
        return (log_q - self.prior_log_prob(g)).mean()

    def _evaluate(self, g: Tensor, x: Tensor) -> Tensor:
        if (
            g.shape[0] == 1
        ):  # training's usual case: the plain net with its bias fused into conv/matmul is faster
            return functional_logits(self.net, self.split(g), x)
        return scaled_logits(self.net, self.split(g), x, self.options.chunk_size)

    def logits(self, x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        return self._evaluate(self.sample_with_log_prob(k, generator)[0], x)

    def elbo_terms(
        self, x: Tensor, k: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        g, log_q = self.sample_with_log_prob(k, generator)
        kl = (log_q - self.prior_log_prob(g)).mean()
        return self._evaluate(g, x), kl
