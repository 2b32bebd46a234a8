"""`--device`: one resolver, so `robusthyper attack`, `sweep`, `train` and `gate` accept the same names."""

from __future__ import annotations

import pytest
import torch

from robusthyper.cli import common
from robusthyper.device import resolve_device
from robusthyper.errors import UserError


def _one_line(err: pytest.ExceptionInfo[UserError]) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def one_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.mark.parametrize("bad", ["gpu", "CPU", "cuda:", "cuda:x", "cuda:-1", "cuda 0", ""])
def test_a_bad_name_is_one_line_naming_it_and_the_fix(bad: str) -> None:
    with pytest.raises(UserError) as err:
        resolve_device(bad)
    message = _one_line(err)
    assert f"'{bad}'" in message and "cpu, cuda, cuda:N, auto" in message


def test_auto_is_the_cpu_without_cuda(no_cuda: None) -> None:
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"


def test_auto_here() -> None:
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_cuda_says_how_to_fix_it(no_cuda: None, name: str) -> None:
    with pytest.raises(UserError) as err:
        resolve_device(name)
    message = _one_line(err)
    assert f"--device {name} but no CUDA device" in message and "--device cpu or auto" in message


def test_cuda_index_must_exist(one_gpu: None) -> None:
    assert resolve_device("cuda") == "cuda"
    assert resolve_device("cuda:0") == "cuda:0"
    assert resolve_device("auto") == "cuda"
    with pytest.raises(UserError) as err:
        resolve_device("cuda:1")
    assert "--device cuda:1" in _one_line(err) and "cuda:0 to cuda:0" in str(err.value)


def test_the_cli_accepts_what_the_library_accepts(one_gpu: None) -> None:
    """They once disagreed: the sweep accepted cuda:N, the CLI refused it."""
    assert common.resolve_device("cuda:0") == "cuda:0"
    for name in ("cuda:1", "tpu"):
        with pytest.raises(UserError):
            common.resolve_device(name)
