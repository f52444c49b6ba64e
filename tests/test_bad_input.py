"""Bad input at every public door we own (io, phantoms, core, the command line).

Each case builds one damaged or unusual input in a fresh folder, calls one entry point, and checks four things:
the exception type, that the message names the file or the argument, that every input (files hashed before, arrays
copied before) is unchanged, and that nothing was left behind (no partial output, no temporary file). Cases that
once killed the interpreter (a codec abort) or hung it (a named pipe) run in a subprocess with a timeout.
"""
import hashlib, io, os, shutil, stat, subprocess, sys, textwrap
from pathlib import Path
import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import generate_uid, RLELossless, JPEG2000Lossless

from founddiff.core import (sample_path, show_ct, hu_to_unit, unit_to_hu, get_window, Window, atomic_write, get_device,
                            seed_everything, as_generator, check_number, check_choice, check_finite, check_path)
from founddiff.io import (ct_metadata, read_dicom, read_series, read_slice, read_npy, write_dicom, find_pairs, CTReadError,
                          MissingCodecError)
from founddiff.phantoms import phantom, rasterize, add_texture, Ellipse
from founddiff.cli import main

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning:pydicom')   # the damaged files make pydicom grumble

SMALL, HEAD = sample_path('CT_small.dcm'), sample_path('693_UNCI.dcm')
JLL = Path(get_testdata_file('bad_sequence.dcm'))   # a real CT slice compressed as JPEG Lossless (decoded by gdcm)
J2K = Path(get_testdata_file('693_J2KR.dcm'))       # a real CT slice compressed as JPEG 2000
MR = Path(get_testdata_file('MR_small.dcm'))


# ---------------------------------------------------------------- the harness
def _tree(root: Path) -> dict:
    "Every entry under `root`: files by content hash, folders and special files by kind (never opened)."
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = Path(dirpath) / n; st = os.lstat(p)
            key = str(p.relative_to(root))
            if stat.S_ISREG(st.st_mode): out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif stat.S_ISDIR(st.st_mode): out[key] = 'dir'
            else: out[key] = f'special {stat.S_IFMT(st.st_mode)}'
    return out


def _expect(call, exc, names, tmp_path, arrays=(), match=None):
    "Call; check the exception type, that the message holds every string in `names`, inputs and folder unchanged."
    before, copies = _tree(tmp_path), [a.clone() if isinstance(a, torch.Tensor) else np.array(a, copy=True) for a in arrays]
    with pytest.raises(exc) as ei: call()
    msg = str(ei.value)
    for n in names: assert str(n) in msg, f"message does not name {n!r}: {msg}"
    if match: assert match.lower() in msg.lower(), f"message does not say {match!r}: {msg}"
    assert _tree(tmp_path) == before, "an input was modified or a (partial) output was left behind"
    for a, c in zip(arrays, copies):
        if isinstance(a, torch.Tensor): torch.testing.assert_close(a, c, rtol=0, atol=0, equal_nan=True, msg='input tensor modified')
        else: np.testing.assert_array_equal(a, c, err_msg='input array modified')
    return msg


# ---------------------------------------------------------------- building damaged files
def _save(ds, p):
    ds.save_as(p, enforce_file_format=False); return p


def _edit(src, **kw):
    "A copy of `src` (path) with header elements set (None deletes)."
    ds = pydicom.dcmread(src)
    for k, v in kw.items():
        if v is None: delattr(ds, k) if k in ds else None
        else: setattr(ds, k, v)
    return ds


def _raw_ds(ds, keyword, text):
    "Set a DS element to arbitrary text (pydicom would refuse e.g. 'abc' through the normal setter)."
    tag = pydicom.datadict.tag_for_keyword(keyword)
    ds[tag] = DataElement(tag, 'DS', '1'); ds[tag]._value = text
    return ds


def _encaps_frame(src):
    ds = pydicom.dcmread(src)
    return ds, next(generate_frames(ds.PixelData, number_of_frames=1))


def _trunc(src, where):
    b = Path(src).read_bytes()
    if where == 'preamble': return b[:100]
    if where == 'meta': return b[:150]
    if where == 'before_modality': return b[:b.find(b'\x08\x00\x60\x00')]      # cut just before (0008,0060) Modality
    if where == 'element_header': i = b.find(b'\x28\x00\x10\x00'); return b[:i + 3]   # inside Rows' header
    if where == 'pixel_header': i = b.find(b'\xe0\x7f\x10\x00'); return b[:i + 6]     # inside PixelData's header
    if where == 'pixels_early': i = b.find(b'\xe0\x7f\x10\x00'); return b[:i + 200]
    if where == 'pixels_late': return b[:len(b) - 1000]
    if where == 'last_byte': return b[:-1]
    raise ValueError(where)


