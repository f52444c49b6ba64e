"Tests for founddiff.scan / founddiff.blocks that do not fit the notebooks: import hygiene, the mamba backend plumbing, the CLI."
import ast, os, subprocess, sys
from pathlib import Path
import pytest, torch
import founddiff.scan as scan

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'PYTHONPATH': str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', '')}

def test_import_is_light_and_layered():
    "Importing scan/blocks never imports mamba_ssm (or triton), nor any data-wing module."
    code = ("import sys, founddiff.scan, founddiff.blocks; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('mamba_ssm', 'triton', 'selective_scan_cuda')]; "
            "fd = sorted(m for m in sys.modules if m.startswith('founddiff.')); "
            "print(bad, fd); assert not bad, bad; "
            "assert set(fd) <= {'founddiff.core', 'founddiff.scan', 'founddiff.blocks'}, fd")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr + r.stdout

@pytest.mark.parametrize('mod, allowed', [('scan', {'founddiff.core'}), ('blocks', {'founddiff.core', 'founddiff.scan'})])
def test_module_imports_follow_the_layers(mod, allowed):
    tree = ast.parse((ROOT / 'founddiff' / f'{mod}.py').read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import): names |= {a.name for a in node.names}
        if isinstance(node, ast.ImportFrom) and node.module: names.add(('founddiff.' if node.level else '') + node.module)
    ours = {n for n in names if n.startswith('founddiff')}
    assert ours <= allowed, ours

@pytest.fixture
def fake_mamba(monkeypatch):
    "Pretend mamba-ssm is importable: its selective_scan_fn is our reference, recording what it was given."
    calls = []
    def fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False):
        calls.append(dict(D=D, delta_bias=delta_bias, delta_softplus=delta_softplus, return_last_state=return_last_state))
        return scan.selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    monkeypatch.setattr(scan, '_mamba_import', lambda: (fn, None))
    return calls

def test_auto_picks_mamba_on_cuda_only(fake_mamba):
    assert scan.resolve_backend('auto', 'cuda', torch.float32) == 'mamba'
    assert scan.resolve_backend('auto', 'cuda', torch.float64) == 'torch'       # mamba's kernel has no float64
    assert scan.resolve_backend('auto', 'cpu', torch.float32) == 'torch'
    assert 'mamba' in scan.available_backends('cuda', torch.float32)
    with pytest.raises(RuntimeError, match='CUDA tensors only'): scan.resolve_backend('mamba', 'cpu')

def test_mamba_backend_passes_arguments_through(fake_mamba):
    kw = scan.make_scan_inputs(b=2, D=8, L=20, N=4, G=4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = scan._selective_scan_mamba(**kw, return_last_state=True)
    ref = scan.selective_scan_ref(**kw, return_last_state=True)
    assert fake_mamba[0]['D'].dtype == torch.float32 and fake_mamba[0]['delta_bias'].dtype == torch.float32
    assert fake_mamba[0]['delta_softplus'] is True and fake_mamba[0]['return_last_state'] is True
    torch.testing.assert_close(out[0], ref[0], rtol=1e-5, atol=1e-5)

def test_missing_mamba_names_the_extra(monkeypatch):
    monkeypatch.setattr(scan, '_mamba_import', lambda: (None, "ModuleNotFoundError: No module named 'mamba_ssm'"))
    with pytest.raises(RuntimeError, match=r'pip install "founddiff\[cuda\]"'): scan.resolve_backend('mamba', 'cuda')
    kw = scan.make_scan_inputs(generator=torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match='founddiff\\[cuda\\]'): scan._selective_scan_mamba(**kw)

def test_bench_cli_runs():
    r = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'bench_scan.py'), '--shape', '1,8,64,4,2', '--reps', '1'],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'x faster than ref' in r.stdout and '1x8x64x4x2' in r.stdout and 'fwd+bwd' in r.stdout

def test_bench_cli_rejects_bad_shape():
    r = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'bench_scan.py'), '--shape', '1,8'],
                       capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode != 0 and 'b,D,L,N' in r.stderr
