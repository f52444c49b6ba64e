"Physics checks that do not fit the notebook: type/dtype matrix, inputs untouched, backends, gradients, bad input."
import math, subprocess, sys
import numpy as np
import pytest
import torch
from founddiff.phantoms import phantom, rasterize, Ellipse, REGIONS
from founddiff.physics import (simulate_low_dose, simulate_pair, simulate_doses, fan_project, fan_fbp, FanBeamGeometry,
                               hu_to_mu, mu_to_hu, poisson_icdf, transmission_noise, DOSES, SEEN_DOSES, UNSEEN_DOSES, MU_WATER,
                               DoseSimulator, insert_noise, inserted_variance, fan_project_grid, fan_backproject_grid, fan_filter, MODES)

PH = phantom('abdomen', 32, 0)


def test_dose_sets():
    assert DOSES == (1/2, 1/3, 1/4, 1/5, 1/6, 1/8, 1/10, 1/20)
    assert SEEN_DOSES == (1/2, 1/4, 1/6, 1/10) and UNSEEN_DOSES == (1/3, 1/5, 1/8, 1/20)


def test_import_does_no_work():
    "Importing the physics module must not touch CUDA or build matrices."
    code = ("import torch, founddiff.physics as p; assert not torch.cuda.is_initialized(); "
            "assert p._MATRICES == {} and len(p._FAST) == 0; print('ok')")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and 'ok' in r.stdout, r.stderr


@pytest.mark.parametrize('dtype,out', [(np.float32, np.float32), (np.float64, np.float64), (np.int16, np.float32), (np.int32, np.float32)])
def test_numpy_in_numpy_out(dtype, out):
    x = PH.astype(dtype)
    y = simulate_low_dose(x, 0.25, generator=0)
    assert isinstance(y, np.ndarray) and y.dtype == out and y.shape == x.shape


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int16])
def test_torch_in_torch_out(dtype):
    x = torch.tensor(PH).to(dtype)
    y = simulate_low_dose(x, 0.25, generator=0)
    assert isinstance(y, torch.Tensor) and y.device == x.device and y.shape == x.shape
    assert y.dtype == (dtype if dtype.is_floating_point else torch.float32)


def test_inputs_not_modified():
    a = PH.copy(); t = torch.tensor(PH); t0 = t.clone()
    simulate_pair(a, 0.1, generator=1); simulate_doses(t, DOSES, generator=1)
    np.testing.assert_array_equal(a, PH); assert torch.equal(t, t0)


def test_batch_equals_items():
    "A batch with per-item generators equals the items simulated alone (noise does not depend on the batch)."
    x = np.stack([phantom(r, 32, 3) for r in REGIONS])
    low, ref = simulate_doses(x, (0.5, 0.05), generator=[7, 8, 9])
    for b in range(3):
        lo, re = simulate_doses(x[b], (0.5, 0.05), generator=[7, 8, 9][b])
        np.testing.assert_allclose(low[:, b], lo, atol=0.05); np.testing.assert_allclose(ref[b], re, atol=0.05)


def test_backends_agree_and_seed_is_backend_independent():
    x = np.stack([phantom('chest', 24, s) for s in range(3)])
    a = simulate_low_dose(x, 0.1, generator=[1, 2, 3], backend='grid')
    b = simulate_low_dose(x, 0.1, generator=[1, 2, 3], backend='matrix')
    assert np.abs(a - b).mean() < 0.05   # HU; the same noise through either projector


def test_dose_per_item_and_doses_broadcast():
    x = np.stack([PH, PH])
    lo = simulate_low_dose(x, [1.0, 0.05], generator=0)
    _, ref = simulate_pair(PH, 1.0, generator=0)
    body = ref > -500
    assert (lo[1] - ref)[body].std() > 2.5 * (lo[0] - ref)[body].std()
    lo2 = simulate_low_dose(x, np.float64(0.5), generator=0); assert lo2.shape == x.shape
    lo3 = simulate_low_dose(x, torch.tensor(0.5), generator=0); assert lo3.shape == x.shape


