"The installed `founddiff` command, run as a user runs it (a subprocess)."
import json, shutil, subprocess, sys
from pathlib import Path
import pytest
from founddiff.core import sample_path

EXE = shutil.which('founddiff')


def _run(*args, cwd=None):
    cmd = [EXE, *args] if EXE else [sys.executable, '-c', 'import sys; from founddiff.cli import main; sys.exit(main())', *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=300)


def test_console_script_installed():
    assert EXE, "the `founddiff` console script is not on PATH: is the package installed (pip install -e .)?"


def test_demo_default_writes_named_outputs(tmp_path):
    r = _run('demo', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / 'founddiff_demo'
    assert str(out.name) in r.stdout   # it names the folder it wrote
    for f in ('ct_windows.png', 'index.html', 'summary.json'): assert (out / f).stat().st_size > 0
    rows = json.loads((out / 'summary.json').read_text())['ct_windows']
    assert {r['image'] for r in rows} == {'693_UNCI.dcm', 'CT_small.dcm'}
    assert not list(out.glob('.*.tmp'))


def test_demo_input_series_folder(tmp_path):
    import pydicom
    from pydicom.uid import generate_uid
    uid = generate_uid(); (tmp_path / 'ser').mkdir()
    for i in range(3):
        d = pydicom.dcmread(sample_path('CT_small.dcm')); d.SeriesInstanceUID = uid; d.SOPInstanceUID = generate_uid()
        d.ImagePositionPatient = [0, 0, float(i)]; d.save_as(tmp_path / 'ser' / f'{i}.dcm')
    r = _run('demo', '--input', str(tmp_path / 'ser'), '--out', str(tmp_path / 'o'))
    assert r.returncode == 0, r.stderr
    assert 'slice 2 of 3' in (tmp_path / 'o' / 'index.html').read_text()


@pytest.mark.parametrize('make,msg', [
    (lambda p: p / 'missing.dcm', 'no such file'),
    (lambda p: (p / 'x.txt').write_text('hi') and p / 'x.txt', 'not a DICOM file'),
    (lambda p: (p / 'empty').mkdir() or p / 'empty', 'no CT DICOM files'),
])
def test_demo_bad_input_clear_message(tmp_path, make, msg):
    bad = make(tmp_path)
    r = _run('demo', '--input', str(bad), '--out', str(tmp_path / 'o'))
    assert r.returncode == 2
    assert msg in r.stderr and str(bad) in r.stderr and 'Traceback' not in r.stderr


def test_help_and_version():
    r = _run('--help'); assert r.returncode == 0 and 'demo' in r.stdout
    r = _run('--version'); assert r.returncode == 0 and 'founddiff' in r.stdout


@pytest.mark.parametrize('kind', ['file', 'under_file'])
def test_out_checked_before_any_work(tmp_path, kind):
    "An --out that is a file (or lies under one) fails at once: one line, status 2, nothing printed on stdout."
    f = tmp_path / 'taken'; f.write_text('keep')
    out = f if kind == 'file' else f / 'sub'
    r = _run('demo', '--out', str(out))
    assert r.returncode == 2 and r.stdout == ''
    assert r.stderr.count('\n') == 1 and r.stderr.startswith('founddiff: error: --out ') and str(out) in r.stderr
    assert f.read_text() == 'keep'


def test_usage_error_is_one_line():
    r = _run('demo', '--no-such-option')
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'unrecognized arguments' in r.stderr


def test_damaged_dicom_is_one_line(tmp_path):
    "A slice whose RescaleSlope is text: the command says so in one line (no pydicom warnings, no traceback)."
    import pydicom
    from pydicom.dataelem import DataElement
    ds = pydicom.dcmread(sample_path('CT_small.dcm'))
    ds[0x00281053] = DataElement(0x00281053, 'DS', '1'); ds[0x00281053]._value = 'abc'
    p = tmp_path / 'bad slope.dcm'; ds.save_as(p)
    r = _run('demo', '--input', str(p), '--out', str(tmp_path / 'o'))
    assert r.returncode == 2 and r.stderr.count('\n') == 1, r.stderr
    assert 'RescaleSlope' in r.stderr and str(p) in r.stderr and not (tmp_path / 'o').exists()


# ---- founddiff denoise / simulate: DICOM slice, DICOM series, NIfTI volume, with a saved `tiny` model

import hashlib


def _sha(p): return hashlib.sha256(Path(p).read_bytes()).hexdigest()


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A `tiny` DA-Diff model file (random U-Net weights, the shipped DA-CLIP): the plumbing is under test, not the weights."
    from founddiff.pipeline import Denoiser, save_model
    from founddiff.diffusion import DADiffUNet, get_config
    from founddiff.daclip import load_daclip
    return save_model(Denoiser(DADiffUNet(get_config('tiny')), load_daclip('small')), tmp_path_factory.mktemp('m') / 'tiny.safetensors')


def _series(folder, n=3):
    import pydicom
    from pydicom.uid import generate_uid
    uid = generate_uid(); folder.mkdir()
    for i in range(n):
        d = pydicom.dcmread(sample_path('CT_small.dcm')); d.SeriesInstanceUID = uid; d.SOPInstanceUID = generate_uid()
        d.ImagePositionPatient = [0, 0, 2.5 * i]; d.InstanceNumber = i + 1; d.save_as(folder / f'IM{i:04d}.dcm')
    return uid


def test_denoise_dicom_slice(tmp_path, tiny):
    import pydicom
    src = sample_path('CT_small.dcm'); h = _sha(src)
    r = _run('denoise', str(src), '--out', str(tmp_path / 'd.dcm'), '--model', str(tiny), '--device', 'cpu', '--no-progress')
    assert r.returncode == 0, r.stderr
    assert _sha(src) == h
    a, b = pydicom.dcmread(src), pydicom.dcmread(tmp_path / 'd.dcm')
    for kw in ('ImagePositionPatient', 'ImageOrientationPatient', 'PixelSpacing', 'Rows', 'Columns', 'StudyInstanceUID'):
        assert b.get(kw) == a.get(kw), kw
    assert b.SOPInstanceUID != a.SOPInstanceUID and b.SeriesInstanceUID != a.SeriesInstanceUID and 'DERIVED' in b.ImageType


def test_denoise_series_resumes(tmp_path, tiny):
    import pydicom
    from founddiff.io import read_series
    uid = _series(tmp_path / 'in')
    before = {p.name: _sha(p) for p in (tmp_path / 'in').iterdir()}
    args = ('denoise', str(tmp_path / 'in'), '--out', str(tmp_path / 'out'), '--model', str(tiny), '--batch-size', '2', '--steps', '1')
    r = _run(*args)
    assert r.returncode == 0, r.stderr
    assert 'wrote 3 slice(s)' in r.stdout and 'slice' in r.stderr          # the progress bar counts slices on stderr
    assert {p.name: _sha(p) for p in (tmp_path / 'in').iterdir()} == before   # inputs byte-identical
    outs = sorted((tmp_path / 'out').glob('*.dcm'))
    assert [p.name for p in outs] == sorted(before)
    ds = [pydicom.dcmread(p) for p in outs]
    assert len({d.SeriesInstanceUID for d in ds}) == 1 and ds[0].SeriesInstanceUID != uid
    assert len({d.SOPInstanceUID for d in ds}) == 3
    assert [float(d.ImagePositionPatient[2]) for d in ds] == [0.0, 2.5, 5.0]
    vol = read_series(tmp_path / 'out')
    assert vol.hu.shape == (3, 128, 128)
    first = _sha(outs[1]); pix = ds[1].PixelData
    outs[1].unlink()                                                         # an interrupted run: one slice missing
    r = _run(*args, '--no-progress')
    assert r.returncode == 0, r.stderr
    assert 'wrote 1 slice(s)' in r.stdout and 'skipped 2' in r.stdout
    d1 = pydicom.dcmread(outs[1])
    assert d1.PixelData == pix and d1.SeriesInstanceUID == ds[0].SeriesInstanceUID   # the same result as an uninterrupted run
    r = _run('denoise', str(tmp_path / 'in'), '--out', str(tmp_path / 'out'), '--model', str(tiny), '--steps', '2', '--no-progress')
    assert r.returncode == 2 and 'other settings' in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_denoise_and_simulate_nifti(tmp_path, tiny):
    import nibabel as nib
    import numpy as np
    from founddiff.io import read_dicom
    hu = read_dicom(sample_path('CT_small.dcm')).hu[::2, ::2]
    arr = np.stack([hu.T[:, ::-1]] * 2, -1)                                     # (X, Y, Z)
    aff = np.diag([0.66, 0.66, 3.0, 1.]); aff[:3, 3] = [-40, -40, 100]
    img = nib.Nifti1Image(np.rint(arr + 1024).astype(np.int16), aff); img.header.set_slope_inter(1, -1024)
    nib.save(img, tmp_path / 'v.nii.gz'); h = _sha(tmp_path / 'v.nii.gz')
    for cmd in (('denoise', '--model', str(tiny)), ('simulate', '--dose', '0.25')):
        out = tmp_path / f'{cmd[0]}.nii.gz'
        r = _run(cmd[0], str(tmp_path / 'v.nii.gz'), '--out', str(out), *cmd[1:], '--no-progress')
        assert r.returncode == 0, r.stderr
        a, b = nib.load(tmp_path / 'v.nii.gz'), nib.load(out)
        assert np.allclose(a.affine, b.affine) and a.shape == b.shape and a.header.get_zooms() == b.header.get_zooms()
        assert b.get_data_dtype() == np.int16 and (b.dataobj.slope, b.dataobj.inter) == (1.0, -1024.0)
        assert not np.array_equal(np.asarray(b.dataobj), np.asarray(a.dataobj))
    assert _sha(tmp_path / 'v.nii.gz') == h


@pytest.mark.parametrize('args, msg', [(('simulate', 'nope.dcm', '--dose', '0.25', '--out', 'x.dcm'), 'no such file'),
                                       (('simulate', 'IN', '--dose', '2', '--out', 'x.dcm'), 'dose'),
                                       (('denoise', 'IN', '--out', 'x.dcm', '--batch-size', '0'), 'positive integer')])
def test_file_commands_bad_input(tmp_path, args, msg):
    args = [str(sample_path('CT_small.dcm')) if a == 'IN' else a for a in args]
    r = _run(*args, cwd=tmp_path)
    assert r.returncode == 2 and msg in r.stderr, r.stderr
    assert not list(tmp_path.iterdir())


def test_file_commands_help():
    for cmd, words in (('denoise', ('--out', '--model', '--device', '--batch-size', '--steps', 'NIfTI', 'resumed')),
                       ('simulate', ('--dose', '--out', '1/4', 'NIfTI'))):
        r = _run(cmd, '--help')
        assert r.returncode == 0 and all(w in r.stdout for w in words), r.stdout


def test_file_commands_refuse_non_ct_and_missing_model(tmp_path, tiny):
    (tmp_path / 'notes.dcm').write_text('not an image')
    r = _run('denoise', str(tmp_path / 'notes.dcm'), '--out', str(tmp_path / 'o.dcm'), '--model', str(tiny))
    assert r.returncode == 2 and 'not a DICOM file' in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = _run('denoise', str(sample_path('CT_small.dcm')), '--out', str(tmp_path / 'o.dcm'), '--model', 'nonesuch')
    assert r.returncode == 2 and "no shipped DA-Diff model 'nonesuch'" in r.stderr, r.stderr
    assert not (tmp_path / 'o.dcm').exists()


# --- founddiff train CONFIG ---------------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]

def test_train_runs_resumes_and_refuses(tmp_path):
    "`founddiff train` trains the tiny config, continues from its checkpoint, and refuses bad configs in one line."
    from safetensors import safe_open
    cfg, run = ROOT / 'configs' / 'tiny.json', tmp_path / 'run'
    before = cfg.read_bytes()
    r = _run('train', str(cfg), '--steps', '2', '--out', str(run), '--no-progress', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert 'at step 2 of 2' in r.stdout and (run / 'checkpoint.safetensors').is_file()
    r = _run('train', str(cfg), '--steps', '3', '--out', str(run), '--no-progress', cwd=tmp_path)   # continues: 1 more step
    assert r.returncode == 0, r.stderr
    assert 'at step 3 of 3' in r.stdout
    assert json.loads((run / 'config.json').read_text())['steps'] == 3
    assert cfg.read_bytes() == before                                          # the config file is only read
    bad = tmp_path / 'bad.json'; bad.write_text('{"model": "dadiff", "bogus": 1}')
    afile = tmp_path / 'afile'; afile.write_text('x')
    for args, msg in [(('train', str(tmp_path / 'nope.json')), 'no such file'),
                      (('train', str(bad)), 'bogus'),
                      (('train', str(cfg), '--out', str(afile)), 'existing file'),
                      (('train', str(cfg), '--steps', '0', '--out', str(tmp_path / 'r0')), '--steps')]:
        r = _run(*args, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.startswith('founddiff: error:') and msg in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / 'r0').exists()
