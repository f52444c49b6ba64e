"Bad input, codecs, round trips and layouts for founddiff.io (the notebook 01_io shows the same ideas)."
import hashlib, shutil, subprocess, sys, textwrap
from pathlib import Path
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid, RLELossless, JPEG2000Lossless

from founddiff.core import sample_path
from founddiff.io import (read_dicom, read_series, write_dicom, find_pairs, read_npy, read_slice,
                          CTReadError, MissingCodecError, HU_FLOOR)

SMALL, HEAD = sample_path('CT_small.dcm'), sample_path('693_UNCI.dcm')


def _sha(p): return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def _reference_hu(path):
    "HU by plain pydicom arithmetic, with our floor: the independent reference."
    ds = pydicom.dcmread(path)
    return np.maximum(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept), HU_FLOOR)


# ---------- reading good files ----------
@pytest.mark.parametrize('p', [SMALL, HEAD])
def test_read_matches_pydicom(p):
    img = read_dicom(p)
    assert img.hu.dtype == np.float32
    np.testing.assert_allclose(img.hu, _reference_hu(p), atol=1e-3)
    for k in ('pixel_spacing', 'slice_thickness', 'kvp', 'tube_current_ma', 'exposure_mas', 'ctdi_vol',
              'body_part', 'kernel', 'manufacturer'):
        assert k in img.meta
    assert img.meta['kvp'] > 0 and img.meta['pixel_spacing'][0] > 0


def test_read_does_not_modify_input(tmp_path):
    p = tmp_path / 'a.dcm'; shutil.copy(HEAD, p); h = _sha(p)
    read_dicom(p); read_series(tmp_path)
    assert _sha(p) == h


# ---------- bad input ----------
def test_not_dicom(tmp_path):
    p = tmp_path / 'x.dcm'; p.write_bytes(b'\x89PNG\r\n' + b'0' * 500)
    with pytest.raises(CTReadError, match=r'x\.dcm: not a DICOM file'): read_dicom(p)


def test_missing_file(tmp_path):
    with pytest.raises(CTReadError, match='no such file'): read_dicom(tmp_path / 'nope.dcm')


def test_folder_given_to_read_dicom(tmp_path):
    with pytest.raises(CTReadError, match='is a folder'): read_dicom(tmp_path)


@pytest.mark.parametrize('cut', [2000, 30000])
def test_truncated(tmp_path, cut):
    b = SMALL.read_bytes(); p = tmp_path / 't.dcm'; p.write_bytes(b[:len(b) - cut])
    with pytest.raises(CTReadError, match=r't\.dcm: .*truncated'): read_dicom(p)


def test_non_ct_refused_unless_asked(tmp_path):
    ds = pydicom.dcmread(SMALL); ds.Modality = 'MR'; p = tmp_path / 'mr.dcm'; ds.save_as(p)
    with pytest.raises(CTReadError, match=r"mr\.dcm: modality is 'MR'"): read_dicom(p)
    assert read_dicom(p, allow_non_ct=True).hu.shape == (128, 128)


def test_real_non_ct_file():
    from pydicom.data import get_testdata_file
    with pytest.raises(CTReadError, match="modality is 'MR'"): read_dicom(get_testdata_file('MR_small.dcm'))


def test_no_pixel_data(tmp_path):
    from pydicom.data import get_testdata_file
    with pytest.raises(CTReadError, match='modality'): read_dicom(get_testdata_file('rtplan.dcm'))
    with pytest.raises(CTReadError, match='no pixel data'): read_dicom(get_testdata_file('rtplan.dcm'), allow_non_ct=True)
    ds = pydicom.dcmread(SMALL); del ds.PixelData; p = tmp_path / 'np.dcm'; ds.save_as(p)
    with pytest.raises(CTReadError, match=r'np\.dcm: no pixel data'): read_dicom(p)


def test_multiframe_refused(tmp_path):
    ds = pydicom.dcmread(SMALL); a = ds.pixel_array
    ds.NumberOfFrames = 3; ds.PixelData = np.stack([a] * 3).tobytes()
    p = tmp_path / 'mf.dcm'; ds.save_as(p)
    with pytest.raises(CTReadError, match=r'mf\.dcm: multi-frame image with 3 frames'): read_dicom(p)