def test_reference_full_is_noisy_and_independent():
    lo, ref_full = simulate_pair(PH, 0.5, generator=2, reference='full')
    _, ref = simulate_pair(PH, 0.5, generator=2)
    body = ref > -500
    d_full, d_low = (ref_full - ref)[body], (lo - ref)[body]
    assert 0 < d_full.std() < d_low.std()                                    # full dose: less noise than half dose
    assert abs(np.corrcoef(d_full, d_low)[0, 1]) < 0.3                        # and independent of it


def test_generator_on_other_device_and_global_rng():
    torch.manual_seed(3); a = simulate_low_dose(PH, 0.2)
    torch.manual_seed(3); b = simulate_low_dose(PH, 0.2)
    np.testing.assert_array_equal(a, b)                                       # None: torch's global generator
    g = torch.Generator().manual_seed(4)
    c = simulate_low_dose(torch.tensor(PH), 0.2, generator=g)
    d = simulate_low_dose(torch.tensor(PH), 0.2, generator=4)
    assert torch.equal(c, d)


@pytest.mark.parametrize('backend', ['grid', 'matrix', 'fast'])
def test_fbp_gradcheck(backend):
    g = FanBeamGeometry(n_views=10, n_det=12, fan_angle=1.2)
    s = torch.rand(1, 10, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q: fan_fbp(q, g, (6, 6), 10., backend=backend), (s,))


def test_projector_linear_and_adjointish():
    "Projection is linear; FBP(project(x)) of a smooth blob returns the blob."
    N = 48; g = FanBeamGeometry.for_image((N, N))
    a, b = (torch.tensor(hu_to_mu(phantom(r, N, 0))) for r in ('head', 'chest'))
    test = fan_project(2 * a + 3 * b, g) - (2 * fan_project(a, g) + 3 * fan_project(b, g))
    assert test.abs().max() < 1e-4
    blob = torch.tensor(rasterize([Ellipse(0, 0, 0.5, 0.4, 10, MU_WATER, 'w')], N, 8, background=0.))
    rec = fan_fbp(fan_project(blob, g), g, (N, N), filter='ramp')
    inner = torch.tensor(rasterize([Ellipse(0, 0, 0.4, 0.3, 10, 1., 'w')], N, 1, background=0.)) > 0
    assert abs(mu_to_hu(rec[inner]).mean()) < 3


def test_poisson_icdf_vs_torch_poisson():
    lam = torch.full((200_000,), 12.5, dtype=torch.float64)
    k1 = poisson_icdf(lam, torch.rand_like(lam, dtype=torch.float64))
    k2 = torch.poisson(lam)
    for m in (lambda k: k.mean(), lambda k: k.var(), lambda k: ((k - 12.5)**3).mean()):
        assert abs(m(k1) - m(k2)) < 0.05 * abs(m(k2)) + 0.1


def test_transmission_noise_floor_and_unbiased_log():
    p = torch.full((100_000,), 12.0, dtype=torch.float64)                     # ~0.3 photons: counts hit the floor
    pn = transmission_noise(p, 0.05, generator=0)
    assert torch.isfinite(pn).all() and pn.max() <= math.log(0.05 * 1e5) + 1e-9
    pn = transmission_noise(torch.full((100_000,), 2.0, dtype=torch.float64), 0.5, generator=0)
    assert abs(pn.mean() - 2.0) < 1e-3                                        # divided by a*I0: no -log(a) shift


@pytest.mark.parametrize('bad,msg', [
    (np.zeros((2, 2, 32, 32)), 'slice (H, W) or a batch (B, H, W)'),
    (np.zeros(32), 'slice (H, W) or a batch (B, H, W)'),
    (np.zeros((4, 4)), 'too small'),
    (np.array([['a'] * 16] * 16), 'numeric'),
])
def test_bad_images(bad, msg):
    with pytest.raises((ValueError, TypeError), match=None) as e: simulate_low_dose(bad, 0.5)
    assert msg in str(e.value)


@pytest.mark.parametrize('val', [np.nan, np.inf, -np.inf])
def test_nonfinite(val):
    x = PH.copy(); x[5, 5] = val
    with pytest.raises(ValueError, match='NaN or infinite'): simulate_low_dose(x, 0.5)


