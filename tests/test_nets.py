"""Primary nets: shapes, standardisation inside the model, weight normalisation, the evaluation path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robusthyper.data import dataset_info
from robusthyper.nets import WNConv2d, WNLinear, build_net, functional_logits, is_stochastic


@pytest.mark.parametrize("arch", ["mlp", "lenet5"])
@pytest.mark.parametrize("weight_norm", [False, True])
def test_mnist_nets_output_logits(arch: str, weight_norm: bool) -> None:
    info = dataset_info("mnist5k")
    net = build_net(arch, info.input_shape, info.num_classes, info.mean, info.std, weight_norm=weight_norm)
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


def test_cifar_cnn_output_logits() -> None:
    info = dataset_info("cifar5")
    net = build_net("cifar-cnn", info.input_shape, info.num_classes, info.mean, info.std, dropout=0.5)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 5)
    assert is_stochastic(net)


def test_lenet5_has_the_papers_sizes() -> None:
    info = dataset_info("mnist5k")
    net = build_net("lenet5", info.input_shape, 10, info.mean, info.std)
    shapes = [tuple(p.shape) for n, p in net.named_parameters() if n.endswith("weight")]
    assert shapes == [(20, 1, 5, 5), (50, 20, 5, 5), (500, 800), (10, 500)]


def test_standardisation_is_inside_the_model() -> None:
    info = dataset_info("mnist5k")
    net = build_net("mlp", info.input_shape, 10, info.mean, info.std, widths=[4])
    x = torch.rand(2, 1, 28, 28)
    expected = (x - info.mean[0]) / info.std[0]
    torch.testing.assert_close(net[0](x), expected)


def test_weight_norm_layers_compute_g_times_unit_direction() -> None:
    torch.manual_seed(0)
    lin = WNLinear(6, 4)
    with torch.no_grad():
        lin.g.copy_(torch.tensor([0.5, -1.0, 2.0, 3.0]))
    x = torch.randn(5, 6)
    w = lin.g[:, None] * lin.v / lin.v.norm(dim=1, keepdim=True)
    torch.testing.assert_close(lin(x), x @ w.T + lin.bias)
    conv = WNConv2d(2, 3, 3, padding=1)
    xc = torch.randn(1, 2, 5, 5)
    wc = conv.g.view(-1, 1, 1, 1) * conv.v / conv.v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(conv(xc), F.conv2d(xc, wc, conv.bias, padding=1))


def test_weight_norm_init_matches_the_plain_layer_init() -> None:
    """g starts at ||v||, so a weight-normalised net starts as the plain net with the same seed would."""
    torch.manual_seed(3)
    plain = torch.nn.Linear(7, 5)
    torch.manual_seed(3)
    wn = WNLinear(7, 5)
    torch.testing.assert_close(wn.weight(), plain.weight)


def test_functional_logits_substitutes_sampled_parameters() -> None:
    info = dataset_info("mnist5k")
    net = build_net("mlp", info.input_shape, 10, info.mean, info.std, widths=[8])
    x = torch.rand(4, 1, 28, 28)
    zero_bias = {"4.bias": torch.stack([torch.zeros(10), torch.full((10,), 3.0)])}
    out = functional_logits(net, zero_bias, x)
    assert out.shape == (2, 4, 10)
    torch.testing.assert_close(out[1] - out[0], torch.full((4, 10), 3.0))


def test_functional_logits_rejects_inconsistent_sample_counts() -> None:
    info = dataset_info("mnist5k")
    net = build_net("mlp", info.input_shape, 10, info.mean, info.std, widths=[8])
    params = {"4.bias": torch.zeros(2, 10), "2.bias": torch.zeros(3, 8)}
    with pytest.raises(ValueError, match="disagree on K"):
        functional_logits(net, params, torch.rand(1, 1, 28, 28))
    with pytest.raises(ValueError, match="k=4"):
        functional_logits(net, {"4.bias": torch.zeros(2, 10)}, torch.rand(1, 1, 28, 28), k=4)


@pytest.mark.parametrize("arch", ["mlp", "lenet5", "cifar-cnn"])
@pytest.mark.parametrize("first_shared", [False, True], ids=["all-sampled", "first-layer-shared"])
def test_grouped_path_equals_vmap_in_values_and_gradients(arch: str, first_shared: bool) -> None:
    """K weight samples as channel groups and batched matrix products (`_grouped_logits`) give vmap's logits
    and the same gradients for the inputs and the sampled parameters, chunked or not."""
    shape = (3, 32, 32) if arch == "cifar-cnn" else (1, 28, 28)
    torch.manual_seed(0)
    net = build_net(arch, shape, 10, [0.5] * shape[0], [0.25] * shape[0], widths=[32]).double()
    k, gen = 3, torch.Generator().manual_seed(1)
    names = [n for n, _ in net.named_parameters()]
    sampled = names[2:] if first_shared else names  # bbb samples all; shared first layer: a shared input
    params = {n: (p.detach().expand(k, *p.shape) + 0.1 * torch.randn(k, *p.shape, generator=gen, dtype=p.dtype))
              .requires_grad_(True) for n, p in net.named_parameters() if n in sampled}  # fmt: skip
    x = torch.rand(4, *shape, generator=gen, dtype=torch.float64, requires_grad=True)
    outs = {
        "vmap": functional_logits(net, params, x, grouped=False),
        "grouped": functional_logits(net, params, x),
        "chunked": functional_logits(net, params, x, chunk_size=2),
    }
    assert outs["vmap"].shape == (k, 4, 10) and outs["vmap"].std(0).max() > 1e-3  # the samples differ
    inputs = [x, *params.values()]
    reference = torch.autograd.grad(outs["vmap"].square().sum(), inputs, retain_graph=True)
    for name in ("grouped", "chunked"):
        torch.testing.assert_close(outs[name], outs["vmap"], rtol=1e-10, atol=1e-10)
        grads = torch.autograd.grad(outs[name].square().sum(), inputs, retain_graph=True)
        for got, want in zip(grads, reference, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_grouped_path_leaves_what_it_cannot_run_to_vmap() -> None:
    from robusthyper.nets import _grouped_path_applies

    plain = build_net("lenet5", (1, 28, 28), 10, [0.5], [0.25])
    assert _grouped_path_applies(plain[1:], {"1.weight": torch.zeros(2, 20, 1, 5, 5)})
    wn = build_net("lenet5", (1, 28, 28), 10, [0.5], [0.25], weight_norm=True)
    assert not _grouped_path_applies(wn[1:], {"1.g": torch.zeros(2, 20)})  # weight-normalised layers
    mcd = build_net("lenet5", (1, 28, 28), 10, [0.5], [0.25], dropout=0.5)
    assert not _grouped_path_applies(mcd[1:], {"1.weight": torch.zeros(2, 20, 1, 5, 5)})  # dropout
    assert not _grouped_path_applies(
        plain[1:], {"0.mean": torch.zeros(2, 1, 1, 1)}
    )  # not a conv/linear param