def test_real_multiframe_ct_refused():
    from pydicom.data import get_testdata_file
    p = get_testdata_file('eCT_Supplemental.dcm')
    with pytest.raises(CTReadError, match='multi-frame'): read_dicom(p)


def test_folder_without_ct(tmp_path):
    (tmp_path / 'a.txt').write_text('hi'); (tmp_path / 'b.dcm').write_bytes(b'junk' * 100)
    with pytest.raises(CTReadError, match='no CT DICOM files'): read_series(tmp_path)
    with pytest.raises(CTReadError, match='not a folder'): read_series(tmp_path / 'a.txt')


# ---------- compressed transfer syntaxes ----------
@pytest.mark.parametrize('ts', [RLELossless, JPEG2000Lossless])
def test_compressed_lossless_roundtrip(tmp_path, ts):
    ds = pydicom.dcmread(HEAD); ds.compress(ts); p = tmp_path / 'c.dcm'; ds.save_as(p)
    np.testing.assert_array_equal(read_dicom(p).hu, read_dicom(HEAD).hu)


@pytest.mark.filterwarnings('ignore:Invalid value for VR UI')  # that test file has non-conformant UIDs
def test_jpeg2000_and_jpeg_lossless_real_files():
    "Files compressed by other software: JPEG 2000 (693_J2KR) and JPEG Lossless (a CT neck slice)."
    from pydicom.data import get_testdata_file
    j2k = get_testdata_file('693_J2KR.dcm')
    assert 'JPEG 2000' in pydicom.dcmread(j2k, stop_before_pixels=True).file_meta.TransferSyntaxUID.name
    img = read_dicom(j2k); assert img.hu.shape == (512, 512) and np.isfinite(img.hu).all()
    jll = get_testdata_file('bad_sequence.dcm')  # CT, JPEG Lossless SV1 (decoded by python-gdcm)
    assert 'JPEG Lossless' in pydicom.dcmread(jll, stop_before_pixels=True).file_meta.TransferSyntaxUID.name
    img = read_dicom(jll); assert img.hu.shape == (512, 512)
    np.testing.assert_allclose(img.hu, _reference_hu(jll), atol=1e-3)


def test_missing_codec_names_package(tmp_path):
    "Hide every JPEG 2000 decoder in a fresh interpreter: the error must name the packages to install."
    ds = pydicom.dcmread(HEAD); ds.compress(JPEG2000Lossless); p = tmp_path / 'j2k.dcm'; ds.save_as(p)
    code = textwrap.dedent(f"""
        import sys
        for m in ('gdcm', 'openjpeg', 'PIL', 'pylibjpeg'): sys.modules[m] = None   # make the plugins unimportable
        from founddiff.io import read_dicom, MissingCodecError
        try: read_dicom({str(p)!r})
        except MissingCodecError as e: print('MISSING:', e); sys.exit(0)
        sys.exit('no MissingCodecError raised')
    """)
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr + r.stdout
    assert 'j2k.dcm' in r.stdout and 'pylibjpeg-openjpeg' in r.stdout and 'python-gdcm' in r.stdout


# ---------- writing ----------
def test_roundtrip_within_1hu_new_uids(tmp_path):
    src = tmp_path / 'src.dcm'; shutil.copy(HEAD, src); h = _sha(src)
    a = read_dicom(src)
    rng = np.random.default_rng(0)
    den = a.hu + rng.uniform(0, 40, a.hu.shape).astype(np.float32)
    out = write_dicom(den, src, tmp_path / 'out' / 'den.dcm', description='test')
    b = read_dicom(out)
    assert np.abs(b.hu - den).max() <= 0.5 + 1e-3
    assert _sha(src) == h
    assert b.meta['sop_instance_uid'] != a.meta['sop_instance_uid']
    assert b.meta['series_uid'] != a.meta['series_uid']
    assert b.meta['study_uid'] == a.meta['study_uid'] and b.meta['patient_id'] == a.meta['patient_id']
    ds = pydicom.dcmread(out)
    assert list(ds.ImageType)[:2] == ['DERIVED', 'SECONDARY'] and ds.SeriesDescription == 'test'
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == a.meta['sop_instance_uid']
    assert not list(tmp_path.glob('out/.*.tmp'))   # no temporary left behind