def _make(tmp, kind):
    "Build one damaged input in folder `tmp`; return its path. `kind` names the damage."
    p = tmp / f'{kind}.dcm'
    if kind == 'empty': p.write_bytes(b''); return p
    if kind == 'text': p.write_text('patient notes, not an image\n' * 40); return p
    if kind == 'png': p.write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(range(256)) * 8); return p
    if kind == 'zeros': p.write_bytes(bytes(4096)); return p
    if kind == 'dicm_only': p.write_bytes(bytes(128) + b'DICM'); return p
    if kind.startswith('trunc_'): p.write_bytes(_trunc(SMALL, kind[6:])); return p
    if kind.startswith('jtrunc_'): p.write_bytes(_trunc(JLL, kind[7:])); return p
    if kind == 'rows_plus': return _save(_edit(SMALL, Rows=129), p)
    if kind == 'rows_minus': return _save(_edit(SMALL, Rows=127), p)
    if kind == 'cols_minus': return _save(_edit(SMALL, Columns=127), p)   # was a sheared image
    if kind == 'rows_zero': return _save(_edit(SMALL, Rows=0), p)
    if kind == 'rows_huge': return _save(_edit(SMALL, Rows=60000, Columns=60000), p)
    if kind == 'rows_missing': return _save(_edit(SMALL, Rows=None), p)
    if kind == 'ba_missing': return _save(_edit(SMALL, BitsAllocated=None), p)
    if kind == 'ba8': return _save(_edit(SMALL, BitsAllocated=8, BitsStored=8, HighBit=7), p)   # was HU in [-128, 127]
    if kind == 'ba32': return _save(_edit(SMALL, BitsAllocated=32, BitsStored=32, HighBit=31), p)
    if kind == 'ba12': return _save(_edit(SMALL, BitsAllocated=12), p)
    if kind == 'bs8': return _save(_edit(SMALL, BitsStored=8, HighBit=7), p)    # values need 12 bits: was masked
    if kind == 'bs24': return _save(_edit(SMALL, BitsStored=24, HighBit=23), p)
    if kind == 'highbit': return _save(_edit(SMALL, HighBit=7), p)
    if kind == 'spp3': return _save(_edit(SMALL, SamplesPerPixel=3), p)
    if kind == 'rgb': return _save(_edit(SMALL, PhotometricInterpretation='RGB'), p)
    if kind == 'pixrep2': return _save(_edit(SMALL, PixelRepresentation=2), p)
    if kind == 'no_rescale': return _save(_edit(SMALL, RescaleSlope=None, RescaleIntercept=None), p)
    if kind == 'no_intercept': return _save(_edit(SMALL, RescaleIntercept=None), p)
    if kind in ('slope_nan', 'slope_inf', 'slope_1e36', 'slope_0', 'slope_neg', 'slope_abc', 'inter_1e36', 'inter_nan'):
        kw = 'RescaleSlope' if kind.startswith('slope') else 'RescaleIntercept'
        text = {'nan': 'NaN', 'inf': 'inf', '1e36': '1e36', '0': '0', 'neg': '-1', 'abc': 'abc'}[kind.split('_')[1]]
        return _save(_raw_ds(pydicom.dcmread(SMALL), kw, text), p)
    if kind == 'pixrep_flip': return _save(_edit(HEAD, PixelRepresentation=0, PixelPaddingValue=None), p)   # signed read as unsigned
    if kind == 'slope_20': return _save(_raw_ds(pydicom.dcmread(SMALL), 'RescaleSlope', '20'), p)           # HU up to 42796
    if kind == 'deflate_trunc':
        ds = pydicom.dcmread(SMALL); ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
        ds.save_as(p, enforce_file_format=True); p.write_bytes(p.read_bytes()[:-2000]); return p
    if kind == 'mr': return _save(_edit(SMALL, Modality='MR'), p)
    if kind == 'no_modality': return _save(_edit(SMALL, Modality=None), p)
    if kind == 'no_pixels': return _save(_edit(SMALL, PixelData=None), p)
    if kind == 'frames0': return _save(_edit(SMALL, NumberOfFrames=0), p)
    if kind == 'multiframe':
        ds = pydicom.dcmread(SMALL); ds.NumberOfFrames = 2; ds.PixelData = ds.PixelData * 2; return _save(ds, p)
    if kind == 'unknown_ts':
        ds = pydicom.dcmread(SMALL); ds.file_meta.TransferSyntaxUID = '1.2.3.4.5'; return _save(ds, p)
    if kind == 'no_tsyntax_compressed':
        ds = pydicom.dcmread(JLL); p.write_bytes(b''); fp = io.BytesIO()
        pydicom.filewriter.dcmwrite(fp, ds, enforce_file_format=False)   # then drop (0002,0010) from the meta bytes
        b = fp.getvalue(); i = b.find(b'\x02\x00\x10\x00'); n = int.from_bytes(b[i + 6:i + 8], 'little')
        meta_len_at = b.find(b'\x02\x00\x00\x00') + 8
        ml = int.from_bytes(b[meta_len_at:meta_len_at + 4], 'little') - (8 + n)
        b = b[:meta_len_at] + ml.to_bytes(4, 'little') + b[meta_len_at + 4:i] + b[i + 8 + n:]
        p.write_bytes(b); return p
    if kind == 'pad_garbage':
        ds = pydicom.dcmread(SMALL); ds['PixelPaddingValue'] = DataElement(0x00280120, 'SS', [1, 2]); return _save(ds, p)
    if kind == 'jll_ba32': return _save(_edit(JLL, BitsAllocated=32), p)        # gdcm aborted the interpreter
    if kind == 'jll_ba64': return _save(_edit(JLL, BitsAllocated=64), p)
    if kind == 'j2k_rgb': return _save(_edit(J2K, PhotometricInterpretation='RGB'), p)   # gdcm aborted too
    if kind == 'jll_rows': return _save(_edit(JLL, Rows=511), p)
    if kind == 'jll_bs8': return _save(_edit(JLL, BitsStored=8, HighBit=7), p)
    if kind == 'jll_gdcm_abort':   # one byte of the Huffman table changed: GDCM calls abort() on this stream
        ds, fr = _encaps_frame(JLL); b = bytearray(fr); b[33] = 0x82; ds.PixelData = encapsulate([bytes(b)]); return _save(ds, p)
    if kind in ('jll_corrupt', 'j2k_corrupt', 'rle_corrupt', 'jll_nosof', 'rle_cols', 'encaps_garbage'):
        if kind.startswith('rle'):
            ds = pydicom.dcmread(HEAD); ds.compress(RLELossless)
            if kind == 'rle_cols': ds.Columns = 511; return _save(ds, p)
            fr = next(generate_frames(ds.PixelData, number_of_frames=1))
        elif kind == 'encaps_garbage':
            ds = pydicom.dcmread(JLL)   # an empty offset table, then a fragment that claims 100000 bytes and holds 8
            ds.PixelData = b'\xfe\xff\x00\xe0' + bytes(4) + b'\xfe\xff\x00\xe0' + (100000).to_bytes(4, 'little') + bytes(8); return _save(ds, p)
        else: ds, fr = _encaps_frame(JLL if kind.startswith('jll') else J2K)
        b = bytearray(fr)
        if kind == 'jll_nosof': b[:2] = b'\x00\x00'
        else: b = b[:len(b) // 3]
        if len(b) % 2: b += b'\0'
        ds.PixelData = encapsulate([bytes(b)]); return _save(ds, p)
    raise ValueError(kind)


# ---------------------------------------------------------------- read_dicom: damaged files
READ_CASES = [  # (kind, words the message must hold besides the file name)
    ('empty', 'empty'), ('text', 'not a DICOM file'), ('png', 'not a DICOM file'), ('zeros', 'not a DICOM'),
    ('dicm_only', ''), ('trunc_preamble', 'truncated'), ('trunc_meta', 'truncated'),
    ('trunc_before_modality', 'truncated'), ('trunc_element_header', 'truncated'), ('trunc_pixel_header', 'truncated'),
    ('trunc_pixels_early', 'truncated'), ('trunc_pixels_late', 'truncated'), ('trunc_last_byte', 'truncated'),
    ('jtrunc_pixels_early', 'truncated'), ('deflate_trunc', 'truncated'), ('jtrunc_pixels_late', 'truncated'),
    ('rows_plus', 'Rows'), ('rows_minus', 'Rows'), ('cols_minus', 'Columns'), ('rows_zero', 'Rows'), ('rows_huge', 'Rows'),
    ('rows_missing', 'Rows'), ('ba_missing', 'BitsAllocated'), ('ba8', 'BitsAllocated'), ('ba32', 'BitsAllocated'),
    ('ba12', 'BitsAllocated'), ('bs8', 'BitsStored'), ('bs24', 'BitsStored'), ('highbit', 'HighBit'),
    ('spp3', 'SamplesPerPixel'), ('rgb', 'PhotometricInterpretation'), ('pixrep2', 'PixelRepresentation'),
    ('no_rescale', 'missing_rescale'), ('no_intercept', 'RescaleIntercept'), ('slope_nan', 'RescaleSlope'),
    ('slope_inf', 'RescaleSlope'), ('slope_1e36', 'RescaleSlope'), ('slope_0', 'RescaleSlope'),
    ('slope_neg', 'RescaleSlope'), ('slope_abc', 'RescaleSlope'), ('inter_1e36', 'RescaleIntercept'),
    ('inter_nan', 'RescaleIntercept'), ('pixrep_flip', 'BitsStored'), ('slope_20', 'impossible for CT'), ('mr', "modality is 'MR'"), ('no_modality', 'Modality'),
    ('no_pixels', 'no pixel data'), ('frames0', 'NumberOfFrames'), ('multiframe', 'multi-frame'),
    ('unknown_ts', 'transfer syntax'), ('no_tsyntax_compressed', 'TransferSyntaxUID'), ('pad_garbage', 'PixelPaddingValue'),
    ('jll_rows', 'Rows'), ('jll_bs8', 'BitsStored'), ('jll_corrupt', 'corrupt'), ('j2k_corrupt', 'corrupt'),
    ('rle_corrupt', 'corrupt'), ('jll_nosof', 'corrupt'), ('rle_cols', 'Columns'), ('encaps_garbage', 'corrupt'),
]


@pytest.mark.parametrize('kind,words', READ_CASES, ids=[k for k, _ in READ_CASES])
def test_read_dicom_damaged(tmp_path, kind, words):
    p = _make(tmp_path, kind)
    msg = _expect(lambda: read_dicom(p), CTReadError, [p], tmp_path, match=words or None)
    assert 'missing codec' not in msg.lower() and 'install' not in msg.lower()   # damage is never blamed on a codec


@pytest.mark.parametrize('kind', ['rows_plus', 'trunc_pixels_late', 'no_rescale', 'jll_corrupt'])
def test_read_slice_and_series_say_the_same(tmp_path, kind):
    "read_slice goes through the same checks; a series holding the damaged slice refuses it, naming it."
    p = _make(tmp_path, kind)
    _expect(lambda: read_slice(p), CTReadError, [p], tmp_path)
    _expect(lambda: read_series(tmp_path), CTReadError, [p.name, tmp_path], tmp_path)


@pytest.mark.parametrize('call,exc,name', [
    (lambda: read_dicom(None), TypeError, 'path'), (lambda: read_dicom(42), TypeError, 'path'),
    (lambda: read_dicom(''), ValueError, 'path'), (lambda: read_dicom(SMALL, hu_floor=float('nan')), ValueError, 'hu_floor'),
    (lambda: read_dicom(SMALL, missing_rescale='guess'), ValueError, 'missing_rescale'),
    (lambda: read_dicom(SMALL, allow_non_ct='yes'), TypeError, 'allow_non_ct'),
    (lambda: read_series(SMALL.parent, skip_bad='no'), TypeError, 'skip_bad'),
    (lambda: read_series(SMALL.parent, series_uid='1.02.x'), ValueError, 'series_uid'),
])
def test_read_arguments(tmp_path, call, exc, name):
    _expect(call, exc, [name], tmp_path)


def test_missing_file_and_folder(tmp_path):
    _expect(lambda: read_dicom(tmp_path / 'nope.dcm'), CTReadError, ['nope.dcm', 'no such file'], tmp_path)
    _expect(lambda: read_dicom(tmp_path), CTReadError, [tmp_path, 'folder'], tmp_path)
    _expect(lambda: read_series(tmp_path / 'nope'), CTReadError, ['nope', 'not a folder'], tmp_path)


# ---------------------------------------------------------------- cases that killed or hung the interpreter
# They run in one child interpreter (importing torch once costs seconds), one case at a time with the result
# flushed after each, so an abort or a hang fails exactly the case that caused it (and those after it).
ISOLATED = [('jll_gdcm_abort', 'read_dicom', 'decoder crashed'), ('jll_good', 'read_dicom', ''),
            ('jll_ba32', 'read_dicom', 'BitsAllocated'), ('jll_ba64', 'read_dicom', 'BitsAllocated'),
            ('j2k_rgb', 'read_dicom', 'PhotometricInterpretation'), ('pipe.dcm', 'read_dicom', 'named pipe'),
            ('pipe.npy', 'read_slice', 'named pipe'), ('pipe.npy', 'read_npy', 'named pipe'), ('series_pipe', 'read_series', ''),
            ('/dev/zero', 'read_dicom', 'is a device'), ('/dev/zero', 'read_npy', 'is a device'),
            ('pipe.nii', 'read_nifti', 'named pipe'), ('pipe.safetensors', 'load_weights', 'pipe.safetensors')]


@pytest.fixture(scope='module')
def isolated(tmp_path_factory):
    "Build every isolated case, run them all in a child interpreter (90 s limit); {case: (printed line, files before)}."
    t = tmp_path_factory.mktemp('isolated'); paths = {}
    for kind, _, _ in ISOLATED:
        if kind.startswith('pipe'):
            if hasattr(os, 'mkfifo') and not (t / kind).exists(): os.mkfifo(t / kind)
            paths[kind] = t / kind
        elif kind == 'series_pipe':
            d = t / 'ser'; d.mkdir(); shutil.copy(SMALL, d / 'a.dcm')
            if hasattr(os, 'mkfifo'): os.mkfifo(d / 'b.dcm')
            paths[kind] = d
        elif kind == 'jll_good': paths[kind] = JLL
        elif kind.startswith('/dev/'): paths[kind] = Path(kind)
        else: paths[kind] = _make(t, kind)
    before = _tree(t)
    code = textwrap.dedent("""
        import sys
        from founddiff import io, data, core
        for i, (p, fn) in enumerate(zip(sys.argv[1::2], sys.argv[2::2])):
            f = {'read_nifti': data.read_nifti,
                 'load_weights': lambda p: core.load_weights(p, format='founddiff.dadiff', version=1)}.get(fn) or getattr(io, fn)
            try: r = f(p); print(i, 'READ', getattr(r, 'shape', None), flush=True)
            except (io.CTReadError, FileNotFoundError, ValueError) as e: print(i, 'REFUSED', ' '.join(str(e).split()), flush=True)
    """)
    args = [x for kind, fn, _ in ISOLATED for x in (str(paths[kind]), fn)]
    try:
        r = subprocess.run([sys.executable, '-c', code, *args], capture_output=True, text=True, timeout=90)
        out, err = r.stdout, f"status {r.returncode}: {r.stderr[-600:]}"
    except subprocess.TimeoutExpired as e:
        out, err = (e.stdout or b'').decode() if isinstance(e.stdout, bytes) else (e.stdout or ''), 'TIMEOUT (hang)'
    lines = {int(l.split(' ', 1)[0]): l.split(' ', 1)[1] for l in out.splitlines() if l.split(' ', 1)[0].isdigit()}
    return dict(lines=lines, err=err, paths=paths, before=before, root=t)


@pytest.mark.parametrize('i', range(len(ISOLATED)), ids=[f"{k}-{f}" for k, f, _ in ISOLATED])
def test_abort_and_hang_cases_isolated(isolated, i):
    kind, fn, words = ISOLATED[i]
    if 'pipe' in kind and not hasattr(os, 'mkfifo'): pytest.skip('no named pipes on this system')
    if kind.startswith('/dev/') and not Path(kind).exists(): pytest.skip(f'no {kind} here')
    line = isolated['lines'].get(i)
    assert line is not None, f"the child interpreter died or hung at or before this case: {isolated['err']}"
    if kind == 'series_pipe': assert line == 'READ (1, 128, 128)', line   # the pipe is never opened, never a slice
    elif kind == 'jll_good': assert line == 'READ (512, 512)', line        # the decoder helper restarted after the crash
    else: assert line.startswith('REFUSED') and str(isolated['paths'][kind]) in line and words in line, line
    assert _tree(isolated['root']) == isolated['before']


# ---------------------------------------------------------------- read_series
def _series(folder, zs, src=SMALL, uid=None, **edit):
    folder.mkdir(parents=True, exist_ok=True); uid = uid or generate_uid()
    for i, z in enumerate(zs):
        d = pydicom.dcmread(src); d.SeriesInstanceUID = uid; d.SOPInstanceUID = generate_uid()
        d.ImagePositionPatient = [0.0, 0.0, float(z)]; d.InstanceNumber = i + 1
        for k, v in edit.items():
            if v is None: delattr(d, k)
            else: setattr(d, k, v)
        d.save_as(folder / f'{i:03d}.dcm')
    return uid


def _retag(p, **kw):
    d = pydicom.dcmread(p)
    for k, v in kw.items(): setattr(d, k, v)
    d.save_as(p)


@pytest.mark.parametrize('build,words', [
    (lambda f: _series(f, [0, 1, 1, 2]), 'duplicate slice position'),
    (lambda f: _series(f, [0, 0]), 'duplicate slice position'),
    (lambda f: _series(f, [0, 1], ImagePositionPatient=None, InstanceNumber=None), 'neither ImagePositionPatient nor InstanceNumber'),
    (lambda f: (_series(f, [0, 1], ImagePositionPatient=None, InstanceNumber=None), _retag(f / '000.dcm', InstanceNumber=1)), 'neither'),
    (lambda f: _series(f, [0, 1], ImageOrientationPatient=[1, 0, 0, 1, 0, 0]), 'ImageOrientationPatient'),
    (lambda f: _series(f, [0, 1], ImageOrientationPatient=[1, 0, 0]), 'ImageOrientationPatient'),
    (lambda f: (_series(f, [0, 1]), (f / '001.dcm').write_bytes((f / '001.dcm').read_bytes()[:-3000])), 'damaged slice 001.dcm'),
    (lambda f: (_series(f, [0, 1]), _raw_ds(pydicom.dcmread(f / '001.dcm'), 'RescaleSlope', 'NaN').save_as(f / '001.dcm')), 'damaged slice 001.dcm'),
    (lambda f: (_series(f, [0, 1]), _series(f, [5], uid=None)), 'mixed series'),
    (lambda f: None, 'no CT DICOM files'),
    (lambda f: (f.mkdir(exist_ok=True), shutil.copy(MR, f / 'mr.dcm')), 'no CT DICOM files'),
])
def test_read_series_refuses(tmp_path, build, words):
    f = tmp_path / 'ser'; f.mkdir(); build(f)
    _expect(lambda: read_series(f), CTReadError, [f, words], tmp_path)


def test_read_series_mixed_position_sources(tmp_path):
    f = tmp_path / 's'; _series(f, [0, 1, 2])
    d = pydicom.dcmread(f / '002.dcm'); del d.ImagePositionPatient; d.save_as(f / '002.dcm')
    _expect(lambda: read_series(f), CTReadError, [f, 'InstanceNumber'], tmp_path)


def test_read_series_skip_bad_reports_what_it_skipped(tmp_path):
    f = tmp_path / 's'; _series(f, [0, 1, 1, 2, 3])
    b = (f / '004.dcm').read_bytes(); (f / '004.dcm').write_bytes(b[:-2000])   # the slice at z=3 is truncated
    h = _tree(tmp_path)
    with pytest.warns(UserWarning, match='skipped 2 slices'):
        v = read_series(f, skip_bad=True)
    assert v.hu.shape[0] == 3 and v.meta['positions'] == [0, 1, 2] and v.meta['slice_spacing'] == 1.0
    assert sorted(n for n, _ in v.meta['skipped']) == ['002.dcm', '004.dcm']
    assert 'duplicate' in dict(v.meta['skipped'])['002.dcm'] and 'truncated' in dict(v.meta['skipped'])['004.dcm']
    assert _tree(tmp_path) == h


def test_series_spacing_never_zero(tmp_path):
    "One slice whose SliceThickness is 0, and a series ordered by InstanceNumber only: spacing is None, never 0."
    f = tmp_path / 'one'; _series(f, [0], SliceThickness=0)
    assert read_series(f).meta['slice_spacing'] is None
    g = tmp_path / 'inst'; _series(g, [0, 1, 2], ImagePositionPatient=None, SliceThickness=None)
    v = read_series(g)
    assert v.meta['position_source'] == 'InstanceNumber' and v.meta['slice_spacing'] is None


# ---------------------------------------------------------------- .npy slices and paired layouts
def _npy(tmp, kind):
    p = tmp / f'{kind}.npy'
    if kind == 'complex': np.save(p, np.ones((8, 8), complex))
    elif kind == 'nan': a = np.zeros((8, 8)); a[1, 1] = np.nan; np.save(p, a)
    elif kind == 'inf': a = np.zeros((8, 8)); a[1, 1] = np.inf; np.save(p, a)
    elif kind == 'bool': np.save(p, np.ones((8, 8), bool))
    elif kind == 'str': np.save(p, np.array([['a', 'b'], ['c', 'd']]))
    elif kind == 'object': np.save(p, np.array([{'a': 1}, None], dtype=object), allow_pickle=True)
    elif kind == 'volume': np.save(p, np.zeros((2, 8, 8)))
    elif kind == 'empty2d': np.save(p, np.zeros((0, 8)))
    elif kind == 'truncated': np.save(p, np.zeros((64, 64))); p.write_bytes(p.read_bytes()[:2000])
    elif kind == 'text': p.write_text('not an array')
    elif kind == 'zero_bytes': p.write_bytes(b'')
    elif kind == 'huge_header':   # a header that claims 20 GB (a few bytes follow): refused before any allocation
        with open(p, 'wb') as f:
            np.lib.format.write_array_header_1_0(f, {'descr': '<f8', 'fortran_order': False, 'shape': (50000, 50000)}); f.write(bytes(64))
    return p


@pytest.mark.parametrize('kind,words', [('complex', 'not real numbers'), ('nan', 'NaN'), ('inf', 'NaN or inf'),
                                        ('bool', 'not real numbers'), ('str', 'not real numbers'), ('object', 'not a readable'),
                                        ('volume', 'one slice'), ('empty2d', 'one slice'), ('truncated', 'truncated'),
                                        ('text', 'not a readable'), ('zero_bytes', 'empty'), ('huge_header', 'too large')])
def test_read_npy_refuses(tmp_path, kind, words):
    p = _npy(tmp_path, kind)
    _expect(lambda: read_npy(p), CTReadError, [p, words], tmp_path)
    _expect(lambda: read_slice(p), CTReadError, [p], tmp_path)


@pytest.mark.parametrize('kw,val,exc', [('offset', float('nan'), ValueError), ('offset', '1024', TypeError),
                                        ('offset', 1e9, ValueError), ('hu_floor', float('inf'), ValueError)])
def test_read_npy_arguments(tmp_path, kw, val, exc):
    p = tmp_path / 'a.npy'; np.save(p, np.zeros((8, 8)))
    _expect(lambda: read_npy(p, **{kw: val}), exc, [kw], tmp_path)


def _npy_tree(root, dirs, n=2, prefix='ab'):
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
        for i in range(n): np.save(root / d / f'{prefix}_{i:03d}.npy', np.full((4, 4), 1024, np.int16))


@pytest.mark.parametrize('build,words', [
    (lambda r: _npy_tree(r / 'p', ['full_1mm', 'sim-0']), 'sim-0'),
    (lambda r: _npy_tree(r / 'p', ['full_1mm', 'sim-1.5']), 'sim-1.5'),
    (lambda r: (_npy_tree(r / 'p', ['full_1mm']), _npy_tree(r / 'p', ['sim-0.25'], n=3)), 'cannot pair'),
    (lambda r: (_series(r / 'L1' / 'full_1mm', [0, 1]), _series(r / 'L1' / 'quarter_1mm', [0, 0])), 'share a position'),
    (lambda r: (r / 'x').mkdir(), 'found no paired'),
])
def test_find_pairs_refuses(tmp_path, build, words):
    build(tmp_path)
    _expect(lambda: find_pairs(tmp_path), CTReadError, [words], tmp_path)


@pytest.mark.parametrize('call,exc,name', [
    (lambda t: find_pairs(None), TypeError, 'root'), (lambda t: find_pairs(t / 'nope'), CTReadError, 'not a folder'),
    (lambda t: find_pairs(t, thickness=1), ValueError, 'thickness'), (lambda t: find_pairs(t, thickness='1 mm; rm'), ValueError, 'thickness'),
])
def test_find_pairs_arguments(tmp_path, call, exc, name):
    _expect(lambda: call(tmp_path), exc, [name], tmp_path)


# ---------------------------------------------------------------- write_dicom
@pytest.fixture
def ref(tmp_path):
    p = tmp_path / 'ref.dcm'; shutil.copy(SMALL, p); return p


GOOD = np.zeros((128, 128), np.float32)


def _hu(kind):
    a = GOOD.copy()
    if kind == 'nan': a[3, 3] = np.nan
    elif kind == 'inf': a[3, 3] = -np.inf
    elif kind == 'complex': a = a.astype(np.complex64)
    elif kind == 'huge': a[0, 0] = 40000
    elif kind == 'tiny': a[0, 0] = -40000
    elif kind == 'bool': a = a > 0
    elif kind == 'str': a = a.astype(str)
    elif kind == 'volume': a = a[None]
    elif kind == 'empty': a = a[:0, :0]
    elif kind == 'shape': a = a[:64]
    elif kind == 'tensor_nan': a = torch.zeros(128, 128); a[0, 0] = float('nan')
    return a


@pytest.mark.parametrize('kind,exc,words', [
    ('nan', ValueError, 'hu holds 1 NaN/inf'), ('inf', ValueError, 'hu holds 1 NaN/inf'), ('complex', TypeError, 'hu must be real'),
    ('huge', ValueError, 'hu: range'), ('tiny', ValueError, 'hu: range'), ('bool', TypeError, 'hu must hold numbers'),
    ('str', TypeError, 'hu must hold numbers'), ('volume', ValueError, 'one slice'), ('empty', ValueError, 'one slice'),
    ('shape', ValueError, 'differs from the reference'), ('tensor_nan', ValueError, 'hu holds 1 NaN/inf'),
])
def test_write_dicom_refuses_values(tmp_path, ref, kind, exc, words):
    hu = _hu(kind)
    _expect(lambda: write_dicom(hu, ref, tmp_path / 'out' / 'o.dcm'), exc, [words], tmp_path, arrays=[hu])


@pytest.mark.parametrize('setup,kw,exc,words', [
    (None, dict(series_uid='1.02.3'), ValueError, 'series_uid'), (None, dict(series_uid='abc'), ValueError, 'series_uid'),
    (None, dict(series_uid='1.' * 40 + '1'), ValueError, 'series_uid'), (None, dict(series_uid=123), TypeError, 'series_uid'),
    (None, dict(series_number=-1), ValueError, 'series_number'), (None, dict(series_number=1.5), TypeError, 'series_number'),
    (None, dict(description=None), TypeError, 'description'), (None, dict(overwrite='yes'), TypeError, 'overwrite'),
    (None, dict(description='a\\b'), ValueError, 'description'), (None, dict(description='x\x00y'), ValueError, 'description'),
    (None, dict(allow_non_ct=1), TypeError, 'allow_non_ct'),
    ('norows', {}, ValueError, 'Rows/Columns missing'), ('nopath', {}, ValueError, "no source path"),
    ('mr', {}, ValueError, "modality is 'MR'"), ('notdicom', {}, CTReadError, 'not a DICOM file'),
    ('missing', {}, CTReadError, 'no such file'), ('truncated', {}, CTReadError, 'truncated'),
])
def test_write_dicom_refuses_arguments(tmp_path, ref, setup, kw, exc, words):
    r = ref
    if setup == 'mr': r = _save(_edit(SMALL, Modality='MR'), tmp_path / 'mr.dcm')
    if setup == 'notdicom': r = tmp_path / 'x.dcm'; r.write_text('hello')
    if setup == 'missing': r = tmp_path / 'missing.dcm'
    if setup == 'norows': r = _edit(SMALL, Rows=None)                       # a pydicom Dataset as the reference
    if setup == 'nopath':
        from founddiff.io import CTImage
        r = CTImage(GOOD, {})
    if setup == 'truncated': r = tmp_path / 't.dcm'; r.write_bytes(SMALL.read_bytes()[:400])
    _expect(lambda: write_dicom(GOOD, r, tmp_path / 'o.dcm', **kw), exc, [words], tmp_path, arrays=[GOOD])


@pytest.mark.parametrize('where,exc,words', [
    ('is_ref', ValueError, 'refusing to write over the reference'), ('exists', FileExistsError, 'exists'),
    ('folder', IsADirectoryError, 'is a folder'), ('under_file', NotADirectoryError, 'is a file, not a folder'),
    ('none', TypeError, 'path'),
])
def test_write_dicom_refuses_destinations(tmp_path, ref, where, exc, words):
    (tmp_path / 'taken.dcm').write_bytes(b'keep me'); (tmp_path / 'dir').mkdir()
    dest = {'is_ref': ref, 'exists': tmp_path / 'taken.dcm', 'folder': tmp_path / 'dir',
            'under_file': tmp_path / 'taken.dcm' / 'o.dcm', 'none': None}[where]
    _expect(lambda: write_dicom(GOOD, ref, dest), exc, [words], tmp_path, arrays=[GOOD])


def test_write_dicom_failure_midway_leaves_nothing(tmp_path, ref, monkeypatch):
    "A crash while saving (disk full, say) leaves neither the output nor a temporary file."
    def boom(*a, **k): raise OSError(28, 'No space left on device')
    monkeypatch.setattr(pydicom.Dataset, 'save_as', boom)
    _expect(lambda: write_dicom(GOOD, ref, tmp_path / 'out' / 'o.dcm'), OSError, ['No space'], tmp_path)


# ---------------------------------------------------------------- phantoms
PHANTOM_CASES = [
    (lambda: phantom('liver'), ValueError, 'region'), (lambda: phantom(None), TypeError, 'region'),
    (lambda: phantom(3), TypeError, 'region'), (lambda: phantom('HEAD '), ValueError, 'region'),
    (lambda: phantom('head', 8), ValueError, 'size'), (lambda: phantom('head', 2000), ValueError, 'size'),
    (lambda: phantom('head', 64.5), TypeError, 'size'), (lambda: phantom('head', '64'), TypeError, 'size'),
    (lambda: phantom('head', True), TypeError, 'size'), (lambda: phantom('head', float('nan')), TypeError, 'size'),
    (lambda: phantom('head', -64), ValueError, 'size'),
    (lambda: phantom('head', 32, 1.5), TypeError, 'generator'), (lambda: phantom('head', 32, 'seed'), TypeError, 'generator'),
    (lambda: phantom('head', 32, 2**70), ValueError, 'generator'),
    (lambda: phantom('head', 32, 0, texture=float('nan')), ValueError, 'texture'),
    (lambda: phantom('head', 32, 0, texture=-1), ValueError, 'texture'),
    (lambda: phantom('head', 32, 0, texture=float('inf')), ValueError, 'texture'),
    (lambda: phantom('head', 32, 0, texture='1'), TypeError, 'texture'),
    (lambda: phantom('head', 32, 0, texture=1j), TypeError, 'texture'),
    (lambda: phantom('head', 32, 0, supersample=0), ValueError, 'supersample'),
    (lambda: phantom('head', 32, 0, supersample=2.5), TypeError, 'supersample'),
    (lambda: phantom('head', 32, 0, return_labels='yes'), TypeError, 'return_labels'),
    (lambda: rasterize([], 0), ValueError, 'size'), (lambda: rasterize([], 4096, supersample=32), ValueError, 'supersample'), (lambda: rasterize([], 16, supersample=0), ValueError, 'supersample'),
    (lambda: rasterize([], 16, background=float('nan')), ValueError, 'background'),
    (lambda: rasterize([None], 16), TypeError, 'ellipses'),
    (lambda: rasterize([Ellipse(0, 0, .5, .5, 0, 40, 'body')], 16, labels=['air']), ValueError, 'labels'),
    (lambda: Ellipse(0, 0, 0, .5, 0, 40, 'x'), ValueError, 'a'), (lambda: Ellipse(float('nan'), 0, .5, .5, 0, 40, 'x'), ValueError, 'cx'),
    (lambda: Ellipse(0, 0, .5, .5, 0, 40, 3), TypeError, 'label'),
    (lambda: add_texture(np.full((8, 8), np.nan), np.zeros((8, 8), int), ['air']), ValueError, 'hu'),
    (lambda: add_texture(np.zeros((8, 8)), np.zeros((4, 4), int), ['air']), ValueError, 'labels'),
    (lambda: add_texture(np.zeros((8, 8)), np.full((8, 8), 5), ['air']), ValueError, 'labels'),
    (lambda: add_texture(np.zeros((8, 8)), np.zeros((8, 8), int), ['air'], amount=float('nan')), ValueError, 'amount'),
]


@pytest.mark.parametrize('call,exc,name', PHANTOM_CASES)
def test_phantom_arguments(tmp_path, call, exc, name):
    _expect(call, exc, [name], tmp_path)


def test_add_texture_does_not_modify_inputs(tmp_path):
    hu, lab = np.zeros((16, 16), np.float32), np.zeros((16, 16), int)
    _expect(lambda: add_texture(hu, lab, ['air'], amount=-1), ValueError, ['amount'], tmp_path, arrays=[hu, lab])


# ---------------------------------------------------------------- core
CORE_CASES = [
    (lambda: hu_to_unit(np.array([0., np.nan])), ValueError, 'hu'), (lambda: hu_to_unit(np.ones(2, complex)), TypeError, 'hu'),
    (lambda: hu_to_unit('100'), TypeError, 'hu'), (lambda: hu_to_unit(None), TypeError, 'hu'),
    (lambda: hu_to_unit(torch.tensor([0., float('inf')])), ValueError, 'hu'),
    (lambda: hu_to_unit(np.zeros(2), lo=10, hi=10), ValueError, 'hi'), (lambda: hu_to_unit(np.zeros(2), lo=float('nan')), ValueError, 'lo'),
    (lambda: unit_to_hu(np.array([np.nan])), ValueError, 'x'),
    (lambda: get_window('liver'), ValueError, 'window'), (lambda: get_window((0, 40)), ValueError, 'window width'),
    (lambda: get_window((float('nan'), 40)), ValueError, 'window width'), (lambda: get_window((400,)), TypeError, 'window'),
    (lambda: get_window(None), TypeError, 'window'), (lambda: get_window(('a', 'b')), TypeError, 'window width'),
    (lambda: get_window((400, float('inf'))), ValueError, 'window level'), (lambda: Window(-1, 0), ValueError, 'window width'),
    (lambda: sample_path('nope.dcm'), FileNotFoundError, 'nope.dcm'), (lambda: sample_path('../core.py'), ValueError, 'name'),
    (lambda: sample_path(None), TypeError, 'name'),
    (lambda: get_device('gpu'), ValueError, 'prefer'), (lambda: get_device(3.5), TypeError, 'prefer'),
    (lambda: seed_everything(-1), ValueError, 'seed'), (lambda: seed_everything(1.5), TypeError, 'seed'),
    (lambda: seed_everything('1'), TypeError, 'seed'),
    (lambda: as_generator(1.5), TypeError, 'generator'), (lambda: as_generator(3, device='gpu'), ValueError, 'device'), (lambda: as_generator(True), TypeError, 'generator'),
    (lambda: check_number(float('nan'), 'dose'), ValueError, 'dose'), (lambda: check_number(0.5j, 'dose'), TypeError, 'dose'),
    (lambda: check_choice('x', 'region', ('a',)), ValueError, 'region'), (lambda: check_finite(np.array([np.inf]), 'img'), ValueError, 'img'),
    (lambda: check_path(b'/tmp', 'out'), TypeError, 'out'),
    (lambda: show_ct(np.ones((4, 4), complex)), TypeError, 'hu'), (lambda: show_ct('abc'), TypeError, 'hu'),
    (lambda: show_ct(np.ones((2, 4, 4))), ValueError, 'one slice'), (lambda: show_ct(np.ones((4, 4)), window='liver'), ValueError, 'window'),
    (lambda: ct_metadata(None), TypeError, 'ds'),
]


@pytest.mark.parametrize('call,exc,name', CORE_CASES)
def test_core_arguments(tmp_path, call, exc, name):
    _expect(call, exc, [name], tmp_path)


def test_get_device_env_named(tmp_path, monkeypatch):
    monkeypatch.setenv('FOUNDDIFF_DEVICE', 'tpu9')
    _expect(lambda: get_device(), ValueError, ['$FOUNDDIFF_DEVICE', 'tpu9'], tmp_path)


@pytest.mark.parametrize('dest,mode,exc,words', [
    ('dir', 'wb', IsADirectoryError, 'is a folder'), ('under_file', 'wb', NotADirectoryError, 'is a file, not a folder'),
    ('ok', 'r', ValueError, 'mode'), (None, 'wb', TypeError, 'path'),
])
def test_atomic_write_refuses(tmp_path, dest, mode, exc, words):
    (tmp_path / 'dir').mkdir(); (tmp_path / 'f').write_text('x')
    p = {'dir': tmp_path / 'dir', 'under_file': tmp_path / 'f' / 'a.txt', 'ok': tmp_path / 'new.txt', None: None}[dest]
    def call():
        with atomic_write(p, mode) as f: f.write(b'data')
    _expect(call, exc, [words], tmp_path)


def test_hu_to_unit_does_not_modify_input():
    a = np.array([-2000., 0, 5000]); c = a.copy(); hu_to_unit(a); unit_to_hu(a, lo=-1000, hi=2000)
    np.testing.assert_array_equal(a, c)


# ---------------------------------------------------------------- the command line
@pytest.mark.parametrize('make,args,words', [
    (lambda t: (t / 'afile').write_text('x'), ['demo', '--out', '{t}/afile'], 'is an existing file'),
    (lambda t: (t / 'afile').write_text('x'), ['demo', '--out', '{t}/afile/sub'], 'is a file, not a folder'),
    (lambda t: None, ['demo', '--input', '{t}/missing.dcm', '--out', '{t}/o'], 'no such file'),
    (lambda t: (t / 'x.dcm').write_text('hello'), ['demo', '--input', '{t}/x.dcm', '--out', '{t}/o'], 'not a DICOM file'),
    (lambda t: (t / 't.dcm').write_bytes(SMALL.read_bytes()[:-3000]), ['demo', '--input', '{t}/t.dcm', '--out', '{t}/o'], 'truncated'),
    (lambda t: _save(_edit(SMALL, Columns=127), t / 'c.dcm'), ['demo', '--input', '{t}/c.dcm', '--out', '{t}/o'], 'Columns'),
    (lambda t: (t / 'e').mkdir(), ['demo', '--input', '{t}/e', '--out', '{t}/o'], 'no CT DICOM files'),
    (lambda t: (t / 'a.npy').write_bytes(b'junk'), ['demo', '--input', '{t}/a.npy', '--out', '{t}/o'], 'not a readable'),
    (lambda t: _save(_raw_ds(pydicom.dcmread(SMALL), 'RescaleSlope', 'abc'), t / 's.dcm'), ['demo', '--input', '{t}/s.dcm', '--out', '{t}/o'], 'RescaleSlope'),
    (lambda t: _save(_edit(SMALL, RescaleSlope=None, RescaleIntercept=None), t / 'r.dcm'), ['demo', '--input', '{t}/r.dcm', '--out', '{t}/o'], 'missing_rescale'),
    (lambda t: None, ['demo', '--bogus'], 'unrecognized arguments'),
    (lambda t: None, ['frobnicate'], 'invalid choice'),
    (lambda t: None, ['demo', '--input'], 'expected one argument'),
    (lambda t: None, ['demo', '--out', ''], '--out is empty'),
])
def test_cli_one_line_and_status_2(tmp_path, capsys, make, args, words):
    make(tmp_path); before = _tree(tmp_path)
    args = [a.format(t=tmp_path) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('founddiff: error: ') and words in err, err
    assert 'Traceback' not in err
    assert _tree(tmp_path) == before   # no output folder, nothing modified


def test_cli_debug_shows_the_traceback(tmp_path):
    with pytest.raises(CTReadError, match='no such file'):
        main(['--debug', 'demo', '--input', str(tmp_path / 'missing.dcm'), '--out', str(tmp_path / 'o')])
    assert not (tmp_path / 'o').exists()


def test_cli_unexpected_error_is_one_line(tmp_path, capsys, monkeypatch):
    import founddiff.cli as cli
    monkeypatch.setattr(cli, 'run_demo', lambda *a, **k: {}['boom'])   # a bug deep inside: KeyError
    assert main(['demo', '--out', str(tmp_path / 'o')]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'KeyError' in err and '--debug' in err


@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='no named pipes on this system')
def test_cli_subprocess_pipe_input(tmp_path):
    "The installed command, as a user runs it: a named pipe as --input ends at once with one line and status 2."
    p = tmp_path / 'pipe.dcm'; os.mkfifo(p)
    exe = shutil.which('founddiff')
    cmd = [exe] if exe else [sys.executable, '-c', 'import sys; from founddiff.cli import main; sys.exit(main())']
    r = subprocess.run(cmd + ['demo', '--input', str(p), '--out', str(tmp_path / 'o')], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'named pipe' in r.stderr and str(p) in r.stderr, r.stderr
    assert not (tmp_path / 'o').exists()


def test_valid_stream_without_a_capable_decoder_is_missing_codec_not_corrupt(tmp_path):
    "12-bit JPEG Extended: GDCM and Pillow decline it; that is a missing codec (naming what to install), not damage."
    p = tmp_path / 'ext.dcm'; shutil.copy(get_testdata_file('JPGExtended.dcm'), p)
    try: read_dicom(p, allow_non_ct=True); pytest.skip('a 12-bit JPEG decoder is installed here')
    except MissingCodecError as e: assert str(p) in str(e) and 'pylibjpeg-libjpeg' in str(e) and 'corrupt' not in str(e)



# ---------------------------------------------------------------- other modules (physics, data, sampler, pipeline)
# The doors other notebooks own, tried with the same harness: type, name in the message, inputs unchanged.
from founddiff.physics import simulate_low_dose, simulate_pair, simulate_doses
from founddiff.data import read_nifti, DoseCache
from founddiff.cli import dose_images
H16 = np.zeros((16, 16), np.float32)


@pytest.mark.parametrize('call,exc,name', [
    (lambda: simulate_low_dose(H16, 'x'), TypeError, 'dose'), (lambda: simulate_low_dose(H16, float('nan')), ValueError, 'dose'),
    (lambda: simulate_low_dose(H16, 0), ValueError, 'dose'), (lambda: simulate_low_dose(H16, 1.5), ValueError, 'dose'),
    (lambda: simulate_low_dose(H16, 0.5j), TypeError, 'dose'), (lambda: simulate_pair(H16, None), TypeError, 'dose'),
    (lambda: simulate_low_dose(H16.astype(complex), 0.25), TypeError, 'hu'),
    (lambda: simulate_low_dose(np.full((16, 16), np.nan), 0.25), ValueError, 'hu'),
    (lambda: simulate_low_dose(np.zeros((0, 16, 16)), 0.25), ValueError, 'hu'),
    (lambda: simulate_low_dose(np.zeros(16), 0.25), ValueError, 'hu'),
    (lambda: simulate_low_dose(np.full((16, 16), 1e30), 0.25), ValueError, 'hu'),
    (lambda: simulate_low_dose(H16, 0.25, i0=0), ValueError, 'i0'), (lambda: simulate_low_dose(H16, 0.25, i0=-1), ValueError, 'i0'),
    (lambda: simulate_low_dose(H16, 0.25, pixel_spacing=float('nan')), ValueError, 'pixel_spacing'),
    (lambda: simulate_low_dose(H16, 0.25, pixel_spacing=(1, 1, 1)), ValueError, 'pixel_spacing'),
    (lambda: simulate_low_dose(H16, 0.25, pixel_spacing=0), ValueError, 'pixel_spacing'),
    (lambda: simulate_low_dose(H16, 0.25, generator='x'), TypeError, 'generator'),
    (lambda: simulate_doses(H16, []), ValueError, 'doses'), (lambda: simulate_doses(H16, ['a']), TypeError, 'doses'),
    (lambda: dose_images(size=0), ValueError, 'size'),
])
def test_physics_and_data_arguments(tmp_path, call, exc, name):
    _expect(call, exc, [name], tmp_path, arrays=[H16])


def _nifti(tmp, kind):
    import nibabel as nib
    p = tmp / f'{kind}.nii'
    if kind == 'flat': nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)).to_filename(p)
    elif kind == 'nan': nib.Nifti1Image(np.full((8, 8, 4), np.nan, np.float32), np.eye(4)).to_filename(p)
    elif kind == 'trunc':
        p = tmp / 'trunc.nii.gz'; nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.eye(4)).to_filename(p)
        p.write_bytes(p.read_bytes()[:60])
    elif kind == 'empty': p.write_bytes(b'')
    elif kind == 'text': p.write_text('hello')
    elif kind == 'dir': p.mkdir()
    return p


