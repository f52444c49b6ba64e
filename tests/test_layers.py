"""Every module declares its layer, and imports only founddiff modules of lower layers (the design's layering).

Two wings meet only at the top, so each module can be read and tested alone:

    faces   cli -> widgets (and everything below); nothing imports cli, only cli imports widgets
    joins   evaluate (methods side by side) -> pipeline (DA-CLIP + DA-Diff + sampler), train (every training loop)
    data    data -> io, phantoms, physics                  model   sampler -> diffusion -> blocks -> scan; daclip
    ground  core, losses, metrics

A new module must be added to LAYERS below (the test fails until it is), which is where its layer is decided.
Imports are read from the source (function-level imports included), so a lazy import cannot hide an upward one.
"""
import ast, subprocess, sys, os
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
# module -> (wing, level); a module may import founddiff modules of a lower level, never of its own or a higher one,
# and the data and model wings never import each other (they meet in the joins and the faces).
LAYERS = {
    'core': ('ground', 0), 'losses': ('ground', 0), 'metrics': ('ground', 1),
    'io': ('data', 2), 'phantoms': ('data', 2), 'physics': ('data', 2), 'data': ('data', 3),
    'scan': ('model', 2), 'daclip': ('model', 2), 'blocks': ('model', 3), 'diffusion': ('model', 4), 'sampler': ('model', 5),
    'pipeline': ('join', 6), 'train': ('join', 6), 'evaluate': ('join', 7),
    'widgets': ('face', 8), 'cli': ('face', 9),
}


def modules():
    return sorted(p.stem for p in (ROOT / 'founddiff').glob('*.py') if not p.name.startswith('_'))


def founddiff_imports(mod: str) -> set[str]:
    "founddiff modules that `mod` imports anywhere in its source ('founddiff' itself for the package)."
    tree = ast.parse((ROOT / 'founddiff' / f'{mod}.py').read_text())
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import): names = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            names = [('founddiff.' + n.module if n.module else 'founddiff') if n.level else (n.module or '')]
            if names[0] == 'founddiff': names = [f'founddiff.{a.name}' for a in n.names]   # from founddiff import x
        else: continue
        out |= {m.split('.')[1] if m.count('.') else 'founddiff' for m in names if m == 'founddiff' or m.startswith('founddiff.')}
    return out


def test_every_module_declares_its_layer():
    assert sorted(LAYERS) == modules(), f"declare the layer of {sorted(set(modules()) - set(LAYERS))} in LAYERS"


@pytest.mark.parametrize('mod', sorted(LAYERS))
def test_module_imports_only_lower_layers(mod):
    wing, level = LAYERS[mod]
    for dep in founddiff_imports(mod) - {'founddiff'}:
        assert dep in LAYERS, f"{mod} imports founddiff.{dep}, which is not a module"
        dwing, dlevel = LAYERS[dep]
        assert dlevel < level, f"{mod} (level {level}) imports founddiff.{dep} (level {dlevel}): imports run downward only"
        assert {wing, dwing} != {'data', 'model'}, f"{mod} ({wing} wing) imports founddiff.{dep} ({dwing} wing)"
    if 'founddiff' in founddiff_imports(mod): assert wing == 'face', f"only a face may import the package itself ({mod})"


def test_faces_are_leaves():
    "Nothing imports cli; only cli imports widgets."
    for mod in LAYERS:
        deps = founddiff_imports(mod)
        assert 'cli' not in deps, mod
        if mod != 'cli': assert 'widgets' not in deps, mod


def test_a_lower_module_loads_no_higher_one():
    "At run time too: importing the modules from the lowest level up, each pulls in no founddiff module of its level or above."
    code = ("import importlib, sys, json; L = json.loads(sys.argv[1]); bad = {}\n"
            "for m in L:\n"
            "    before = set(sys.modules); importlib.import_module('founddiff.' + m)\n"
            "    new = {x.split('.')[1] for x in set(sys.modules) - before if x.startswith('founddiff.')} - {m}\n"
            "    up = [x for x in new if x in L and L[x][1] >= L[m][1]]\n"
            "    if up: bad[m] = up\n"
            "print(json.dumps(bad))")
    import json
    order = dict(sorted(LAYERS.items(), key=lambda kv: kv[1][1]))          # lowest first: what a module adds is its own
    r = subprocess.run([sys.executable, '-c', code, json.dumps(order)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'PYTHONPATH': str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', '')})
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {}, r.stdout
