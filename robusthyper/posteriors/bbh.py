"""`bbh`: Bayes by Hypernet (Pawlowski, Brock, Lee, Rajchl, Glocker 2017; arXiv 1711.01297).

An implicit posterior: generator MLPs map low-dimensional noise to the primary net's parameters, and q has no
density, so KL(q || p) is estimated from samples with the 1-nearest-neighbour estimator
(`robusthyper.estimators.knn_kl`, METHODS.md §2) between n generated and m prior samples; prior N(0, s^2).

Generators: one MLP per generated tensor, `z [noise_dim] -> hidden_features (LeakyReLU 0.1) -> numel`, whose
last bias starts at the primary net's own initial values (so training starts from a standard init) and whose
last weight starts at `init_spread` times a standard init times the tensor's RMS (so samples start close
together, relative to each tensor's scale, but not equal).
`shared_noise = true` (default) feeds one z to every generator, so the layers' weights are correlated;
`false` draws independent noise per generator.

Targets:
- `target = "weights"`: every weight and bias of a plain primary net (the paper's final version).
  Size on LeNet-5 with the defaults (noise 8, hidden [16, 32]): the last layers hold 32 x 431,080 weights plus
  431,080 biases, about 14.2 M generator parameters in all (fc1's generator alone 12.8 M); widths are
  configurable because the paper's (64, 256, 512) would put 205 M parameters in fc1's generator.
  Measured on mnist5k (LeNet-5, 12 epochs): the full ELBO over-regularises here (~94% test accuracy: the kNN
  estimate in d = 431 k pushes hard towards the prior); a tempered kl_weight 0.1 gives ~97%.
- `target = "scales"`: only the weight-norm scales g of a weight-normalised net (what the paper's first
  version generated, with a discriminator instead of the kNN KL); directions and biases are point estimates,
  evaluated by BHN's shared-V fast path. LeNet-5: D = 580 and about 22 k generator parameters with the
  defaults. `defenses/bbh.toml` uses this mode (~98% on mnist5k with the full ELBO).

Samples: `sample_params(k)` gives `{name: [K, *shape]}` keyed like the net's parameters. `elbo_terms(x, k)`
generates `max(k, kl_samples)` samples, evaluates the first k, and estimates the KL from all of them against
`prior_samples` fresh prior draws (both from the same generator).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from robusthyper.data import DatasetInfo
from robusthyper.estimators import knn_kl
from robusthyper.nets import NetSpec, build_net, functional_logits
from robusthyper.posteriors.base import Posterior
from robusthyper.posteriors.bhn import scaled_logits, wn_layers
from robusthyper.settings import StrictModel


class BbHOptions(StrictModel):
    target: Literal["weights", "scales"] = "weights"
    """Generate every weight and bias, or only the weight-norm scales (directions and biases then point estimates)."""
    noise_dim: int = Field(8, gt=0)
    """Dimension of the noise z fed to the generators (the paper: 1, 8 or 64)."""
    hidden_features: list[Annotated[int, Field(gt=0)]] = [16, 32]
    """Hidden widths of each generator (LeakyReLU 0.1); the paper's (64, 256, 512) is far too big for 2 cores."""
    shared_noise: bool = True
    """One z shared by all generators (correlated layers, default) or independent noise per generator."""
    kl_samples: int = Field(5, ge=2)
    """n: generated samples per KL estimate (at least the training samples per step)."""
    prior_samples: int = Field(5, ge=1)
    """m: fresh prior samples per KL estimate."""
    prior_sigma: float = Field(1.0, gt=0)
    """Standard deviation of the N(0, s^2) prior on every generated parameter."""
    init_spread: float = Field(0.1, gt=0)
    """Factor (times each tensor's RMS) on the generators' last weight at init: samples start close together
    (not equal: the kNN estimator's repulsion diverges at zero distance)."""
    chunk_size: int = Field(8, gt=0)
    """Posterior samples evaluated together (bounds memory)."""


