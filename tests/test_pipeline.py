"founddiff.load_model / Denoiser as an installed user meets them: the lazy package hook, a save/load round trip, bad weight files."
import ast, json, os, subprocess, sys, textwrap
from configparser import ConfigParser
from pathlib import Path
import numpy as np
import pytest
import torch
from safetensors.torch import save_file, load_file

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'PYTHONPATH': str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', '')}


def _run(code: str, cwd) -> str:
    r = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True, env=ENV, cwd=cwd)
    assert r.returncode == 0, r.stderr + r.stdout
    return r.stdout


def test_import_founddiff_is_light_and_load_model_is_lazy(tmp_path):
    "`import founddiff` loads no torch and no model module; `founddiff.load_model` then resolves to the pipeline's."
    out = _run("""
        import sys, founddiff
        assert 'torch' not in sys.modules and 'founddiff.pipeline' not in sys.modules, sorted(sys.modules)
        f = founddiff.load_model
        import founddiff.pipeline as p
        assert f is p.load_model and founddiff.Denoiser is p.Denoiser and founddiff.save_model is p.save_model
        try: founddiff.no_such_thing
        except AttributeError as e: print('ok', e)
        """, tmp_path)
    assert "ok module 'founddiff' has no attribute 'no_such_thing'" in out


def test_init_hook_survives_nbdev_and_version_matches_settings():
    "nbdev_export rewrites only the __version__ line of __init__.py; the hand-written hook must stay, the version must match."
    src = (ROOT / 'founddiff' / '__init__.py').read_text()
    cfg = ConfigParser(delimiters=['=']); cfg.read(ROOT / 'settings.ini')
    assert src.splitlines()[0] == f'__version__ = "{cfg["DEFAULT"]["version"]}"'
    assert 'def __getattr__(name)' in src and "'load_model': 'pipeline'" in src


@pytest.mark.parametrize('mod, allowed', [
    ('sampler', {'founddiff.core', 'founddiff.diffusion'}),
    ('pipeline', {'founddiff.core', 'founddiff.daclip', 'founddiff.diffusion', 'founddiff.sampler'}),
])
def test_module_imports_follow_the_layers(mod, allowed):
    "The model wing never imports the data wing (phantoms, physics, data, io) nor the faces (cli, widgets)."
    tree = ast.parse((ROOT / 'founddiff' / f'{mod}.py').read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import): names |= {a.name for a in node.names}
        if isinstance(node, ast.ImportFrom) and node.module: names.add(('founddiff.' if node.level else '') + node.module)
    assert {n for n in names if n.startswith('founddiff')} <= allowed


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    "A tiny denoiser (random U-Net, shipped DA-CLIP) saved to a file, and its outputs on a few slices."
    from founddiff.pipeline import Denoiser, save_model
    from founddiff.diffusion import DADiffUNet, get_config
    from founddiff.daclip import load_daclip
    torch.manual_seed(0)
    den = Denoiser(DADiffUNet(get_config('tiny')), load_daclip('small'))
    g = np.random.default_rng(0)
    hu = (g.normal(0, 200, (2, 40, 36)) + np.linspace(-1000, 1500, 36)).astype(np.float32)
    path = save_model(den, tmp_path_factory.mktemp('w') / 'tiny.safetensors')
    return path, hu, den.denoise(hu, generator=3)


def test_round_trip_in_a_fresh_process(saved, tmp_path):
    "Loaded from the file in a fresh interpreter (another working directory), the model gives identical HU."
    path, hu, want = saved
    np.save(tmp_path / 'hu.npy', hu)
    _run(f"""
        import numpy as np, torch, founddiff
        den = founddiff.load_model({str(path)!r}, device='cpu')
        hu = np.load('hu.npy')
        out = den.denoise(hu, generator=3)
        assert isinstance(out, np.ndarray) and out.shape == hu.shape and out.dtype == np.float32
        np.save('out.npy', out)
        t = den.denoise(torch.as_tensor(hu[0], dtype=torch.float64), generator=3)          # torch in, torch out, same dtype
        assert isinstance(t, torch.Tensor) and t.shape == hu[0].shape and t.dtype == torch.float64
        """, tmp_path)
    np.testing.assert_array_equal(np.load(tmp_path / 'out.npy'), want)


def test_shipped_name_missing_lists_what_is_shipped():
    from founddiff.pipeline import load_model
    from founddiff.daclip import weights_dir
    if (weights_dir() / 'dadiff_small.safetensors').exists(): pytest.skip('dadiff_small is shipped')
    with pytest.raises(FileNotFoundError, match=r"no shipped DA-Diff model 'small'.*shipped models: none yet"): load_model('small')
    with pytest.raises(FileNotFoundError, match=r"no shipped DA-Diff model 'huge'"): load_model('huge')


def _rewrite(src: Path, dst: Path, state=None, **meta_changes):
    "Copy the saved model to `dst`, changing header fields (None removes one) and optionally the tensors."
    from safetensors import safe_open
    with safe_open(str(src), 'pt') as f: meta = dict(f.metadata())
    for k, v in meta_changes.items():
        if v is None: meta.pop(k, None)
        else: meta[k] = v
    save_file(state if state is not None else load_file(str(src)), str(dst), metadata=meta)
    return dst