def test_write_from_compressed_reference(tmp_path):
    ds = pydicom.dcmread(HEAD); ds.compress(JPEG2000Lossless); ref = tmp_path / 'ref.dcm'; ds.save_as(ref)
    a = read_dicom(ref)
    b = read_dicom(write_dicom(a.hu, a, tmp_path / 'o.dcm'))
    np.testing.assert_allclose(b.hu, a.hu, atol=0.5)
    assert not pydicom.dcmread(tmp_path / 'o.dcm').file_meta.TransferSyntaxUID.is_compressed


def test_series_shares_uid(tmp_path):
    uid = generate_uid()
    for i in range(2):
        write_dicom(read_dicom(SMALL).hu, SMALL, tmp_path / f's{i}.dcm', series_uid=uid)
    assert {read_dicom(tmp_path / f's{i}.dcm').meta['series_uid'] for i in range(2)} == {uid}


def test_write_refuses_bad_input(tmp_path):
    src = tmp_path / 'src.dcm'; shutil.copy(SMALL, src); h = _sha(src)
    hu = read_dicom(src).hu
    with pytest.raises(ValueError, match='refusing to write over'): write_dicom(hu, src, src, overwrite=True)
    with pytest.raises(ValueError, match='refusing to write over'): write_dicom(hu, src, src)
    (tmp_path / 'exists.dcm').write_bytes(b'x')
    with pytest.raises(FileExistsError, match='exists'): write_dicom(hu, src, tmp_path / 'exists.dcm')
    with pytest.raises(ValueError, match='NaN'): write_dicom(np.full_like(hu, np.nan), src, tmp_path / 'n.dcm')
    with pytest.raises(ValueError, match='one slice'): write_dicom(hu[None], src, tmp_path / 'n.dcm')
    with pytest.raises(ValueError, match='differs'): write_dicom(hu[:64], src, tmp_path / 'n.dcm')
    with pytest.raises(ValueError, match='16-bit'): write_dicom(hu + 40000, src, tmp_path / 'n.dcm')
    assert _sha(src) == h and not (tmp_path / 'n.dcm').exists()


# ---------- series ----------
def _write_series(folder, zs, uid=None, shape_from=SMALL):
    folder.mkdir(parents=True, exist_ok=True); uid = uid or generate_uid()
    for i, z in enumerate(zs):
        d = pydicom.dcmread(shape_from); d.SeriesInstanceUID = uid; d.SOPInstanceUID = generate_uid()
        d.ImagePositionPatient = [0.0, 0.0, float(z)]; d.InstanceNumber = i + 1
        d.save_as(folder / f'{i}.dcm')
    return uid


def test_series_sorted_by_position(tmp_path):
    _write_series(tmp_path / 's', [5, -5, 0, 10])
    v = read_series(tmp_path / 's')
    assert v.hu.shape == (4, 128, 128) and v.meta['positions'] == [-5, 0, 5, 10] and v.meta['slice_spacing'] == 5


def test_series_mixed_refused(tmp_path):
    _write_series(tmp_path / 's', [0, 1]); _write_series(tmp_path / 's2', [2]); shutil.copy(tmp_path / 's2' / '0.dcm', tmp_path / 's' / 'x.dcm')
    with pytest.raises(CTReadError, match='mixed series'): read_series(tmp_path / 's')


def test_series_mixed_sizes_refused(tmp_path):
    uid = _write_series(tmp_path / 's', [0, 1])
    _write_series(tmp_path / 's', [2], uid=uid, shape_from=HEAD)  # overwrites 0.dcm with a 512x512 slice
    with pytest.raises(CTReadError, match='different sizes'): read_series(tmp_path / 's')