@pytest.mark.parametrize('dose', [0, -0.1, 1.01, float('nan'), float('inf')])
def test_bad_dose(dose):
    with pytest.raises(ValueError, match=r'dose must be a fraction of the normal dose in \(0, 1\]'): simulate_low_dose(PH, dose)


def test_bad_options():
    with pytest.raises(ValueError, match='unknown filter'): simulate_low_dose(PH, 0.5, filter='x')
    with pytest.raises(ValueError, match="backend must be"): simulate_low_dose(PH, 0.5, backend='cuda')
    with pytest.raises(TypeError, match='geometry must be'): simulate_low_dose(PH, 0.5, geometry=(1160, 672))
    with pytest.raises(ValueError, match='pixel_spacing must be positive'): simulate_low_dose(PH, 0.5, pixel_spacing=0)
    with pytest.raises(ValueError, match='does not match the geometry'): fan_fbp(torch.zeros(3, 5), FanBeamGeometry(), (8, 8))
    with pytest.raises(ValueError, match='at least 8 views'): FanBeamGeometry(n_views=4)
    with pytest.raises(ValueError, match='does not fit'): FanBeamGeometry.for_image((512, 512), 5.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_cuda_matches_cpu():
    x = torch.tensor(np.stack([phantom(r, 64, 0) for r in REGIONS]))
    gens = lambda: [torch.Generator().manual_seed(s) for s in (1, 2, 3)]     # CPU generators: the same uniforms on both
    lc, rc = simulate_doses(x, DOSES, generator=gens())
    lg, rg = simulate_doses(x.cuda(), DOSES, generator=gens())
    assert lg.device.type == 'cuda' and rg.device.type == 'cuda'
    assert (rg.cpu() - rc).abs().max() < 0.5                                  # HU
    assert (lg.cpu() - lc).abs().mean() < 0.5                                 # the same noise, computed on the GPU


# ---- the fast operator: the readable one's arithmetic, the old statistics and seeding ----

@pytest.mark.parametrize('shape,spacing', [((40, 40), (4.0, 4.0)), ((36, 28), (0.9, 0.7)), ((33, 33), (3.0, 3.0))])
def test_fast_operator_matches_readable(shape, spacing):
    "Symmetric projector and sparse back-projector against the grid_sample versions (square, rectangle, odd size)."
    H, W = shape
    g = FanBeamGeometry.for_image(shape, spacing)
    x = torch.tensor(np.stack([hu_to_mu(phantom(r, max(H, W), 1)[:H, :W]) for r in ('head', 'abdomen')]))
    pr, pf = fan_project_grid(x, g, spacing), fan_project(x, g, spacing, backend='fast')
    assert float((pf - pr).norm() / pr.norm()) < 1e-4
    q = fan_filter(pr, g, 'hann')
    br, bf = fan_backproject_grid(q, g, shape, spacing), fan_fbp(pr, g, shape, spacing, filter='hann', backend='fast')
    assert float((bf - br).norm() / br.norm()) < 1e-5


def test_fast_and_grid_give_the_same_images_for_a_seed():
    "Same seed, either operator: the same noise (inverse-CDF draws), the same images to float rounding."
    x = np.stack([phantom('head', 48, 2), phantom('chest', 48, 3)])
    a, ra = simulate_doses(x, DOSES, generator=[4, 5], backend='grid')
    b, rb = simulate_doses(x, DOSES, generator=[4, 5], backend='fast')
    assert np.abs(a - b).mean() < 0.05 and np.abs(ra - rb).max() < 0.05


def test_dose_simulator_one_more_dose_equals_simulate_doses():
    sim = DoseSimulator(PH, pixel_spacing=1.2)
    lo, ref = sim(0.2, generator=9)
    lo2, ref2 = simulate_doses(PH, [0.2], generator=9, pixel_spacing=1.2)
    np.testing.assert_array_equal(lo, lo2); np.testing.assert_array_equal(ref, ref2)
    np.testing.assert_array_equal(sim.reference, ref)
    lo8, _ = sim(DOSES, generator=9)
    lo8b, _ = simulate_doses(PH, DOSES, generator=9, pixel_spacing=1.2)
    np.testing.assert_array_equal(lo8, lo8b)


def _water(N=48, reps=6):
    from founddiff.phantoms import rasterize
    cyl = rasterize([Ellipse(0, 0, 200 / 350, 200 / 350, 0, 0., 'w')], N, 4)
    yy, xx = np.mgrid[:N, :N]
    roi = (yy - (N - 1) / 2)**2 + (xx - (N - 1) / 2)**2 <= (0.6 * 100 / (350 / N))**2
    return np.stack([cyl] * reps), roi


def test_relative_mode_added_variance_follows_one_over_a_minus_one():
    "Without electronic noise the variance added to the scan is proportional to 1/a - 1 (Yu et al. 2012)."
    x, roi = _water()
    low, partner = simulate_doses(x, DOSES, generator=0, pixel_spacing=350 / 48, mode='relative', sigma_e2=0.)
    var = ((low - partner[None])[:, :, roi]).var((1, 2))
    r = var / (1 / np.array(DOSES) - 1)
    assert r.std() / r.mean() < 0.1
    full, _ = simulate_doses(x[:1], 1.0, generator=0, pixel_spacing=350 / 48, mode='relative')
    np.testing.assert_array_equal(full[0], DoseSimulator(x[:1], pixel_spacing=350 / 48).reference)   # a = 1: the scan itself


def test_inserted_variance_closed_form():
    p = torch.tensor([0.5, 3.0, 6.0], dtype=torch.float64)
    for a in (0.5, 0.25, 0.05):
        for se2 in (0.0, 10.0):
            full = torch.exp(p) / 1e5 + se2 * torch.exp(2 * p) / 1e10                 # first-order post-log variances
            low = torch.exp(p) / (a * 1e5) + se2 * torch.exp(2 * p) / (a * 1e5)**2
            torch.testing.assert_close(inserted_variance(p, a, i0=1e5, sigma_e2=se2), low - full)
    pn = insert_noise(torch.full((200_000,), 2.0, dtype=torch.float64), 0.25, generator=0)
    assert abs(pn.var() / inserted_variance(torch.tensor(2.0), 0.25) - 1) < 0.02 and abs(pn.mean() - 2.0) < 1e-3


def test_nested_low_dose_has_absolute_noise_and_shares_the_partner():
    x, roi = _water()
    sp = 350 / 48
    sim = DoseSimulator(x, pixel_spacing=sp)
    a_low, _ = sim(DOSES, generator=1)
    n_low, n_partner = sim(DOSES, generator=1, mode='nested')
    clean = sim.reference
    s_abs = (a_low - clean[None])[:, :, roi].std((1, 2)); s_nest = (n_low - clean[None])[:, :, roi].std((1, 2))
    assert np.all(np.abs(s_nest / s_abs - 1) < 0.1)
    d_full, d_low = (n_partner - clean)[:, roi].ravel(), (n_low[0] - clean)[:, roi].ravel()
    assert np.corrcoef(d_full, d_low)[0, 1] > 0.5                       # at 1/2 dose the low dose shares half its noise


# ---- argument checks: type, the argument's name in the message, inputs untouched ----

G0 = FanBeamGeometry()
_SINO = torch.zeros(16, 16)
BAD = [
    (lambda x: simulate_low_dose(x, 'half'), TypeError, 'dose'),
    (lambda x: simulate_low_dose(x, 0.5 + 0j), TypeError, 'dose'),
    (lambda x: simulate_low_dose(x, True), TypeError, 'dose'),
    (lambda x: simulate_low_dose(x, float('nan')), ValueError, 'dose'),
    (lambda x: simulate_low_dose(x, 0.0), ValueError, 'dose'),
    (lambda x: simulate_low_dose(x, 1.5), ValueError, 'dose'),
    (lambda x: simulate_doses(x, ['0.5']), TypeError, 'doses'),
    (lambda x: simulate_doses(x, '0.5'), TypeError, 'doses'),
    (lambda x: simulate_doses(x, [0.5, 0.0]), ValueError, 'doses'),
    (lambda x: simulate_doses(x, [0.5, complex(0.2, 1)]), TypeError, 'doses'),
    (lambda x: simulate_doses(x, []), ValueError, 'doses'),
    (lambda x: simulate_low_dose(x[None][:0], 0.5), ValueError, 'hu'),
    (lambda x: simulate_low_dose(x.astype(np.complex64), 0.5), TypeError, 'hu'),
    (lambda x: simulate_low_dose(torch.tensor(x).to(torch.complex64), 0.5), TypeError, 'hu'),
    (lambda x: simulate_low_dose(x * 0 + np.float32(1e7), 0.5), ValueError, 'hu'),
    (lambda x: simulate_low_dose(x, 0.5, pixel_spacing=(1.0, 1.0, 1.0)), ValueError, 'pixel_spacing'),
    (lambda x: simulate_low_dose(x, 0.5, pixel_spacing=float('nan')), ValueError, 'pixel_spacing'),
    (lambda x: simulate_low_dose(x, 0.5, pixel_spacing=-1.0), ValueError, 'pixel_spacing'),
    (lambda x: simulate_low_dose(x, 0.5, pixel_spacing='1'), TypeError, 'pixel_spacing'),
    (lambda x: simulate_low_dose(x, 0.5, pixel_spacing=(1.0, 1j)), TypeError, 'pixel_spacing'),
    (lambda x: simulate_low_dose(x, 0.5, i0=0), ValueError, 'i0'),
    (lambda x: simulate_low_dose(x, 0.5, i0=-1e5), ValueError, 'i0'),
    (lambda x: simulate_low_dose(x, 0.5, i0=float('nan')), ValueError, 'i0'),
    (lambda x: simulate_low_dose(x, 0.5, sigma_e2=-1.0), ValueError, 'sigma_e2'),
    (lambda x: simulate_low_dose(x, 0.5, mu_water=0.0), ValueError, 'mu_water'),
    (lambda x: simulate_low_dose(x, 0.5, mode='quarter'), ValueError, 'mode'),
    (lambda x: simulate_low_dose(x, 0.5, reference='clean'), ValueError, 'reference'),
    (lambda x: simulate_low_dose(x, 0.5, mode='relative', reference='full'), ValueError, 'reference'),
    (lambda x: simulate_low_dose(x, 0.5, filter=3), ValueError, 'filter'),
    (lambda x: FanBeamGeometry(n_views=1160.0), TypeError, 'n_views'),
    (lambda x: FanBeamGeometry(n_det=True), TypeError, 'n_det'),
    (lambda x: FanBeamGeometry(dso=float('nan')), ValueError, 'dso'),
    (lambda x: FanBeamGeometry(dso=0.0), ValueError, 'dso'),
    (lambda x: FanBeamGeometry(dsd=float('inf')), ValueError, 'dsd'),
    (lambda x: FanBeamGeometry(fan_angle=-0.1), ValueError, 'fan_angle'),
    (lambda x: FanBeamGeometry(flux_scale=0.0), ValueError, 'flux_scale'),
    (lambda x: FanBeamGeometry.for_image((0, 32)), ValueError, 'shape'),
    (lambda x: FanBeamGeometry.for_image((32,)), ValueError, 'shape'),
    (lambda x: fan_fbp(_SINO, FanBeamGeometry(n_views=16, n_det=16), (8, 8, 8)), ValueError, 'shape'),
    (lambda x: fan_project(torch.tensor(hu_to_mu(x)), step=0.0), ValueError, 'step'),
    (lambda x: transmission_noise(torch.zeros(4), 0.5, i0=0.0), ValueError, 'i0'),
    (lambda x: insert_noise(torch.zeros(4), 0.5, sigma_e2=-2.0), ValueError, 'sigma_e2'),
]


@pytest.mark.parametrize('call,exc,name', BAD, ids=[f"{i}-{b[2]}" for i, b in enumerate(BAD)])
def test_bad_arguments_named_and_inputs_untouched(call, exc, name):
    x = PH.copy()
    with pytest.raises(exc) as e: call(x)
    assert name in str(e.value), str(e.value)
    np.testing.assert_array_equal(x, PH)
