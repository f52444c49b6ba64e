"founddiff.metrics: parity with scikit-image, batches against a loop, closed forms, errors (fast)."
import math
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity, mean_squared_error
from founddiff.core import hu_to_unit, get_window
from founddiff.metrics import psnr, ssim, rmse, ssim_map

SK = dict(data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def _pair(shape, seed=0, noise=150.0):
    rng = np.random.default_rng(seed)
    y = rng.uniform(-1200, 2300, shape)                      # reaches past both ends of [-1000, 2000]: the clip matters
    return y + rng.normal(0, noise, shape), y


@pytest.mark.parametrize('shape', [(11, 11), (16, 16), (23, 40), (64, 37)])
@pytest.mark.parametrize('window', [None, 'abdomen', 'lung', (500, 50)])
def test_parity_with_skimage(shape, window):
    x, y = _pair(shape, seed=shape[0] * shape[1])
    w = get_window('full' if window is None else window)
    a, b = w(x), w(y)
    assert math.isclose(psnr(x, y, window=window), peak_signal_noise_ratio(b, a, data_range=1.0), rel_tol=0, abs_tol=1e-9)
    assert math.isclose(rmse(x, y, window=window), math.sqrt(mean_squared_error(b, a)), abs_tol=1e-12)
    assert math.isclose(rmse(x, y, window=window, hu=True), w.width * math.sqrt(mean_squared_error(b, a)), rel_tol=1e-12)
    assert math.isclose(ssim(x, y, window=window), structural_similarity(b, a, **SK), abs_tol=1e-10)
    # torch in, float32 in, mixed: the same numbers (float32 only to its precision)
    assert math.isclose(ssim(torch.from_numpy(x), y, window=window), structural_similarity(b, a, **SK), abs_tol=1e-10)
    assert math.isclose(ssim(x.astype(np.float32), y.astype(np.float32), window=window),
                        structural_similarity(w(y.astype(np.float32)).astype(np.float64), w(x.astype(np.float32)).astype(np.float64), **SK), abs_tol=1e-6)


def test_default_is_hu_to_unit():
    x, y = _pair((20, 20))
    a, b = hu_to_unit(x), hu_to_unit(y)
    assert math.isclose(psnr(x, y), 10 * math.log10(1 / np.mean((a - b) ** 2)), rel_tol=1e-12)
    assert psnr(x, y, window='full') == psnr(x, y)


def test_reflect_border_map_against_scipy():
    "border='reflect' pads like torch/kornia 'reflect' (scipy's 'mirror'); its map is full size."
    x, y = _pair((18, 25), seed=3)
    a, b = hu_to_unit(x), hu_to_unit(y)
    f = lambda t: gaussian_filter(t, 1.5, truncate=3.5, mode='mirror')
    mx, my = f(a), f(b)
    vx, vy, cxy = f(a * a) - mx ** 2, f(b * b) - my ** 2, f(a * b) - mx * my
    ref = (2 * mx * my + 1e-4) * (2 * cxy + 9e-4) / ((mx ** 2 + my ** 2 + 1e-4) * (vx + vy + 9e-4))
    m = ssim_map(x, y, border='reflect')[0].numpy()
    np.testing.assert_allclose(m, ref, atol=1e-10)
    assert math.isclose(ssim(x, y, border='reflect', clamp_map=True), np.clip(ref, 0, 1).mean(), abs_tol=1e-10)
    assert ssim_map(x, y).shape == (1, 8, 15)


def test_batch_vs_loop():
    x, y = _pair((3, 20, 17), seed=5)
    for f in (psnr, ssim, rmse):
        per = f(x, y, reduction='none')
        assert isinstance(per, np.ndarray) and per.shape == (3,)
        np.testing.assert_allclose(per, [f(x[k], y[k]) for k in range(3)], rtol=0, atol=1e-12)
        assert math.isclose(f(x, y), per.mean(), abs_tol=1e-12)
        t = f(torch.from_numpy(x), torch.from_numpy(y), reduction='none')
        assert isinstance(t, torch.Tensor) and t.shape == (3,)
    assert isinstance(ssim(x[0], y[0], reduction='none'), float)      # one image: one number


def test_closed_forms():
    flat = np.full((16, 16), -200.0)
    for e_hu in (1.0, 30.0, 600.0):
        assert math.isclose(psnr(flat + e_hu, flat), -20 * math.log10(e_hu / 3000), rel_tol=1e-9)
        assert math.isclose(rmse(flat - e_hu, flat, hu=True), e_hu, rel_tol=1e-9)
    x, y = _pair((30, 30), seed=7)
    assert ssim(y, y) == 1.0 and psnr(y, y) == math.inf and rmse(y, y) == 0.0
    assert math.isclose(ssim(x, y), ssim(y, x), abs_tol=1e-14)
    assert ssim(x, y, clamp_map=True) >= ssim(x, y)
    assert psnr(np.full((8, 8), 3000.0), np.full((8, 8), 2500.0)) == math.inf    # both clip to 2000 HU


def test_inputs_untouched():
    x, y = _pair((16, 16))
    x0, y0 = x.copy(), y.copy()
    tx = torch.from_numpy(x.copy())
    for f in (psnr, ssim, rmse): f(x, y, window='abdomen'); f(tx, y)
    np.testing.assert_array_equal(x, x0); np.testing.assert_array_equal(y, y0); assert torch.equal(tx, torch.from_numpy(x0))


@pytest.mark.parametrize('call, err, msg', [
    (lambda: psnr(np.zeros((8, 8)), np.zeros((8, 9))), ValueError, 'same shape'),
    (lambda: ssim(np.full((16, 16), np.nan), np.zeros((16, 16))), ValueError, 'x holds'),
    (lambda: rmse(np.zeros((8, 8)), np.full((8, 8), np.inf)), ValueError, 'y holds'),
    (lambda: psnr(np.zeros((0, 8)), np.zeros((0, 8))), ValueError, 'empty'),
    (lambda: psnr(np.zeros((8, 8), complex), np.zeros((8, 8))), TypeError, 'x must be real'),
    (lambda: psnr(np.zeros((8, 8)), torch.zeros(8, 8, dtype=torch.complex64)), TypeError, 'y must be real'),
    (lambda: ssim(np.zeros((16, 16)), np.zeros((16, 16)), window='liver'), ValueError, 'unknown window'),
    (lambda: ssim(np.zeros((8, 12)), np.zeros((8, 12))), ValueError, 'at least 11x11'),
    (lambda: psnr(np.zeros(8), np.zeros(8)), ValueError, '(H, W)'),
    (lambda: rmse(np.zeros((8, 8)), np.zeros((8, 8)), reduction='sum'), ValueError, 'reduction'),
    (lambda: ssim(np.zeros((16, 16)), np.zeros((16, 16)), border='zeros'), ValueError, 'border'),
    (lambda: psnr('a.dcm', np.zeros((8, 8))), TypeError, 'x must be'),
    (lambda: psnr(np.zeros((8, 8)), None), TypeError, 'y must be'),
])
def test_errors_name_the_argument(call, err, msg):
    with pytest.raises(err, match=None) as e: call()
    assert msg in str(e.value)


def test_ground_floor():
    "metrics sits on the ground floor: it imports only founddiff.core, numpy, torch, scipy (and the standard library)."
    import ast, sys
    from pathlib import Path
    tree = ast.parse((Path(__file__).parents[1] / 'founddiff' / 'metrics.py').read_text())
    mods = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom): mods.add(('.' * n.level) + (n.module or ''))
        elif isinstance(n, ast.Import): mods |= {a.name for a in n.names}
    roots = {m.split('.')[0] if not m.startswith('.') else m for m in mods}
    allowed = {'.core', 'founddiff.core', 'numpy', 'torch', 'scipy', '__future__'} | set(sys.stdlib_module_names)
    assert roots <= allowed, roots - allowed
