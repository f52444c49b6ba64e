"What `pip install founddiff` brings must cover what the package imports (a fresh venv without the dev extras)."
import ast, configparser, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# import name -> distribution name, where they differ
DIST = {'PIL': 'pillow', 'skimage': 'scikit-image', 'open_clip': 'open-clip-torch', 'mamba_ssm': 'mamba-ssm'}

def _names(spec: str) -> set[str]:
    return {re.split(r'[<>=!~ \[;]', r, maxsplit=1)[0].lower() for r in spec.split()}

def _imports() -> set[str]:
    mods = set()
    for p in (ROOT / 'founddiff').glob('*.py'):
        for n in ast.walk(ast.parse(p.read_text(), filename=str(p))):
            if isinstance(n, ast.Import): mods |= {a.name.split('.')[0] for a in n.names}
            elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module: mods.add(n.module.split('.')[0])
    return {m for m in mods if m not in sys.stdlib_module_names and m != 'founddiff'}

def test_every_import_is_a_requirement():
    cfg = configparser.ConfigParser(); cfg.read(ROOT / 'settings.ini'); s = cfg['DEFAULT']
    core = _names(s['requirements']) | _names(s['pip_requirements'])
    extras = _names(s['cuda_requirements']) | _names(s['clip_requirements'])
    missing = sorted(m for m in _imports() if DIST.get(m, m).lower() not in core | extras)
    assert not missing, f"founddiff imports {missing} but settings.ini requirements do not list them"
    for m in _imports():            # an optional extra's module may only be imported inside a try (checked by name here)
        if DIST.get(m, m).lower() in extras - core:
            assert m in ('open_clip', 'mamba_ssm'), m