class Generator(nn.Module):
    """`z [K, noise_dim] -> [K, *shape]`: an MLP whose output starts at `init` plus small noise-driven spread."""

    def __init__(self, init: Tensor, noise_dim: int, hidden: list[int], spread: float) -> None:
        super().__init__()
        self.shape = tuple(init.shape)
        layers: list[nn.Module] = []
        n_in = noise_dim
        for width in hidden:
            layers += [nn.Linear(n_in, width), nn.LeakyReLU(0.1)]
            n_in = width
        last = nn.Linear(n_in, init.numel())
        with torch.no_grad():
            # spread relative to the tensor's own scale: fc1's init weights are 5x smaller than conv1's
            last.weight.mul_(spread * init.detach().square().mean().sqrt().clamp_min(1e-3))
            last.bias.copy_(init.detach().flatten())
        self.mlp = nn.Sequential(*layers, last)

    def forward(self, z: Tensor) -> Tensor:
        return self.mlp(z).view(z.shape[0], *self.shape)


def _key(name: str) -> str:
    return name.replace(".", "__")  # ModuleDict keys may not contain dots


class BayesByHypernet(Posterior):
    """Implicit posterior from generator MLPs with a kNN KL estimate; see the module docstring."""

    kind = "bbh"
    Options = BbHOptions

    def __init__(self, net: nn.Module, options: BbHOptions | None = None) -> None:
        super().__init__(net)
        self.options = o = options or BbHOptions()
        if o.target == "scales":
            layers = wn_layers(net)
            if not layers:
                raise ValueError("bbh with target = 'scales' needs a weight-normalised primary net")
            targets = [(f"{name}.g", layer.g) for name, layer in layers]
        else:
            targets = list(net.named_parameters())
        self.names = [name for name, _ in targets]
        for _, p in targets:
            p.requires_grad_(False)  # replaced by generated samples; the generators start from their values
        self.generators = nn.ModuleDict(
            {_key(n): Generator(p, o.noise_dim, o.hidden_features, o.init_spread) for n, p in targets}
        )

    @classmethod
    def build_net(cls, spec: NetSpec, info: DatasetInfo, options: Any) -> nn.Module:
        return build_net(
            spec.arch, info.input_shape, info.num_classes, info.mean, info.std,
            widths=spec.widths, weight_norm=options.target == "scales",
        )  # fmt: skip

    def _noise(self, k: int, generator: torch.Generator | None) -> list[Tensor]:
        o = self.options
        count = 1 if o.shared_noise else len(self.names)
        z = torch.randn((count, k, o.noise_dim), generator=generator, device=self.device)
        return [z[0]] * len(self.names) if o.shared_noise else list(z)

    def sample_params(self, k: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        zs = self._noise(k, generator)
        return {n: self.generators[_key(n)](z) for n, z in zip(self.names, zs, strict=True)}

    def kl(self, params: dict[str, Tensor] | None = None, generator: torch.Generator | None = None) -> Tensor:
        """kNN estimate of KL(q || N(0, s^2)) from `params` (`[n, ...]` each, n >= 2) or `kl_samples` fresh ones."""
        if params is None:
            params = self.sample_params(self.options.kl_samples, generator)
        flat = torch.cat([params[n].flatten(1) for n in self.names], dim=1)
        prior = self.options.prior_sigma * torch.randn(
            (self.options.prior_samples, flat.shape[1]),
            generator=generator,
            device=flat.device,
            dtype=flat.dtype,
        )
        return knn_kl(flat, prior)

    def _logits(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        if self.options.target == "scales":
            return scaled_logits(self.net, params, x, self.options.chunk_size)
        return functional_logits(self.net, params, x, chunk_size=self.options.chunk_size)

    def logits(self, x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        return self._logits(self.sample_params(k, generator), x)

    def elbo_terms(
        self, x: Tensor, k: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        params = self.sample_params(max(k, self.options.kl_samples), generator)
        logits = self._logits({n: p[:k] for n, p in params.items()}, x)
        return logits, self.kl(params, generator)

    @property
    def chunk_samples(self) -> bool:
        """Generated whole weight sets (target = "weights") are costly to draw, like bbb's: split K, not the batch."""
        return self.options.target == "weights"

    def generator_parameters(self) -> int:
        return sum(p.numel() for p in self.generators.parameters())
