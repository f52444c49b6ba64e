"Headless tests of the interactive figures (founddiff.widgets): slider steps and buttons applied as plotly.js applies them, live widgets driven by setting their values."
import ast, base64, copy, io, json, math, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from founddiff.core import WINDOWS, hu_to_unit
from founddiff.phantoms import phantom, FOV_MM
from founddiff.physics import DOSES, SEEN_DOSES, UNSEEN_DOSES, simulate_doses
from founddiff.widgets import dose_slider, live_dose_slider, sampler_stepper, embedding_explorer, apply_plotly, psnr_ssim

SP = FOV_MM['chest'] / 48


@pytest.fixture(scope='module')
def hu():
    return phantom('chest', 48, 7)


class HalfwayDenoiser:
    "The shape of founddiff's Denoiser: .denoise(hu (K, H, W), generator=...) -> (K, H, W); moves halfway to a blur."
    def __init__(self): self.calls = 0
    def denoise(self, hu, steps=None, batch_size=8, generator=None):
        self.calls += 1
        return 0.5 * hu + 0.5 * ndi.gaussian_filter(hu, (0, 1, 1))


def _z(z):
    "A trace's z as the browser receives it (plotly's typed-array dict decoded)."
    if isinstance(z, dict): return np.frombuffer(base64.b64decode(z['bdata']), z['dtype']).reshape([int(s) for s in str(z['shape']).split(',')])
    return np.asarray(z)


def _visible(d): return [t['name'] for t in d['data'] if t.get('visible', True) is True]


def test_slider_steps_and_buttons(hu):
    model = HalfwayDenoiser()
    keep = hu.copy()
    fig = dose_slider(hu, model, pixel_spacing=SP, window='lung')
    np.testing.assert_array_equal(hu, keep)                                # input untouched
    assert model.calls == 1                                                # the eight doses in one batch
    d0 = fig.to_dict()
    low, ref = simulate_doses(hu, DOSES, generator=0, pixel_spacing=SP)    # the same simulation, made here
    out = model.denoise(low)
    steps = d0['layout']['sliders'][0]['steps']
    assert len(steps) == 8 and [s['label'].endswith('unseen') for s in steps] == [d in UNSEEN_DOSES for d in DOSES]
    for k, (st, dose) in enumerate(zip(steps, DOSES)):
        f = apply_plotly(copy.deepcopy(d0), st['method'], st['args'])
        names = _visible(f)
        assert len(names) == 4 and names[-1] == 'NDCT' and all(n.endswith(' ' + st['label'].split()[0]) for n in names[:3])
        shown = [t for t in f['data'] if t.get('visible', True) is True]
        np.testing.assert_array_equal(_z(shown[0]['z']), np.clip(np.rint(low[k]), -32768, 32767).astype(np.int16))
        np.testing.assert_array_equal(_z(shown[1]['z']), np.rint(out[k]).astype(np.int16))
        p, s = psnr_ssim(out[k], ref)
        a, b = hu_to_unit(out[k].astype(np.float64)), hu_to_unit(ref.astype(np.float64))
        assert math.isclose(p, 10 * math.log10(1 / np.mean((a - b) ** 2)), rel_tol=1e-9)
        t = f['layout']['title']['text']
        assert f"PSNR {p:.2f} dB, SSIM {s:.3f}" in t and ('unseen in training' in t) == (dose in UNSEEN_DOSES)
    lay = d0['layout']
    assert (lay['coloraxis']['cmin'], lay['coloraxis']['cmax']) == (WINDOWS['lung'].lo, WINDOWS['lung'].hi)
    for b in lay['updatemenus'][0]['buttons']:
        name = b['label'].split()[0]
        f = apply_plotly(copy.deepcopy(d0), b['method'], b['args'])
        assert (f['layout']['coloraxis']['cmin'], f['layout']['coloraxis']['cmax']) == (WINDOWS[name].lo, WINDOWS[name].hi)
        assert _visible(f) == _visible(d0) and f['layout']['title'] == lay['title']


def test_slider_no_model_and_sizes(hu):
    fig = dose_slider(hu, pixel_spacing=SP, doses=[0.5, 0.05])
    assert len(fig.data) == 2 * 2 + 1 and [a.text for a in fig.layout.annotations][0] == 'LDCT'
    small = dose_slider(hu, pixel_spacing=SP, doses=[0.5, 0.05], display_stride=3)
    assert _z(small.to_dict()['data'][0]['z']).shape == (16, 16) and '1 pixel in 3' in small.layout.title.text


@pytest.mark.parametrize('kw, msg', [(dict(image='no/such.dcm'), 'no such file'), (dict(image=np.zeros((3, 8, 8))), 'one slice'),
                                     (dict(model=3), 'model must be'), (dict(doses=[0]), 'doses must be'),
                                     (dict(roi=(0, 0, 99, 99)), 'roi'), (dict(display_stride=0), 'display_stride'),
                                     (dict(window='nope'), 'unknown window')])
def test_slider_bad_input(hu, kw, msg):
    args = dict(image=hu, pixel_spacing=SP, doses=[0.5]) | kw
    with pytest.raises((ValueError, TypeError, FileNotFoundError), match=msg): dose_slider(**args)