# ---------- layouts ----------
def test_mayo2020_layout(tmp_path):
    for pat, n in (('C002', 2), ('L004', 3), ('N005', 1)):
        study = tmp_path / 'LDCT-and-Projection-data' / pat / '12-23-2021-NA-NA-62464'
        _write_series(study / '1.000000-Full Dose Images-34670', range(n))
        _write_series(study / '1.000000-Low Dose Images-12345', range(n))
    pairs = find_pairs(tmp_path)
    assert len(pairs) == 6
    by = {p.patient: p for p in pairs}
    assert (by['C002'].dose, by['C002'].region) == (0.10, 'chest')
    assert (by['L004'].dose, by['L004'].region) == (0.25, 'abdomen')
    assert (by['N005'].dose, by['N005'].region) == (0.25, 'head')
    assert all('Low Dose' in str(p.ldct) and 'Full Dose' in str(p.ndct) for p in pairs)


def test_mayo2016_unequal_counts(tmp_path):
    _write_series(tmp_path / 'L067' / 'full_1mm', [0, 1, 2]); _write_series(tmp_path / 'L067' / 'quarter_1mm', [0, 1])
    with pytest.raises(CTReadError, match='cannot pair'): find_pairs(tmp_path)


def test_npy(tmp_path):
    p = tmp_path / 'a.npy'; np.save(p, np.full((1, 4, 4), 1024, np.int16))
    assert read_slice(p, offset=1024).hu.shape == (4, 4) and (read_npy(p, offset=1024).hu == 0).all()
    np.save(tmp_path / 'b.npy', np.zeros((2, 4, 4))); np.save(tmp_path / 'c.npy', np.full((4, 4), np.nan))
    with pytest.raises(CTReadError, match='one slice'): read_npy(tmp_path / 'b.npy')
    with pytest.raises(CTReadError, match='NaN'): read_npy(tmp_path / 'c.npy')


# ---------- options and corrections that come with the bad-input checks ----------
def _no_rescale(tmp_path):
    ds = pydicom.dcmread(SMALL); del ds.RescaleSlope, ds.RescaleIntercept; p = tmp_path / 'nr.dcm'; ds.save_as(p)
    return p, pydicom.dcmread(SMALL).pixel_array.astype(np.float64)


def test_missing_rescale_is_an_error_unless_told(tmp_path):
    p, stored = _no_rescale(tmp_path)
    with pytest.raises(CTReadError, match=r"nr\.dcm: RescaleSlope and RescaleIntercept missing.*missing_rescale="): read_dicom(p)
    np.testing.assert_array_equal(read_dicom(p, missing_rescale='assume-hu', hu_floor=None).hu, stored)
    np.testing.assert_array_equal(read_dicom(p, missing_rescale='raw-minus-1024', hu_floor=None).hu, stored - 1024)
    # with the right assumption we get exactly what the intact file gives
    np.testing.assert_array_equal(read_dicom(p, missing_rescale='raw-minus-1024').hu, read_dicom(SMALL).hu)


def test_non_ct_without_rescale_is_identity(tmp_path):
    ds = pydicom.dcmread(SMALL); ds.Modality = 'MR'; del ds.RescaleSlope, ds.RescaleIntercept; p = tmp_path / 'mr.dcm'; ds.save_as(p)
    img = read_dicom(p, allow_non_ct=True, hu_floor=None)
    np.testing.assert_array_equal(img.hu, ds.pixel_array.astype(np.float32)); assert img.meta['rescale'] == 'identity (not CT)'


def test_pixel_spacing_checked(tmp_path):
    ds = pydicom.dcmread(SMALL); ds.PixelSpacing = [0, 0.5]; p = tmp_path / 'ps.dcm'; ds.save_as(p)
    with pytest.raises(CTReadError, match=r'ps\.dcm: PixelSpacing'): read_dicom(p)


@pytest.mark.filterwarnings('ignore:Invalid value for VR UI')  # that test file has non-conformant UIDs
def test_jpeg_lossless_stream_wider_than_bits_stored_matches_pydicom():
    "bad_sequence.dcm: a 16-bit JPEG stream with BitsStored 12 is decoded unmasked, checked, then masked as pydicom does."
    from pydicom.data import get_testdata_file
    p = get_testdata_file('bad_sequence.dcm')
    np.testing.assert_allclose(read_dicom(p).hu, _reference_hu(p), atol=1e-3)


