import pytest
import torch

from pyrovae import nn as nets


def test_mlp_keeps_leading_dims_and_matches_per_slice():
    torch.manual_seed(0)
    net = nets.MLP((1, 4, 4), (2, 3), hidden=(8, 8))
    x = torch.randn(3, 5, 1, 4, 4)  # (particles, batch, *event)
    out = net(x)
    assert out.shape == (3, 5, 2, 3)
    for p in range(3):  # folding leading dims must not mix data points
        torch.testing.assert_close(out[p], net(x[p]))


@pytest.mark.parametrize("side", [8, 28, 64])
def test_conv_encoder_decoder_round_shapes_and_slices(side):
    torch.manual_seed(0)
    enc = nets.ConvEncoder((1, side, side), 6)
    dec = nets.ConvDecoder(3, (2, side, side))
    x = torch.randn(2, 4, 1, side, side)
    h = enc(x)
    assert h.shape == (2, 4, 6)
    torch.testing.assert_close(h[1], enc(x[1]))
    y = dec(torch.randn(2, 4, 3))
    assert y.shape == (2, 4, 2, side, side)


def test_conv_rejects_sides_it_cannot_halve():
    with pytest.raises(ValueError, match="not divisible by 2"):
        nets.ConvEncoder((1, 30, 30), 4, channels=(8, 8))
    with pytest.raises(ValueError, match="square image"):
        nets.ConvDecoder(4, (1, 28, 32))


def test_normal_head_scale_is_softplus_plus_floor():
    h = torch.tensor([[0.5, -100.0, 0.0, 3.0]])
    loc, scale = nets.NormalHead(1e-3)(h)
    torch.testing.assert_close(loc, torch.tensor([[0.5, -100.0]]))
    expected = torch.log1p(torch.exp(torch.tensor([[0.0, 3.0]]))) + 1e-3
    torch.testing.assert_close(scale, expected)


def test_builders_by_name_and_bad_names():
    enc = nets.encoder("mlp", (1, 8, 8), 10, hidden=(16,))
    dec = nets.decoder("mlp", 5, (1, 8, 8), hidden=(16, 32))
    assert enc(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    # the decoder mirrors the hidden widths
    assert [m.out_features for m in dec.net if isinstance(m, torch.nn.Linear)] == [32, 16, 64]
    with pytest.raises(ValueError, match="network: expected one of"):
        nets.encoder("transformer", (4,), 2)
    with pytest.raises(ValueError, match="activation: expected one of"):
        nets.MLP(4, 2, activation_name="relu6")
