"""Procedural dSprites: the release's grid and ordering, geometry against closed forms, the
official-file reader."""

import math

import numpy as np
import pytest
import torch

import pyrovae
from pyrovae.data import DSprites, DSpritesNPZ
from pyrovae.data.dsprites import (
    FACTOR_SIZES,
    NUM_IMAGES,
    factor_values,
    factors_to_index,
    index_to_factors,
    render,
)

# The release's metadata: latents_sizes [1, 3, 6, 40, 32, 32] and latents_bases
# [737280, 245760, 40960, 1024, 32, 1] (colour first); image i has classes i // base % size.
RELEASE_SIZES = (1, 3, 6, 40, 32, 32)
RELEASE_BASES = (737280, 245760, 40960, 1024, 32, 1)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_index_order_and_values_follow_the_release():
    assert NUM_IMAGES == 737280 == math.prod(RELEASE_SIZES)
    idx = torch.tensor([0, 1, 31, 32, 1023, 1024, 40959, 40960, 245759, 245760, 737279, 500000])
    expected = torch.tensor([[int(i) // b % s for b, s in zip(RELEASE_BASES[1:],
                                                               RELEASE_SIZES[1:])] for i in idx])
    assert torch.equal(index_to_factors(idx), expected)
    assert torch.equal(factors_to_index(expected), idx)
    grid = torch.stack([torch.arange(40) % k for k in FACTOR_SIZES], 1)
    v = factor_values(grid).numpy()
    np.testing.assert_allclose(v[:6, 1], np.linspace(0.5, 1, 6))
    np.testing.assert_allclose(v[:, 2], np.linspace(0, 2 * np.pi, 40))
    np.testing.assert_allclose(v[:32, 3], np.linspace(0, 1, 32))
    assert set(v[:, 0]) == {1.0, 2.0, 3.0}


def test_square_and_ellipse_areas_and_positions_match_closed_forms():
    """Pixel centres inside the shape: the count differs from the area by at most the pixels
    the boundary crosses (perimeter + 4); the centroid sits at the position's pixel."""
    scales = torch.arange(6)
    f = torch.zeros(12, 5, dtype=torch.long)
    f[:6, 0], f[6:, 0] = 0, 1  # squares, ellipses
    f[:, 1] = torch.cat([scales, scales])
    f[:, 3], f[:, 4] = 5, 20
    x = render(f)[:, 0]  # (12, 64, 64)
    s = 12.0 * (0.5 + 0.1 * scales.double())  # pixels per unit of the sprite frame
    side = 1.6 * s
    area = torch.cat([side**2, math.pi * 1.0 * 0.5 * s**2])
    perim = torch.cat([4 * side, math.pi * (1.5 * s)])  # ellipse: <= pi (a + b)
    counts = x.sum((1, 2)).double()
    assert bool(((counts - area).abs() <= perim + 4).all()), (counts, area)
    cols = torch.arange(64).double() + 0.5
    cx = (x.sum(1).double() * cols).sum(1) / counts
    cy = (x.sum(2).double() * cols).sum(1) / counts
    margin, span = 15.5, 64 - 31.0
    torch.testing.assert_close(cx, torch.full((12,), margin + span * 5 / 31, dtype=torch.float64),
                               atol=0.51, rtol=0)
    torch.testing.assert_close(cy, torch.full((12,), margin + span * 20 / 31, dtype=torch.float64),
                               atol=0.51, rtol=0)


def test_rotation_by_a_half_turn_maps_an_ellipse_onto_itself_and_shapes_differ():
    f = torch.tensor([[1, 5, 0, 16, 16], [1, 5, 39, 16, 16], [1, 5, 10, 16, 16],
                      [0, 5, 0, 16, 16], [2, 5, 0, 16, 16]])
    x = render(f)
    assert torch.equal(x[0], x[1])  # orientation 0 and 2 pi (both on the release's grid)
    assert not torch.equal(x[0], x[2])
    assert len({x[i].numpy().tobytes() for i in (0, 3, 4)}) == 3


def test_subsets_are_deterministic_distinct_and_fit_the_frame():
    ds = DSprites()
    x1, f1 = ds.subset(300, seed=3)
    x2, f2 = ds.subset(300, seed=3)
    assert torch.equal(x1, x2) and torch.equal(f1, f2)
    assert len(set(factors_to_index(f1).tolist())) == 300
    assert set(torch.unique(x1).tolist()) <= {0.0, 1.0}
    assert bool((x1.sum((1, 2, 3)) > 0).all())
    edges = x1[..., 0, :].sum() + x1[..., -1, :].sum() + x1[..., :, 0].sum() + x1[..., :, -1].sum()
    assert edges == 0  # the largest sprite at any angle stays inside the frame
    g = torch.Generator().manual_seed(0)
    f = ds.sample_factors(2000, g)
    for k, size in enumerate(FACTOR_SIZES):
        assert int(f[:, k].min()) == 0 and int(f[:, k].max()) == size - 1


def test_bad_factors_and_indices_are_refused():
    with pytest.raises(ValueError, match="posY must be in"):
        render(torch.tensor([[0, 0, 0, 0, 32]]))
    with pytest.raises(ValueError, match=r"shape \(n, 5\)"):
        render(torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        render(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="index"):
        index_to_factors(torch.tensor([NUM_IMAGES]))


def test_loader_spec_gives_labelled_splits():
    s = pyrovae.data.load("dsprites:400", seed=1)
    assert (len(s.train), len(s.valid), len(s.test)) == (360, 20, 20)
    assert s.train.event_shape == (1, 64, 64)
    assert set(s.train.y.tolist()) <= {0, 1, 2}
    with pytest.raises(ValueError, match="dsprites"):
        pyrovae.data.load("dsprites:abc")


def test_official_layout_reader(tmp_path):
    """A sparse memory-mapped stand-in for the release: indexing by factors reads the row the
    release's order puts them at."""
    imgs = np.memmap(tmp_path / "imgs.u8", dtype=np.uint8, mode="w+",
                     shape=(NUM_IMAGES, 64, 64))
    classes = np.concatenate([np.zeros((NUM_IMAGES, 1), np.int64),
                              index_to_factors(torch.arange(NUM_IMAGES)).numpy()], axis=1)
    f = torch.tensor([[2, 3, 17, 9, 30], [0, 0, 0, 0, 1]])
    rows = factors_to_index(f).numpy()
    imgs[rows] = render(f)[:, 0].numpy().astype(np.uint8)
    ds = DSpritesNPZ.from_arrays(imgs, classes)
    assert torch.equal(ds.images(f), render(f))
    with pytest.raises(ValueError, match="order"):
        DSpritesNPZ.from_arrays(imgs, classes[::-1])
    with pytest.raises(ValueError, match="737280"):
        DSpritesNPZ.from_arrays(imgs[:10], classes[:10])
    np.savez(tmp_path / "wrong.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="lacks"):
        DSpritesNPZ(tmp_path / "wrong.npz")
