import numpy as np
import pytest

bm4d = pytest.importorskip("bm4d", reason="bm4d (non-commercial licence) is not installed")

from noise2average.bm4d_rician import (  # noqa: E402
    _MARGIN,
    _PERIOD,
    _bounding_box,
    _profile,
    _slab_margin,
    _slabs,
    _split_extraction,
    bm4d_rician,
)

N = 32
SIGMA = 10.0


@pytest.fixture(scope="module")
def phantom():
    """Rician 32^3 phantom: a bright ellipsoid (SNR 6..10) with a dark slab (SNR 0.5) in air."""
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(*[np.linspace(-1.0, 1.0, N)] * 3, indexing="ij")
    head = x**2 + y**2 + z**2 < 0.85**2
    truth = np.where(head, SIGMA * (8.0 + 2.0 * x), 0.0)
    dark = head & (y > 0.3)
    truth[dark] = 0.5 * SIGMA
    real = truth + SIGMA * rng.standard_normal(truth.shape)
    noisy = np.hypot(real, SIGMA * rng.standard_normal(truth.shape))
    core = head & (x**2 + y**2 + z**2 < 0.7**2)
    return {"truth": truth, "noisy": noisy, "dark": dark & core & (y > 0.45), "head": head, "y": y}


@pytest.fixture(scope="module")
def denoised(phantom):
    return bm4d_rician(phantom["noisy"], SIGMA, num_threads=1)


def _rmse(estimate, truth, where=None):
    error = (estimate - truth) if where is None else (estimate - truth)[where]
    return float(np.sqrt(np.mean(error**2)))


def test_reduces_rmse(phantom, denoised):
    assert denoised.dtype == np.float32 and denoised.shape == (N, N, N)
    assert _rmse(denoised, phantom["truth"]) < 0.4 * _rmse(phantom["noisy"], phantom["truth"])
    truth, head = phantom["truth"], phantom["head"]
    assert _rmse(denoised, truth, head) < 0.3 * _rmse(phantom["noisy"], truth, head)


def test_less_bias_in_dark_region_than_bm4d_on_magnitudes(phantom, denoised):
    dark = phantom["dark"]
    target = phantom["truth"][dark].mean()  # 0.5 sigma
    # Gaussian assumption: BM4D on the magnitudes converges to E{z} ~ 1.3 sigma.
    direct = bm4d.bm4d(phantom["noisy"], SIGMA)
    bias_vst = abs(denoised[dark].mean() - target)
    bias_direct = abs(direct[dark].mean() - target)
    assert bias_direct > 0.6 * SIGMA
    assert bias_vst < 0.25 * bias_direct
    assert bias_vst < 0.15 * SIGMA


def test_mask_pass_through(phantom, denoised):
    noisy = phantom["noisy"]
    mask = np.zeros(noisy.shape, dtype=bool)
    mask[4:14, 6:20, 8:18] = True
    out = bm4d_rician(noisy, SIGMA, mask=mask, num_threads=1)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[~mask], noisy[~mask].astype(np.float32))
    assert not np.allclose(out[mask], noisy[mask])
    # BM4D ran on the box plus margin only; inside, the result is close to the full run.
    assert _rmse(out, phantom["truth"], mask) < 0.4 * _rmse(noisy, phantom["truth"], mask)
    assert _rmse(out, denoised, mask) < 0.2 * SIGMA


def test_bounding_box_adds_margin_and_clips():
    mask = np.zeros((60, 40, 30), dtype=bool)
    mask[20:25, 1:3, 29] = True
    box = _bounding_box(mask, mask.shape)
    expected = (slice(20 - _MARGIN, 25 + _MARGIN), slice(0, 3 + _MARGIN), slice(29 - _MARGIN, 30))
    assert box == expected
    assert _bounding_box(None, mask.shape) == (slice(0, 60), slice(0, 40), slice(0, 30))
    tiny = np.zeros((6, 6, 6), dtype=bool)
    tiny[5, 5, 5] = True
    assert all(s.stop - s.start >= 5 for s in _bounding_box(tiny, tiny.shape))
    wide = np.zeros((30, 30, 30), dtype=bool)
    wide[0, 0, 0] = True
    expected = (slice(0, 20), slice(0, 20), slice(0, 13))
    assert _bounding_box(wide, wide.shape, (20, 20, 5)) == expected


