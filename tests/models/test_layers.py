"""FastDropout: the maths of dropout with a cheaper mask."""

from __future__ import annotations

import pytest
import torch

from covidcxr.models.layers import FastDropout


@pytest.mark.parametrize("p", [0.25, 0.5, 0.1])
@pytest.mark.parametrize("channels_last", [False, True])
def test_keeps_one_minus_p_and_rescales(p: float, channels_last: bool) -> None:
    torch.manual_seed(0)
    x = torch.rand(8, 5, 33, 47) + 0.5  # odd sizes; strictly positive so zeros mean dropped
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    layer = FastDropout(p).train()
    y = layer(x)
    assert y.shape == x.shape
    kept = y != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.01
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    # no structure in the mask: every channel and every row drops about p
    per_channel = kept.float().mean(dim=(0, 2, 3))
    assert torch.all((per_channel - (1 - p)).abs() < 0.03)


def test_eval_mode_is_identity_and_gradients_follow_the_mask() -> None:
    x = torch.randn(4, 3, 10, 10, requires_grad=True)
    layer = FastDropout(0.25)
    assert layer.eval()(x) is x
    torch.manual_seed(1)
    y = layer.train()(x)
    y.sum().backward()
    expected = (y != 0).float() / 0.75
    torch.testing.assert_close(x.grad, expected)


def test_seeded_like_torch() -> None:
    x = torch.ones(2, 3, 16, 16)
    layer = FastDropout(0.5).train()
    torch.manual_seed(7)
    first = layer(x)
    torch.manual_seed(7)
    assert torch.equal(layer(x), first)
    assert not torch.equal(layer(x), first)


def test_rejects_a_bad_probability() -> None:
    with pytest.raises(ValueError, match=r"got 1\.0"):
        FastDropout(1.0)