@pytest.mark.parametrize('kind,words', [('flat', '3-D volume'), ('nan', 'NaN'), ('trunc', 'not a readable NIfTI'),
                                        ('empty', 'empty'), ('text', 'not a readable NIfTI'), ('dir', 'folder'),
                                        ('missing', 'no such file')])
def test_read_nifti_refuses(tmp_path, kind, words):
    pytest.importorskip('nibabel')
    p = _nifti(tmp_path, kind)
    _expect(lambda: read_nifti(p), CTReadError, [p, words], tmp_path)


def test_read_nifti_argument(tmp_path):
    _expect(lambda: read_nifti(None), TypeError, ['path'], tmp_path)


@pytest.mark.parametrize('setup,call,exc,words', [
    (lambda t: ((t / 'c').mkdir(), (t / 'c' / 'cache.json').write_text('{broken')),
     lambda t: DoseCache(t / 'c', {'doses': [0.25]}), ValueError, 'damaged'),
    (lambda t: ((t / 'c').mkdir(), np.save(t / 'c' / 'x.npy', np.zeros((2, 4, 4), np.int16))),
     lambda t: DoseCache(t / 'c', {'doses': [0.25]}), ValueError, 'no manifest'),
    (lambda t: None, lambda t: DoseCache(t / 'c', [0.25]), TypeError, 'config'),
    (lambda t: None, lambda t: DoseCache(t / 'c', {'doses': [float('nan')]}), ValueError, 'doses'),
])
def test_dose_cache_refuses(tmp_path, setup, call, exc, words):
    setup(tmp_path)
    _expect(lambda: call(tmp_path), exc, [words], tmp_path)


