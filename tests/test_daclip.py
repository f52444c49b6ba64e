"DA-CLIP things that do not fit a notebook: the shipped weights as an installed user gets them, and the training script."
import json, struct, subprocess, sys
from dataclasses import replace
from configparser import ConfigParser
from fnmatch import fnmatch
from pathlib import Path
import pytest
import torch
from founddiff.daclip import DACLIP, load_daclip, weights_dir, to_daclip_input, CONFIGS, WEIGHTS_VERSION

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_small_weights_are_package_data():
    files = sorted(p.name for p in weights_dir().iterdir() if p.name.startswith('daclip_'))
    assert {'daclip_small.safetensors', 'daclip_small.json'} <= set(files), files
    cfg = ConfigParser(delimiters=['=']); cfg.read(ROOT / 'settings.ini')
    globs = cfg['DEFAULT']['package_data'].split()
    for f in ('daclip_small.safetensors', 'daclip_small.json'):
        assert any(fnmatch(f'weights/{f}', g) for g in globs), f"{f} is not matched by package_data {globs}"
    size = (weights_dir() / 'daclip_small.safetensors').stat().st_size
    assert size < 5e6, f"shipped weights are {size / 1e6:.1f} MB; keep them a few MB"


def test_shipped_weights_are_safetensors_not_pickle():
    raw = (weights_dir() / 'daclip_small.safetensors').read_bytes()
    n = struct.unpack('<Q', raw[:8])[0]                   # safetensors: 8-byte little-endian header length, then JSON
    header = json.loads(raw[8:8 + n])
    assert header['__metadata__']['format'] == 'founddiff.daclip'
    assert not raw.startswith(b'PK') and raw[:2] != b'\x80\x02'    # neither a torch zip nor a raw pickle


def test_load_small_offline_gives_the_dagiff_interface():
    m = load_daclip('small')
    assert m.config == replace(CONFIGS['small'], dose_head='linear', anat_head='linear') and not m.training   # stages 1b and 1c: linear heads
    meta = json.loads((weights_dir() / 'daclip_small.json').read_text())
    assert meta['version'] == WEIGHTS_VERSION and meta['config']['name'] == 'small'
    assert meta['metrics']['spearman_unseen'] >= 0.95 and meta['metrics']['region_acc_unseen'] >= 0.95   # at 64x64
    for n, mt in meta['metrics']['by_size'].items():                      # every training size, its own test phantoms
        assert mt['spearman_unseen'] >= 0.95 and mt['pair_order_unseen'] >= 0.98, (n, mt)
    e = m.embed(torch.full((3, 64, 64), -1000.) + 40 * torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(0)))
    assert e.dose.shape == (3, 1024) and e.anatomy.shape == (3, 256)
    assert torch.allclose(e.dose.norm(dim=1), torch.ones(3), atol=1e-5)
    # loaded weights are the trained ones, not a fresh random init
    fresh = DACLIP('small').eval()
    x = to_daclip_input(torch.zeros(1, 32, 32))
    assert not torch.allclose(fresh(x).dose, m(x).dose)


def test_load_errors_name_the_problem():
    with pytest.raises(FileNotFoundError, match=r"shipped weights: \[.*'small'"): load_daclip('tiny')
    with pytest.raises(ValueError, match="config 'small', not of the requested 'tiny'"): load_daclip('small', config='tiny')


def test_training_script_smoke(tmp_path):
    out = tmp_path / 'w' / 'tiny'
    r = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'train_daclip.py'), '--config', 'tiny', '--phantoms', '2',
                        '--test-phantoms', '1', '--steps', '2', '--out', str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    meta = json.loads(out.with_suffix('.json').read_text())
    assert meta['config']['name'] == 'tiny' and meta['train']['steps'] == 2
    assert {'spearman_unseen', 'region_acc_unseen', 'train_time_s'} <= set(meta['metrics'])
    m = load_daclip(path=out.with_suffix('.safetensors'), config='tiny')
    assert m.embed(torch.zeros(2, 40, 40)).dose.shape == (2, 1024)
    assert not list(out.parent.glob('.*.tmp'))            # atomic writes leave no temporaries


def test_training_loop_lives_in_train():
    "Every training loop lives in founddiff.train; founddiff.daclip keeps the model and never imports train (layers)."
    import ast, founddiff.daclip as fd
    from founddiff.train import train_daclip
    assert not hasattr(fd, 'train_daclip') and callable(train_daclip)
    tree = ast.parse((ROOT / 'founddiff' / 'daclip.py').read_text())
    mods = {('founddiff.' if n.level else '') + n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert {m for m in mods if m.startswith('founddiff')} <= {'founddiff.core', 'founddiff.losses'}, mods


def test_shipped_small_reads_the_bundled_real_slices_in_dose_order():
    """Real CT, evaluation only: both bundled slices, simulated at their own pixel spacing at all eight doses, are read in dose
    order; the head lying in a cushion (693_UNCI) reads as a head at most doses (region by the phantoms' nearest centroid)."""
    import numpy as np
    from founddiff.core import sample_path, DOSES, SEEN_DOSES
    from founddiff.io import read_dicom
    from founddiff.physics import simulate_doses
    from founddiff.data import phantom_dataset
    from founddiff.daclip import ridge_probe, spearman, nearest_centroid
    m = load_daclip('small')
    ds = phantom_dataset(6, 512, doses=SEEN_DOSES, seed=1, split='test', scale='hu')   # held-out phantoms fit the probe
    items = [ds[i] for i in range(len(ds))]
    e = m.embed(torch.stack([s['ldct'][0] for s in items]), 8)
    probe = ridge_probe(e.dose, torch.tensor([float(s['dose']) for s in items]).log())
    region = nearest_centroid(e.anatomy, torch.tensor([int(s['region']) for s in items]))
    truth = torch.tensor(DOSES)
    for name in ('693_UNCI.dcm', 'CT_small.dcm'):
        img = read_dicom(sample_path(name))
        low, _ = simulate_doses(img.hu, DOSES, generator=0, pixel_spacing=tuple(img.meta['pixel_spacing']))
        el = m.embed(torch.as_tensor(np.asarray(low)), 8)
        read = probe(el.dose).exp()
        if name == '693_UNCI.dcm': assert (region(el.anatomy) == 0).sum() >= 5, region(el.anatomy)   # 0: head
        assert spearman(read, truth) == 1.0, (name, read)            # 1/20, outside the seen range, included
        assert float((read / truth).log().abs().exp().median()) <= 1.5, (name, read)   # the level, within 1.5x