def test_sigma_map_matches_scalar_sigma(phantom):
    noisy = phantom["noisy"]
    mask = np.zeros(noisy.shape, dtype=bool)
    mask[8:12, 8:12, 8:12] = True
    scalar = bm4d_rician(noisy, SIGMA, mask=mask, num_threads=1)
    mapped = bm4d_rician(noisy, np.full(noisy.shape, SIGMA), mask=mask, num_threads=1)
    np.testing.assert_allclose(mapped, scalar, rtol=1e-5, atol=1e-4)


def test_sigma_zero_is_identity(phantom):
    noisy = phantom["noisy"]
    out = bm4d_rician(noisy, 0.0)
    assert out.dtype == np.float32 and out is not noisy
    np.testing.assert_array_equal(out, noisy.astype(np.float32))


def test_errors():
    data = np.ones((8, 8, 8))
    with pytest.raises(ValueError, match="3D"):
        bm4d_rician(np.ones((8, 8)), 1.0)
    with pytest.raises(ValueError, match="3D"):
        bm4d_rician(np.ones((8, 8, 8, 2)), 1.0)
    with pytest.raises(ValueError, match="at least 5"):
        bm4d_rician(np.ones((8, 8, 4)), 1.0)
    bad = data.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="1 non-finite"):
        bm4d_rician(bad, 1.0)
    with pytest.raises(ValueError, match="sigma must be a finite float >= 0, got -1.0"):
        bm4d_rician(data, -1.0)
    with pytest.raises(ValueError, match="sigma must be a finite float >= 0, got nan"):
        bm4d_rician(data, np.nan)
    with pytest.raises(ValueError, match="sigma map shape"):
        bm4d_rician(data, np.ones((4, 4, 4)))
    with pytest.raises(ValueError, match="sigma map must be finite and > 0"):
        bm4d_rician(data, np.zeros((8, 8, 8)))
    with pytest.raises(ValueError, match="mask shape"):
        bm4d_rician(data, 1.0, mask=np.ones((4, 4, 4), dtype=bool))
    with pytest.raises(ValueError, match="mask is empty"):
        bm4d_rician(data, 1.0, mask=np.zeros((8, 8, 8), dtype=bool))
    with pytest.raises(ValueError, match="profile 'lc' is not implemented"):
        bm4d_rician(data, 1.0, profile="lc")
    with pytest.raises(ValueError, match="profile 'refilter' fails"):
        bm4d_rician(data, 1.0, profile="refilter")
    with pytest.raises(ValueError, match="profile must be one of .* got 'fast'"):
        bm4d_rician(data, 1.0, profile="fast")
    with pytest.raises(ValueError, match="profile '8x8' needs X and Y of at least 8"):
        bm4d_rician(np.ones((6, 9, 9)), 1.0, profile="8x8")
    with pytest.raises(ValueError, match="num_threads must be None or an integer >= 1, got 0"):
        bm4d_rician(data, 1.0, num_threads=0)