def test_bad_weight_files_are_refused_with_the_file_named(saved, tmp_path):
    from founddiff.pipeline import load_model
    from founddiff.daclip import weights_dir
    path, _, _ = saved
    from safetensors import safe_open
    with safe_open(str(path), 'pt') as f: cfg = json.loads(f.metadata()['config'])
    state = load_file(str(path))
    nan_state = dict(state); k = next(k for k in state if k.startswith('unet.') and state[k].is_floating_point())
    nan_state[k] = torch.full_like(state[k], float('nan'))
    cases = {
        'missing': (tmp_path / 'missing.safetensors', FileNotFoundError, 'no weights file at'),
        'truncated': (tmp_path / 'cut.safetensors', ValueError, 'is not a readable safetensors file'),
        'not safetensors': (tmp_path / 'pickle.safetensors', ValueError, 'is not a readable safetensors file'),
        'foreign': (weights_dir() / 'daclip_small.safetensors', ValueError, "is not a founddiff DA-Diff model file (its header says format 'founddiff.daclip'"),
        'newer': (_rewrite(path, tmp_path / 'newer.safetensors', version='2'), ValueError, 'written by a newer founddiff'),
        'no header': (_rewrite(path, tmp_path / 'bare.safetensors', format=None, version=None, config=None, extra=None), ValueError, 'format None'),
        'non-JSON config': (_rewrite(path, tmp_path / 'nojson.safetensors', config='{dim: 8'), ValueError, "header field 'config' is not JSON"),
        'unknown config field': (_rewrite(path, tmp_path / 'field.safetensors', config=json.dumps({**cfg, 'heads': 4})), ValueError, "unknown DADiffConfig field(s) ['heads']"),
        'unknown header field': (_rewrite(path, tmp_path / 'hdr.safetensors', owner='me'), ValueError, "unknown header field(s) ['owner']"),
        'non-finite': (_rewrite(path, tmp_path / 'nan.safetensors', state=nan_state), ValueError, 'hold NaN or infinite values'),
    }
    (tmp_path / 'cut.safetensors').write_bytes(path.read_bytes()[:-1000])
    torch.save({'w': torch.ones(2)}, tmp_path / 'pickle.safetensors')
    for what, (p, exc, msg) in cases.items():
        with pytest.raises(exc) as e: load_model(p, device='cpu')
        assert msg in str(e.value) and str(p) in str(e.value), (what, str(e.value))


def test_daclip_loads_identically_through_core():
    "load_daclip (through founddiff.core.load_weights) equals loading the shipped tensors raw into the same model."
    from founddiff.daclip import DACLIP, load_daclip, weights_dir
    m = load_daclip('small')
    raw = DACLIP(m.config); raw.load_state_dict(load_file(str(weights_dir() / 'daclip_small.safetensors'))); raw.eval()
    x = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for a, b in zip(m(x), raw(x)): assert torch.equal(a, b)


def test_shipped_small_loads_offline_and_denoises():
    "The shipped DA-Diff `small` (issue: trained on phantoms on a CPU): small enough, carded, loads offline, and denoises."
    import json
    import founddiff
    from founddiff.pipeline import load_model
    from founddiff.daclip import weights_dir
    from founddiff.phantoms import phantom, FOV_MM
    from founddiff.physics import simulate_doses
    from founddiff.metrics import psnr
    p = weights_dir() / 'dadiff_small.safetensors'
    if not p.exists(): pytest.skip('no DA-Diff small ships yet (see configs/small.json)')
    assert p.stat().st_size <= 20e6, p
    card = json.loads((weights_dir() / 'dadiff_small.json').read_text())
    assert {'command', 'steps', 'train_wall_s', 'machine', 'seed', 'psnr'} <= set(card)
    assert card['train_wall_s'] <= 2 * 3600                                     # <= 2 h of training on the CPU
    den = founddiff.load_model('small')
    assert den.unet.config.name == 'small' and not den.training
    hu = phantom('abdomen', 512, generator=123)                                   # not a training phantom (those use derived seeds)
    low, ref = simulate_doses(hu, [0.125], generator=7, pixel_spacing=FOV_MM['abdomen'] / 512)   # 1/8: a dose it never saw
    low, ref = low[0][192:320, 192:320], ref[192:320, 192:320]                  # a 128 px crop keeps the test short
    out = den.denoise(low, generator=0)
    assert out.shape == low.shape
    assert psnr(out, ref) > psnr(low, ref) + 3                                     # the reference: the normal-dose partner


def test_ensemble_of_views_beats_the_plain_model_on_a_real_slice(tmp_path):
    "`denoise(ensemble=4)` on the bundled real head slice at an unseen dose scores above the plain model; the script's smoke run agrees."
    from founddiff.pipeline import load_model, weights_dir
    from founddiff.core import sample_path
    from founddiff.io import read_dicom
    from founddiff.physics import simulate_doses
    from founddiff.metrics import psnr
    if not (weights_dir() / 'dadiff_small.safetensors').exists(): pytest.skip('no DA-Diff small ships yet')
    img = read_dicom(sample_path('693_UNCI.dcm'))
    low, ref = simulate_doses(img.hu, [0.05], generator=11, pixel_spacing=tuple(img.meta['pixel_spacing']))
    low, ref = np.asarray(low[0][128:384, 128:384], np.float32), np.asarray(ref[128:384, 128:384], np.float32)
    den, l0 = load_model('small'), low.copy()
    one, four = den.denoise(low, generator=0), den.denoise(low, generator=0, ensemble=4)
    np.testing.assert_array_equal(low, l0)                                          # input untouched
    assert psnr(one, ref) > psnr(low, ref) + 3 and psnr(four, ref) > psnr(one, ref) + 0.05
    r = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'ensemble_gain.py'), '--quick', '--out', str(tmp_path)],
                       capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / 'real_ct.json').read_text())
    assert set(res['summary']) == {'1', '2', '4', '8'} and res['cases'] == ['693_UNCI.dcm']
    assert res['summary']['8']['mean_gain_over_ldct_db'] > res['summary']['1']['mean_gain_over_ldct_db']
