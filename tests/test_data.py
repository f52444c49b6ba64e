"Dataset checks that do not fit the notebook: interrupted cache builds, damaged files, workers, bad files."
import json, os, subprocess, sys
import numpy as np
import pytest
import torch
from founddiff.core import sample_path
from founddiff.io import CTReadError
from founddiff.physics import DOSES, SEEN_DOSES
from founddiff.data import (phantom_dataset, folder_dataset, find_slices, read_nifti, PairedDataset, DoseCache,
                            SimulatedDoseDataset, get_dataloaders, phantom_splits, augment_pair, make_sample)
from founddiff.cli import dose_images      # a report builder of the demo: it lives in the face that uses it


def _tmp_files(d): return [p for p in d.rglob('*') if p.name.endswith('.tmp')]


def test_interrupted_build_resumes(tmp_path, monkeypatch):
    "A crash in the middle of a build leaves only whole files; the next build does the rest and matches a clean build."
    ds = phantom_dataset(12, 32, doses=DOSES, cache_dir=tmp_path/'a')
    real_save, calls = DoseCache.save, []
    def crashing_save(self, key, stack):
        if len(calls) == 5: raise KeyboardInterrupt('power cut')
        calls.append(key); real_save(self, key, stack)
    monkeypatch.setattr(DoseCache, 'save', crashing_save)
    with pytest.raises(KeyboardInterrupt): ds.build_cache(batch_size=2, progress=False)
    monkeypatch.setattr(DoseCache, 'save', real_save)
    assert len(list((tmp_path/'a').glob('*.npy'))) == 5 and not _tmp_files(tmp_path)
    assert ds.build_cache(progress=False) == 7
    clean = phantom_dataset(12, 32, doses=DOSES, cache_dir=tmp_path/'b'); clean.build_cache(batch_size=12, progress=False)
    for i in range(0, len(ds), 7):
        assert (ds[i]['ldct'] - clean[i]['ldct']).abs().mean() < 1e-4    # same noise whatever the batching
        assert ds[i]['key'] == clean[i]['key']


@pytest.mark.parametrize('damage', ['truncate', 'garbage', 'empty', 'wrong_shape'])
def test_damaged_cache_file_is_rebuilt(tmp_path, damage):
    ds = phantom_dataset(3, 32, doses=SEEN_DOSES, cache_dir=tmp_path)
    ds.build_cache(progress=False)
    ref = ds[5]['ldct'].clone()
    p = ds.cache.path(ds.sources[1].key)
    if damage == 'truncate': p.write_bytes(p.read_bytes()[:-100])
    elif damage == 'garbage': p.write_bytes(os.urandom(2000))
    elif damage == 'empty': p.write_bytes(b'')
    else: np.save(p, np.zeros((2, 32, 32), np.float32))
    assert ds.cache.load(ds.sources[1].key) is None
    assert ds.build_cache(progress=False) == 1
    assert (ds[5]['ldct'] - ref).abs().mean() < 1e-4


def test_cache_settings_mismatch(tmp_path):
    phantom_dataset(2, 32, cache_dir=tmp_path, filter='hann')
    with pytest.raises(ValueError, match='other settings'): phantom_dataset(2, 32, cache_dir=tmp_path, filter='ramp')
    with pytest.raises(ValueError, match='other settings'): phantom_dataset(2, 32, cache_dir=tmp_path, seed=1)


def test_no_cache_build_without_dir():
    with pytest.raises(ValueError, match='no cache_dir'): phantom_dataset(2, 32).build_cache()


def test_items_stable_across_processes():
    "Item i depends only on the seed: a fresh interpreter (another hash seed) gives the same item."
    code = ("from founddiff.data import phantom_dataset; s = phantom_dataset(4, 32)[5]; "
            "print(float(s['ldct'].double().sum()), s['key'])")
    outs = {subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300,
                           env={**os.environ, 'PYTHONHASHSEED': str(h)}).stdout for h in (1, 2)}
    assert len(outs) == 1 and outs != {''}


def test_workers_give_the_same_batches():
    ds = phantom_splits(6, 3, 3, size=32)
    dl0 = get_dataloaders(ds, batch_size=4, num_workers=0)['test_seen']
    dl2 = get_dataloaders(ds, batch_size=4, num_workers=2)['test_seen']
    for b0, b2 in zip(dl0, dl2):
        assert torch.equal(b0['ldct'], b2['ldct']) and b0['key'] == b2['key']


def test_augmented_training_repeatable_with_workers():
    ds = phantom_splits(8, 2, 2, size=32)
    run = lambda: [b['ldct'] for b in get_dataloaders(ds, batch_size=4, num_workers=2, seed=3)['train']]
    a, b = run(), run()
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_augmentation_keeps_pairs_aligned():
    s = phantom_dataset(3, 32, augment=True)[4]
    plain = phantom_dataset(3, 32)[4]
    # the augmented pair is one of the 8 symmetries of the plain pair, applied to both
    ok = False
    for h in (0, 1):
        for k in range(4):
            f = lambda x: torch.rot90(x.flip(-1) if h else x, k, (-2, -1))
            for v in (0, 1):
                g = (lambda x: f(x).flip(-2)) if v else f
                ok |= torch.allclose(g(plain['ldct']), s['ldct']) and torch.allclose(g(plain['ndct']), s['ndct'])
    assert ok