def test_live_widget_observers(hu):
    from PIL import Image
    live = live_dose_slider(hu, lambda x: ndi.gaussian_filter(x, 1.0), pixel_spacing=SP, doses=[0.5, 0.3, 0.1])
    dec = lambda w: np.asarray(Image.open(io.BytesIO(w.value)))
    assert live.dose.value == 0.3 and '1/3.33 dose' in live.info.value and 'between levels' in live.info.value   # opens nearest 1/4
    before = {p: bytes(w.value) for p, w in live.images.items()}
    live.dose.value = 0.1
    low, ref = simulate_doses(hu, [0.1], generator=0, pixel_spacing=SP)
    w, z = WINDOWS['abdomen'], live.zoom
    np.testing.assert_array_equal(dec(live.images['ldct']), np.round(w(low[0].astype(np.float64)) * 255).astype(np.uint8).repeat(z, 0).repeat(z, 1))
    assert bytes(live.images['ndct'].value) == before['ndct'] and bytes(live.images['ldct'].value) != before['ldct']
    assert '1/10 dose' in live.info.value and '(seen)' in live.info.value
    live.window.value = WINDOWS['bone']
    np.testing.assert_array_equal(dec(live.images['ndct'])[::z, ::z], np.round(WINDOWS['bone'](ref.astype(np.float64)) * 255).astype(np.uint8))
    live.play.value = 0                                                   # Play drives the slider through widgets.link
    assert live.dose.value == 0.5


def test_stepper_with_callback_contract(hu):
    seen = []
    def fake_sample(unet, ldct, embedding, preset='founddiff', steps=2, generator=None, callback=None):
        from collections import namedtuple
        S = namedtuple('S', 'i t t_next x_in residual x0 x')
        x = ldct.clone()
        for i in range(steps):
            r = unet(x, ldct, None)
            seen.append((preset, i)); callback(S(i, 999 - i, 998 - i, x, r, ldct - r, x - r)); x = x - r
        return x
    unet = lambda x, ldct, t, dose=None, anatomy=None: torch.full_like(ldct, 0.01)   # a constant 15 HU residual
    fig = sampler_stepper(hu, unet, dose=0.25, steps=3, pixel_spacing=SP, sample=fake_sample)
    assert seen == [(p, i) for p in ('founddiff', 'rddm') for i in range(3)]
    d = fig.to_dict()
    assert len(d['layout']['sliders'][0]['steps']) == 3
    assert np.all(_z(d['data'][1]['z']) == 15)                           # residual 0.01 on [-1, 1] = 15 HU
    f = apply_plotly(copy.deepcopy(d), 'update', d['layout']['sliders'][0]['steps'][2]['args'])
    assert _visible(f)[0] == 'founddiff step 3 x_in' and 'step 3 of 3' in f['layout']['title']['text']
    with pytest.raises(ValueError, match='called back'):
        sampler_stepper(hu, unet, steps=2, pixel_spacing=SP, sample=lambda *a, **k: None)


def test_embedding_explorer_highlights_current(hu):
    from founddiff.daclip import load_daclip
    enc = load_daclip('small')
    xs = np.stack([phantom(r, 48, 3) for r in ('head', 'chest', 'abdomen')] * 2)
    ds, rs = [0.5] * 3 + [0.05] * 3, ['head', 'chest', 'abdomen'] * 2
    fig = embedding_explorer(xs[0], daclip=enc, images=(xs, ds, rs))
    star = [t for t in fig.data if t.marker.symbol == 'star']
    assert len(star) == 2
    # the current image is the first image of the set: its star sits on that point (PCA is deterministic)
    region_head = [t for t in fig.data if t.name == 'head'][0]
    assert np.allclose([star[1].x[0], star[1].y[0]], [region_head.x[0], region_head.y[0]], atol=1e-5)


def test_layering():
    "widgets is a face: it imports no face; only the command (cli, another face) uses it, inside its functions."
    src = Path(__file__).parents[1] / 'founddiff'
    for p in src.glob('*.py'):
        if p.name == 'widgets.py': continue
        tree = ast.parse(p.read_text())
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            mods = [node.module or ''] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if any(m.endswith('widgets') for m in mods):
                assert p.name == 'cli.py' and id(node) not in top, f"{p.name} imports widgets"
    code = "import sys, founddiff.widgets; print(sorted(m for m in sys.modules if m.startswith('founddiff.')))"
    mods = json.loads(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.replace("'", '"'))
    assert not {'founddiff.cli', 'founddiff.train', 'founddiff.evaluate'} & set(mods), mods
    assert not {'founddiff.sampler', 'founddiff.pipeline', 'founddiff.diffusion'} & set(mods), mods   # loaded only when asked for


def test_stepper_real_sampler_and_saved_model(hu, tmp_path):
    from founddiff.pipeline import Denoiser, save_model, load_model
    from founddiff.diffusion import DADiffUNet, get_config
    from founddiff.daclip import load_daclip
    p = save_model(Denoiser(DADiffUNet(get_config('tiny')), load_daclip('small')), tmp_path / 'tiny.safetensors')
    fig = sampler_stepper(hu, load_model(p), dose=0.1, pixel_spacing=SP)        # the real sampler, both presets
    assert fig.layout.meta['presets'] == ['founddiff', 'rddm'] and len(fig.layout.sliders[0].steps) == 2
    f = dose_slider(hu, str(p), doses=[0.5, 0.1], pixel_spacing=SP)            # a model by path
    low, _ = simulate_doses(hu, [0.5, 0.1], generator=0, pixel_spacing=SP)
    want = load_model(p).denoise(low, generator=0)
    np.testing.assert_array_equal(_z(f.to_dict()['data'][1]['z']), np.clip(np.rint(want[0]), -32768, 32767).astype(np.int16))