@pytest.mark.parametrize("shape, max_voxels, profile", [
    ((230, 281, 235), 6_000_000, "np"),   # the 0.7 mm brain box of benchmarks/bench_memory.py
    ((230, 281, 235), 15_000_000, "np"),
    ((230, 281, 235), 3_100_000, "np"),   # thin slabs: cores of 18
    ((40, 40, 200), 100_000, "np"),
    ((300, 40, 40), 200_000, "8x8"),      # 8x8 along axis 0: margin 36
])
def test_slabs_tile_the_longest_axis(shape, max_voxels, profile):
    axis, slabs = _slabs(shape, max_voxels, profile)
    assert axis == int(np.argmax(shape)) and len(slabs) > 1
    n, cross = shape[axis], int(np.prod(shape)) // shape[axis]
    margin = _slab_margin(profile, axis)
    assert margin == (36 if profile == "8x8" and axis < 2 else 18)
    cores = [(slab.start + core.start, slab.start + core.stop) for slab, core in slabs]
    # The cores tile the axis exactly, in order; all but the last have the same thickness.
    assert cores[0][0] == 0 and cores[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(cores, cores[1:]))
    thickness = {stop - start for start, stop in cores[:-1]}
    assert len(thickness) == 1 and cores[-1][1] - cores[-1][0] <= thickness.pop()
    for (slab, core), (start, stop) in zip(slabs, cores):
        assert start % _PERIOD == 0 and slab.start % _PERIOD == 0
        assert (slab.start, slab.stop) == (max(start - margin, 0), min(stop + margin, n))
        assert (slab.stop - slab.start) * cross <= max_voxels
    # As few slabs as fit: with one fewer, a core (a multiple of the period) would be too thick.
    assert _PERIOD * -(-n // ((len(slabs) - 1) * _PERIOD)) + 2 * margin > max_voxels // cross


def test_slabs_whole_box_when_small_enough():
    whole = (0, [(slice(0, 50), slice(0, 50))])
    assert _slabs((50, 60, 70), None, "np") == whole
    assert _slabs((50, 60, 70), 50 * 60 * 70, "np") == whole


def test_slabs_too_small_max_voxels():
    # A slab needs a core of 18 slices and two margins of 18: 54 slices of 50 x 70.
    assert _slabs((50, 60, 70), 54 * 50 * 60 + 1, "np")[0] == 2
    with pytest.raises(ValueError, match=r"max_voxels=161999 is too small for a box of shape "
                                         r"\(50, 60, 70\): a slab along axis 2 needs at least "
                                         r"162000 voxels \(54 slices of 3000\)"):
        _slabs((50, 60, 70), 54 * 50 * 60 - 1, "np")
    with pytest.raises(ValueError, match="is too small"):
        bm4d_rician(np.ones((8, 8, 100)), 1.0, max_voxels=1000)


@pytest.mark.parametrize("value", [0, -5, 2.5, True, "1e6"])
def test_bad_max_voxels_rejected(value):
    with pytest.raises(ValueError, match="max_voxels must be None or a positive integer"):
        bm4d_rician(np.ones((8, 8, 8)), 1.0, max_voxels=value)


def _elongated_phantom(shape):
    """Rician phantom, texture along axis 1 (sigma SIGMA): a Colin-free stand-in for a brain."""
    rng = np.random.default_rng(1)
    x, y, z = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in shape], indexing="ij")
    head = x**2 + y**2 + z**2 < 0.95**2
    truth = np.where(head, SIGMA * (6.0 + 2.0 * x + 2.0 * np.sin(9.0 * y) * (z > 0)), 0.0)
    noisy = np.hypot(truth + SIGMA * rng.standard_normal(shape), SIGMA * rng.standard_normal(shape))
    return truth, noisy


def test_slab_mode_equals_whole_box():
    # Two slabs along axis 1, whose reference grid has period 9 (the old period 6 would
    # start the second slab off the grid): cores [0, 54) and [54, 96).
    shape, max_voxels = (12, 96, 12), 90 * 12 * 12
    axis, slabs = _slabs(shape, max_voxels, "np")
    assert axis == 1 and [(s.start, s.stop) for s, _ in slabs] == [(0, 72), (36, 96)]
    truth, noisy = _elongated_phantom(shape)
    whole = bm4d_rician(noisy, SIGMA, num_threads=1, max_voxels=None)
    slabbed = bm4d_rician(noisy, SIGMA, num_threads=1, max_voxels=max_voxels)
    # Measured: bit for bit equal with one thread (a margin of 12 instead of 18 gave up to
    # 0.29 sigma within 20 voxels of the core boundary).
    assert np.abs(slabbed - whole).max() <= 1e-4 * SIGMA
    assert _rmse(slabbed, truth) < 0.5 * _rmse(noisy, truth)


def test_reference_grid_period():
    """A slab that starts off the period gets another block grid: different far from its edge."""
    _, noisy = _elongated_phantom((10, 54, 10))
    stage = bm4d.BM4DStages.HARD_THRESHOLDING

    def basic(volume, tau_scale=1.0):
        options = _profile("np", 1)
        options.tau_match *= tau_scale
        return bm4d.bm4d(volume, SIGMA, profile=options, stage_arg=stage)

    whole = basic(noisy)
    for offset, equal in ((_PERIOD, True), (6, False)):
        crop = np.ascontiguousarray(noisy[:, offset:])
        result = basic(crop, (np.ptp(noisy) / np.ptp(crop)) ** 2)
        far = np.abs(result[:, 18:] - whole[:, offset + 18:]).max()  # 18 from the crop's start
        assert (far <= 1e-4 * SIGMA) if equal else (far > 0.05 * SIGMA), (offset, far)


def test_split_extraction_only_where_it_pays_and_bm4d_survives_it():
    assert not _split_extraction((64, 64, 64))  # small: full extraction is cheap
    assert _split_extraction((230, 281, 235))
    # bm4d 4.2.5 aborts with split extraction at 16 or 17 slices along the third axis.
    assert not _split_extraction((600, 600, 16)) and not _split_extraction((600, 600, 17))
    assert _split_extraction((600, 600, 18))
    assert _profile("np", 1, (230, 281, 235)).split_block_extraction == (False, False, True)
    assert not any(_profile("np", 1, (600, 600, 17)).split_block_extraction)
