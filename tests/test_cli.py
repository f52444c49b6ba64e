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