@pytest.mark.parametrize('key', ['../evil', 'a/b', '', '..', 3])
def test_dose_cache_key_stays_inside(tmp_path, key):
    c = DoseCache(tmp_path / 'c', {'doses': [0.25]}); stack = np.zeros((2, 4, 4))
    _expect(lambda: c.save(key, stack), ValueError, ['key'], tmp_path, arrays=[stack])


def test_dose_cache_refuses_non_finite_stack(tmp_path):
    c = DoseCache(tmp_path / 'c', {'doses': [0.25]}); stack = np.full((2, 4, 4), np.nan)
    _expect(lambda: c.save('k', stack), ValueError, ['NaN'], tmp_path, arrays=[stack])


@pytest.fixture(scope='module')
def denoiser():
    from founddiff.pipeline import Denoiser
    from founddiff.diffusion import DADiffUNet, get_config
    from founddiff.daclip import load_daclip
    return Denoiser(DADiffUNet(get_config('tiny')), load_daclip('small'))


@pytest.mark.parametrize('call,exc,name', [
    (lambda d: d.denoise(np.full((16, 16), np.nan, np.float32)), ValueError, 'hu'),
    (lambda d: d.denoise(np.zeros((16, 16), complex)), TypeError, 'hu'),
    (lambda d: d.denoise(np.zeros((0, 16, 16), np.float32)), ValueError, 'hu'),
    (lambda d: d.denoise([[0.0]]), TypeError, 'hu'),
    (lambda d: d.denoise(np.zeros((1, 1, 16, 16), np.float32)), ValueError, 'hu'),
    (lambda d: d.denoise(H16, steps=0), ValueError, 'steps'),
    (lambda d: d.denoise(H16, batch_size=0), ValueError, 'batch_size'),
    (lambda d: d.denoise(H16, generator=1.5), TypeError, 'generator'),
    (lambda d: __import__('founddiff.sampler', fromlist=['sample']).sample(d.unet, torch.zeros(1, 1, 16, 16), None), ValueError, 'embedding'),
    (lambda d: __import__('founddiff.pipeline', fromlist=['x']).hu_to_inputs(torch.full((1, 1, 8, 8), float('nan'))), ValueError, 'hu'),
    (lambda d: type(d)(d.unet, d.daclip, preset='fast?'), ValueError, 'preset'),
    (lambda d: type(d)(d.unet, None), ValueError, 'daclip'),
    (lambda d: __import__('founddiff.pipeline', fromlist=['x']).load_model(3), TypeError, 'name_or_path'),
    (lambda d: __import__('founddiff.pipeline', fromlist=['x']).load_model('no_such_model'), FileNotFoundError, 'no_such_model'),
])
def test_pipeline_arguments(tmp_path, denoiser, call, exc, name):
    _expect(lambda: call(denoiser), exc, [name], tmp_path)


@pytest.mark.parametrize('kind,words', [('empty', 'not a readable safetensors'), ('text', 'not a readable safetensors'),
                                        ('dir', 'no weights file'), ('missing', 'no weights file')])
def test_weight_files_refused(tmp_path, kind, words):
    from founddiff.core import load_weights
    p = tmp_path / 'w.safetensors'
    if kind == 'empty': p.write_bytes(b'')
    if kind == 'text': p.write_text('{"not": "safetensors"}')
    if kind == 'dir': p.mkdir()
    _expect(lambda: load_weights(p, format='founddiff.dadiff', version=1), (ValueError, FileNotFoundError), [p, words], tmp_path)