@pytest.mark.parametrize('folder,want', [('sim-0.33', 1 / 3), ('sim-0.17', 1 / 6), ('sim-0.12', 1 / 8), ('sim-0.25', 1 / 4),
                                         ('sim-0.10', 1 / 10), ('dose_0.05', 1 / 20), ('sim-0.7', 0.7), ('sim-1', 1.0)])
def test_npy_dose_snapping(tmp_path, folder, want):
    "A dose written with two decimals is 1/n when within 5 % of it (reference: the exact fraction)."
    for d in ('full_1mm', folder):
        (tmp_path / 'p' / d).mkdir(parents=True); np.save(tmp_path / 'p' / d / 'ab_000.npy', np.zeros((4, 4)))
    (pair,) = find_pairs(tmp_path)
    assert pair.dose == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize('prefix,region,want', [('lung', 'chest', 0.10), ('chest', 'chest', 0.10), ('ab', 'abdomen', 0.25),
                                                ('head', 'head', 0.25), ('x', None, 0.25)])
def test_npy_quarter_dose_by_region(tmp_path, prefix, region, want):
    "FoundDiff's .npy layout: quarter_1mm holds Mayo 2020's low-dose scans, 10 % for the chest, 25 % otherwise."
    for d in ('full_1mm', 'quarter_1mm'):
        (tmp_path / 'p' / d).mkdir(parents=True); np.save(tmp_path / 'p' / d / f'{prefix}_000.npy', np.zeros((4, 4)))
    (pair,) = find_pairs(tmp_path)
    assert (pair.dose, pair.region) == (want, region)


def test_mayo2016_npy_quarter_chest(tmp_path):
    "The same rule where quarter_1mm/full_1mm sit in a Mayo 2016-like patient folder."
    for d in ('full_1mm', 'quarter_1mm'):
        (tmp_path / 'C001' / d).mkdir(parents=True)
        for n in ('lung_000.npy', 'lung_001.npy'): np.save(tmp_path / 'C001' / d / n, np.zeros((4, 4)))
    assert {p.dose for p in find_pairs(tmp_path)} == {0.10}


def test_write_unicode_description_survives(tmp_path):
    out = write_dicom(read_dicom(SMALL).hu, SMALL, tmp_path / 'u.dcm', description='débruité, 低剂量')
    ds = pydicom.dcmread(out)
    assert ds.SeriesDescription == 'débruité, 低剂量' and ds.SpecificCharacterSet == 'ISO_IR 192'
    assert str(ds.PatientName) == str(pydicom.dcmread(SMALL).PatientName)


@pytest.mark.skipif(not hasattr(__import__('os'), 'fork'), reason='needs fork')
@pytest.mark.filterwarnings('ignore::DeprecationWarning')   # "fork() in a multi-threaded process"
def test_decoder_helper_survives_fork_and_threads():
    "The compressed-pixel helper process: a forked child (a DataLoader worker) gets its own; threads take turns."
    import os, threading
    from pydicom.data import get_testdata_file
    p = get_testdata_file('693_J2KR.dcm'); a = read_dicom(p).hu
    pid = os.fork()
    if pid == 0: os._exit(0 if np.array_equal(read_dicom(p).hu, a) else 3)
    np.testing.assert_array_equal(read_dicom(p).hu, a)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    res = []
    ts = [threading.Thread(target=lambda: res.append(np.array_equal(read_dicom(p).hu, a))) for _ in range(3)]
    for t in ts: t.start()
    for t in ts: t.join()
    assert res == [True] * 3


def test_deflated_roundtrip(tmp_path):
    ds = pydicom.dcmread(SMALL); ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    p = tmp_path / 'd.dcm'; ds.save_as(p, enforce_file_format=True)
    np.testing.assert_array_equal(read_dicom(p).hu, read_dicom(SMALL).hu)