def test_bad_files_named(tmp_path):
    (tmp_path/'p').mkdir(); (tmp_path/'p'/'broken.dcm').write_bytes(b'\0' * 300)
    ds = folder_dataset(tmp_path, 'head', doses=(0.5,))
    with pytest.raises(CTReadError, match='broken.dcm'): ds[0]
    (tmp_path/'q').mkdir(); (tmp_path/'q'/'bad.nii').write_bytes(b'nope')
    with pytest.raises(CTReadError, match='bad.nii'): find_slices(tmp_path/'q')
    import nibabel as nib
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2, 2), np.float32), np.eye(4)), tmp_path/'v4d.nii')
    with pytest.raises(CTReadError, match='3-D volume'): read_nifti(tmp_path/'v4d.nii')
    with pytest.raises(ValueError, match='unknown region'): find_slices(tmp_path/'p', 'leg')


def test_paired_dataset_errors(tmp_path):
    a, b = tmp_path/'a.npy', tmp_path/'b.npy'
    np.save(a, np.zeros((16, 16), np.float32)); np.save(b, np.zeros((8, 8), np.float32))
    with pytest.raises(CTReadError, match='one shape'): PairedDataset([(a, b, 0.25, 'chest')])[0]
    with pytest.raises(ValueError, match='dose must be'): PairedDataset([(a, a, 2.0, 'chest')])
    with pytest.raises(ValueError, match='unknown region'): PairedDataset([(a, a, 0.25, 'knee')])
    with pytest.raises(ValueError, match='no pairs'): PairedDataset([])
    s = PairedDataset([(a, a, 0.25, None, 'P1')], scale='hu')[0]
    assert s['region'].item() == -1 and s['key'] == 'P1/a.npy'


def test_dataset_argument_errors():
    with pytest.raises(ValueError, match='chosen per source'): phantom_dataset(2, 32, geometry=None)
    with pytest.raises(ValueError, match='scale must be'): phantom_dataset(2, 32, scale='mu')
    with pytest.raises(ValueError, match='n must be positive'): phantom_dataset(0)
    with pytest.raises(ValueError, match='no doses'): phantom_dataset(2, 32, doses=())


def test_unit_scale_round_trip():
    hu = phantom_dataset(2, 32, scale='hu')[0]; un = phantom_dataset(2, 32, scale='unit')[0]
    np.testing.assert_allclose(un['ndct'].numpy(), np.clip((hu['ndct'].numpy() + 1000) / 3000, 0, 1), atol=1e-6)


# ---- the cache never serves stacks its manifest does not vouch for ----

def test_damaged_manifest_is_refused_not_relabelled(tmp_path):
    "The old bug: a damaged manifest was rewritten with new settings and the old stacks served under the new dose labels."
    ds = phantom_dataset(3, 32, doses=SEEN_DOSES, cache_dir=tmp_path)
    ds.build_cache(progress=False)
    (tmp_path/'cache.json').write_text('{"version": 2, "doses": [0.5, ')     # torn write / disk error
    with pytest.raises(ValueError, match='manifest') as e: phantom_dataset(3, 32, doses=(1/3, 1/5, 1/8, 1/20), cache_dir=tmp_path)
    assert str(tmp_path) in str(e.value)
    with pytest.raises(ValueError, match='manifest'): phantom_dataset(3, 32, doses=SEEN_DOSES, cache_dir=tmp_path)
    (tmp_path/'cache.json').write_text('[1, 2]')                                 # JSON, but not a manifest
    with pytest.raises(ValueError, match='manifest'): phantom_dataset(3, 32, doses=SEEN_DOSES, cache_dir=tmp_path)
    (tmp_path/'cache.json').unlink()                                             # lost manifest, stacks still there
    with pytest.raises(ValueError, match='no manifest'): phantom_dataset(3, 32, doses=SEEN_DOSES, cache_dir=tmp_path)
    c = DoseCache(tmp_path, phantom_dataset(3, 32, doses=SEEN_DOSES)._config(), rebuild=True)   # explicit rebuild: stacks gone
    assert not list(tmp_path.glob('*.npy')) and json.loads((tmp_path/'cache.json').read_text())['doses'] == list(SEEN_DOSES)


def test_nonfinite_or_float_stack_is_not_served(tmp_path):
    ds = phantom_dataset(2, 32, doses=SEEN_DOSES, cache_dir=tmp_path); ds.build_cache(progress=False)
    ref = ds[1]['ldct'].clone()
    p = ds.cache.path(ds.sources[0].key)
    np.save(p, np.full((5, 32, 32), np.nan, np.float32))                         # an old-format, non-finite stack
    assert ds.cache.load(ds.sources[0].key) is None
    assert torch.isfinite(ds[1]['ldct']).all() and (ds[1]['ldct'] - ref).abs().max() < 1e-6
    with pytest.raises(ValueError, match='NaN'): ds.cache.save('x', np.full((5, 32, 32), np.inf))


def test_cache_is_int16_and_compact(tmp_path):
    ds = phantom_dataset(2, 64, doses=DOSES, cache_dir=tmp_path); ds.build_cache(progress=False)
    a = ds.cache.load(ds.sources[0].key)
    assert a.dtype == np.int16 and a.shape == (9, 64, 64)
    assert ds.cache.path(ds.sources[0].key).stat().st_size < 9 * 64 * 64 * 2 + 200
    nc = phantom_dataset(2, 64, doses=DOSES, scale='hu')
    hu = phantom_dataset(2, 64, doses=DOSES, scale='hu', cache_dir=tmp_path)
    assert (hu[3]['ndct'] - nc[3]['ndct']).abs().max() <= 0.5 + 1e-3             # rounded to the HU, nothing else


def test_build_reports_slices_per_minute(tmp_path, capsys):
    ds = phantom_dataset(3, 32, doses=SEEN_DOSES, cache_dir=tmp_path)
    assert ds.build_cache(progress=True) == 3
    assert 'slices/minute' in capsys.readouterr().out


# ---- argument checks: type, the argument's name in the message, inputs untouched ----

A = np.zeros((16, 16), np.float32)
BAD = [
    (lambda: make_sample(A, A, 'x', 'chest'), TypeError, 'dose'),
    (lambda: make_sample(A, A, float('nan'), 'chest'), ValueError, 'dose'),
    (lambda: make_sample(A, A, 0.0, 'chest'), ValueError, 'dose'),
    (lambda: make_sample(A.astype(np.complex64), A, 0.5, 'chest'), TypeError, 'ldct'),
    (lambda: make_sample(A, np.full((16, 16), np.nan), 0.5, 'chest'), ValueError, 'ndct'),
    (lambda: make_sample(A, A[:8], 0.5, 'chest'), ValueError, 'ldct'),
    (lambda: make_sample(A, A, 0.5, 'knee'), ValueError, 'region'),
    (lambda: make_sample(A, A, 0.5, 'chest', scale='mu'), ValueError, 'scale'),
    (lambda: phantom_dataset(2.5, 32), TypeError, 'n'),
    (lambda: phantom_dataset(2, 4), ValueError, 'size'),
    (lambda: phantom_dataset(2, 32.0), TypeError, 'size'),
    (lambda: phantom_dataset(2, 32, seed=-1), ValueError, 'seed'),
    (lambda: phantom_dataset(2, 32, doses=(0.5, 'x')), TypeError, 'doses'),
    (lambda: phantom_dataset(2, 32, doses=(0.5, float('nan'))), ValueError, 'doses'),
    (lambda: phantom_dataset(2, 32, doses=(0.5, 0.2 + 1j)), TypeError, 'doses'),
    (lambda: phantom_dataset(2, 32, doses='0.5'), TypeError, 'doses'),
    (lambda: phantom_dataset(2, 32, doses=(0.5, 1.5)), ValueError, 'doses'),
    (lambda: get_dataloaders(batch_size=0), ValueError, 'batch_size'),
    (lambda: get_dataloaders(num_workers=-1), ValueError, 'num_workers'),
    (lambda: phantom_splits(n_train=0), ValueError, 'n_train'),
    (lambda: DoseCache('/nonexistent/x', 'doses'), TypeError, 'config'),
    (lambda: DoseCache('/nonexistent/x', {}), ValueError, 'doses'),
    (lambda: dose_images(size=2), ValueError, 'size'),
]


@pytest.mark.parametrize('call,exc,name', BAD, ids=[f"{i}-{b[2]}" for i, b in enumerate(BAD)])
def test_bad_arguments_named(call, exc, name):
    a0 = A.copy()
    with pytest.raises(exc) as e: call()
    assert name in str(e.value), str(e.value)
    np.testing.assert_array_equal(A, a0)                                          # inputs untouched


def test_paired_dataset_bad_dose_named(tmp_path):
    a = tmp_path/'a.npy'; np.save(a, np.zeros((16, 16), np.float32))
    for bad in ('half', float('nan'), 0.5j, True):
        with pytest.raises(ValueError, match='dose must be'): PairedDataset([(a, a, bad, 'chest')])


def test_phantom_cache_is_refused_after_the_drawing_changes(tmp_path, monkeypatch):
    import founddiff.data as D
    ds = phantom_dataset(3, 32, doses=[0.5], cache_dir=tmp_path)
    ds.build_cache(progress=False)
    assert json.loads((tmp_path / 'cache.json').read_text())['phantom_drawing'] == D.phantom_stamp()
    assert phantom_dataset(3, 32, doses=[0.5], cache_dir=tmp_path).build_cache(progress=False) == 0   # same code: served
    monkeypatch.setattr(D, 'phantom_stamp', lambda: 'other-drawing-00')               # as if founddiff.phantoms had changed
    with pytest.raises(ValueError, match='phantom_drawing differ'):
        phantom_dataset(3, 32, doses=[0.5], cache_dir=tmp_path)
