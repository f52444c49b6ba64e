#!/usr/bin/env python
"""Make every course notebook safe for Colab's "Run all" on a CPU runtime with no repository files beside it.

    python scripts/colab_safe.py            # apply the edits (idempotent: a second run changes nothing)
    python scripts/colab_safe.py --check    # CI: exit 1, listing what is missing, if any notebook needs an edit

For every notebook under nbs/ (index.ipynb and folders starting with `_` or `.` excepted) it makes four mechanical,
idempotent edits; nothing else in a notebook is touched:

1. the closing `import nbdev; nbdev.nbdev_export()` cell runs only inside the repository (when settings.ini sits
   where it does in the repository, relative to the notebook); in Colab it does nothing;
2. a hidden install cell near the top that, only on Colab (`'google.colab' in sys.modules`), pip-installs founddiff
   and the notebook's extra imports that founddiff does not bring (fastcore's test helpers, scikit-image, ...),
   with Colab's torch pinned by a constraint so pip never replaces it; it is a no-op everywhere else (and marked
   `#| eval: false`, so nbdev_test, the docs build and execute_nbs skip it; Colab ignores the directive);
3. in notebooks with `#| slow` cells, a visible switch cell `RUN_SLOW = False` after it (import-free, so the docs
   build, which runs cells that import, leaves it alone), and every slow cell's body
   under `if RUN_SLOW:` (else it prints a note). nbdev_test still decides with its own flags: under nbdev_test
   (which sets IN_TEST) RUN_SLOW is True, so `nbdev_test --flags slow` runs the slow cells and plain nbdev_test
   skips them as before;
4. every `#| cuda` cell's body under `if torch.cuda.is_available():` (else it prints a note).

A cell's `#|` directives stay on top; the body is indented by four spaces, except continuation lines of multi-line
strings (whose text must not change). A bare last expression is wrapped in `display(...)` since an `if` block does
not show it. New cells get ids derived from the notebook's name, so re-running gives the same notebook.
"""
import argparse, configparser, hashlib, io, json, re, sys, tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'

# --- the canonical cells -------------------------------------------------------------------------------------------
INSTALL_MARK = "# Colab only: install founddiff"
SWITCH_LINE = 'RUN_SLOW = False'
SWITCH_SRC = (
    "# Cells marked slow take minutes on a CPU (bigger images, timing sweeps, longer training). \"Run all\" skips them\n"
    "# with a note; set RUN_SLOW = True to run them too. Under nbdev_test (which sets IN_TEST) its --flags decide.\n"
    f"{SWITCH_LINE}\n"
    "RUN_SLOW = RUN_SLOW or 'IN_TEST' in __import__('os').environ")
GUARDS = {  # (slow, cuda) -> (guard line, note printed otherwise)
    (True, False): ('if RUN_SLOW:', "print('Skipped: a slow cell (set RUN_SLOW = True at the top to run it).')"),
    (False, True): ('if torch.cuda.is_available():', "print('Skipped: this cell needs a CUDA GPU and there is none.')"),
    (True, True): ('if RUN_SLOW and torch.cuda.is_available():',
                   "print('Skipped: a slow cell that needs a CUDA GPU (set RUN_SLOW = True on a GPU runtime).')"),
}
# imports that founddiff itself brings, or that Colab has, or optional extras the code imports inside a try
PROVIDED = {'founddiff', 'torch', 'IPython', 'ipykernel', 'nbdev', 'mamba_ssm', 'open_clip', 'triton', 'selective_scan_cuda',
            'google'}
DIST = {'PIL': 'pillow', 'skimage': 'scikit-image', 'pydicom_data': 'pydicom-data', 'sklearn': 'scikit-learn',
        'gdcm': 'python-gdcm', 'openjpeg': 'pylibjpeg-openjpeg', 'yaml': 'pyyaml'}
_IMPORT = re.compile(r'^\s*(?:from\s+([A-Za-z_][\w]*)[\w.]*\s+import\b|import\s+([A-Za-z_][\w., ]*))')
_DIRECTIVE = re.compile(r'^\s*#\|\s*([\w-]+:?)(.*)$')


def settings():
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT / 'settings.ini')
    return cfg['DEFAULT']


def _names(spec):
    return {re.split(r'[<>=!~ \[;]', r, maxsplit=1)[0].lower(): r for r in spec.split()}


def src(c): return ''.join(c['source']) if isinstance(c['source'], list) else c['source']


def set_src(c, s): c['source'] = s.splitlines(keepends=True)


def split_directives(s):
    "(directive lines, body lines, directive names) of a cell's source."
    lines = s.splitlines(); i = 0
    while i < len(lines) and _DIRECTIVE.match(lines[i]): i += 1
    return lines[:i], lines[i:], {_DIRECTIVE.match(l).group(1).rstrip(':') for l in lines[:i]}


def is_export_cell(s): return 'nbdev_export(' in s and 'import nbdev' in s


def is_install_cell(s):
    return INSTALL_MARK in s or ('pip install' in s and 'founddiff' in s and split_directives(s)[2] >= {'hide'})


def is_switch_cell(s): return any(l.strip() == SWITCH_LINE for l in s.splitlines()) and 'IN_TEST' in s


# --- what a notebook needs ----------------------------------------------------------------------------------------
def needed_packages(nb, s=None):
    "pip specs (from settings.ini) for the notebook's imports that `pip install founddiff` does not bring; unknown imports."
    s = s or settings()
    core, dev = _names(s['requirements'] + ' ' + s['pip_requirements']), _names(s['dev_requirements'])
    mods = set()
    for c in nb['cells']:
        t = src(c)
        if c['cell_type'] != 'code' or is_export_cell(t) or is_install_cell(t): continue
        for line in t.splitlines():
            m = _IMPORT.match(line)
            if not m: continue
            if m.group(1): mods.add(m.group(1))
            else: mods |= {x.strip().split(' ')[0].split('.')[0] for x in m.group(2).split(',') if x.strip()}
    specs, unknown = [], []
    for m in sorted(mods - set(sys.stdlib_module_names) - PROVIDED - {'__future__', ''}):
        d = DIST.get(m, m).lower().replace('_', '-')
        if d in core or m.lower() in core: continue
        if d in dev: specs.append(dev[d])
        else: unknown.append(m)
    return specs, unknown


def install_src(nb, s=None):
    s = s or settings()
    specs, _ = needed_packages(nb, s)
    pkgs = ', '.join(repr(p) for p in [f"founddiff @ git+{s['git_url']}"] + specs)
    return (f"#| hide\n#| eval: false\n{INSTALL_MARK} and what this notebook needs; Colab's own torch stays (pinned by a constraint).\n"
            "import sys\n"
            "if 'google.colab' in sys.modules:\n"
            "    import subprocess, tempfile, importlib.metadata\n"
            "    with tempfile.NamedTemporaryFile('w', suffix='.txt', delete=False) as pin: pin.write(f\"torch=={importlib.metadata.version('torch')}\\n\")\n"
            f"    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '-c', pin.name, {pkgs}], check=True)")


def export_src(nb_path):
    try: depth = len(Path(nb_path).resolve().relative_to(NBS.resolve()).parts)     # nbs/x.ipynb: 1, nbs/tutorials/x.ipynb: 2
    except ValueError: depth = 1                                                    # elsewhere: as if directly in nbs/
    up = '/'.join(['..'] * depth)
    return ("#| hide\nfrom pathlib import Path\n"
            f"if Path('{up}/settings.ini').exists():  # inside the repository only: in Colab there is nothing to export\n"
            "    import nbdev; nbdev.nbdev_export()")


# --- guarding a cell's body ---------------------------------------------------------------------------------------
def _string_continuation_lines(code):
    "0-based line numbers that continue a multi-line string (their text is part of the string: never re-indent)."
    out = set()
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type == tokenize.STRING or getattr(tokenize, 'FSTRING_MIDDLE', None) == tok.type:
            out |= set(range(tok.start[0], tok.end[0]))      # lines after the first (tokenize counts from 1)
    return out


def _display_last(body):
    "Wrap a bare last expression (shown by IPython at the top level, not inside `if`) in display(...)."
    import ast
    code = '\n'.join(body)
    try: tree = ast.parse(code)
    except SyntaxError: return body          # IPython magics: leave as is
    if not tree.body or not isinstance(tree.body[-1], ast.Expr): return body
    last = tree.body[-1]
    if code.rstrip().endswith(';'): return body
    v = last.value
    if isinstance(v, ast.Call) and ((isinstance(v.func, ast.Name) and (v.func.id in ('print', 'display') or v.func.id.startswith('test_')))
                                    or (isinstance(v.func, ast.Attribute) and v.func.attr in ('show', 'savefig'))): return body
    if isinstance(v, ast.Constant) and isinstance(v.value, str): return body   # a docstring-like line
    l0, c0, l1, c1 = last.lineno - 1, last.col_offset, last.end_lineno - 1, last.end_col_offset
    body = list(body)
    body[l1] = body[l1][:c1] + ')' + body[l1][c1:]
    body[l0] = body[l0][:c0] + 'display(' + body[l0][c0:]
    return body


def unguard(body):
    "The body without our guard (if it has one), else None."
    if not body: return None
    first = body[0]
    for g, note in GUARDS.values():
        if first == g and len(body) >= 3 and body[-2] == 'else:' and body[-1] == '    ' + note:
            inner = body[1:-2]
            keep = _string_continuation_lines('\n'.join(body))
            return [l if (i + 1) in keep else (l[4:] if l.startswith('    ') else l) for i, l in enumerate(inner)]
    return None


def guard(body, key):
    g, note = GUARDS[key]
    inner = _display_last(body)
    code = '\n'.join(inner)
    try: keep = _string_continuation_lines(code)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        if '"""' in code or "'''" in code: raise ValueError('cannot tokenize a cell with multi-line strings')
        keep = set()
    ind = [l if i in keep or not l.strip() else '    ' + l for i, l in enumerate(inner)]
    return [g] + (ind if any(l.strip() for l in ind) else ['    pass']) + ['else:', '    ' + note]


def _compiles(code):
    from IPython.core.inputtransformer2 import TransformerManager
    try: compile(TransformerManager().transform_cell(code), '<cell>', 'exec'); return True
    except SyntaxError: return False


# --- the notebook pass --------------------------------------------------------------------------------------------
def _new_cell(nb_path, role, source, cell_type='code'):
    cid = hashlib.sha1(f'{nb_path.name}:{role}'.encode()).hexdigest()[:8]
    c = {'cell_type': cell_type, 'id': cid, 'metadata': {}, 'source': []}
    if cell_type == 'code': c.update(execution_count=None, outputs=[])
    set_src(c, source); return c


def process(nb_path, nb, s=None):
    "Apply the edits to `nb` in place; return a list of what changed (empty when already Colab-safe), and warnings."
    s = s or settings(); changes, warns = [], []
    cells = nb['cells']
    has_torch = any(re.search(r'^\s*import torch\b|^\s*import .*\btorch\b', src(c), re.M) for c in cells if c['cell_type'] == 'code')
    slow_any = False
    # (2) guard slow / cuda cells
    for i, c in enumerate(cells):
        if c['cell_type'] != 'code': continue
        t = src(c); heads, body, names = split_directives(t)
        key = ('slow' in names, 'cuda' in names)
        slow_any |= key[0]
        inner = unguard(body)
        if not any(key):
            continue
        if key[1] and not has_torch: warns.append(f'{nb_path.name} cell {c.get("id")}: a cuda cell in a notebook that never imports torch')
        want = '\n'.join(heads + guard(inner if inner is not None else body, key))
        if want != t:
            if not _compiles(want):
                warns.append(f'{nb_path.name} cell {c.get("id")}: guarded cell would not compile; left for a manual edit'); continue
            set_src(c, want); changes.append(f'cell {c.get("id")}: {"slow" if key[0] else ""}{"+" if all(key) else ""}{"cuda" if key[1] else ""} guard')
    # (1) export cell
    for c in cells:
        t = src(c)
        if c['cell_type'] == 'code' and is_export_cell(t) and t != export_src(nb_path):
            set_src(c, export_src(nb_path)); changes.append(f'cell {c.get("id")}: export cell guarded')
    # (3) install cell
    uses_founddiff = any(c['cell_type'] == 'code' and ('founddiff' in src(c) or '#| export' in src(c) or 'default_exp' in src(c))
                         and not is_install_cell(src(c)) and not is_export_cell(src(c)) for c in cells)
    _, unknown = needed_packages(nb, s)
    if unknown: warns.append(f'{nb_path.name}: imports {unknown} that neither founddiff nor settings.ini dev_requirements provide')
    inst = [i for i, c in enumerate(cells) if c['cell_type'] == 'code' and is_install_cell(src(c))]
    if uses_founddiff:
        want = install_src(nb, s)
        if inst:
            c = cells[inst[0]]
            if src(c) != want: set_src(c, want); changes.append(f'cell {c.get("id")}: install cell')
        else:
            at = _top_position(cells)
            cells.insert(at, _new_cell(nb_path, 'install', want)); changes.append('install cell added')
    # (4) the switch
    sw = [i for i, c in enumerate(cells) if c['cell_type'] == 'code' and is_switch_cell(src(c))]
    if slow_any:
        if sw:
            c = cells[sw[0]]
            if src(c) != SWITCH_SRC: set_src(c, SWITCH_SRC); changes.append(f'cell {c.get("id")}: RUN_SLOW switch')
        else:
            inst = [i for i, c in enumerate(cells) if c['cell_type'] == 'code' and is_install_cell(src(c))]
            at = inst[0] + 1 if inst else _top_position(cells)
            cells.insert(at, _new_cell(nb_path, 'switch', SWITCH_SRC)); changes.append('RUN_SLOW switch added')
    else:
        for i in reversed(sw):
            if src(cells[i]) == SWITCH_SRC: del cells[i]; changes.append('RUN_SLOW switch removed (no slow cells)')
    return changes, warns


def _top_position(cells):
    "After the Colab badge if there is one in the first cells, else after the title (and `#| default_exp`)."
    for i, c in enumerate(cells[:6]):
        if c['cell_type'] == 'markdown' and 'colab-badge' in src(c): return i + 1
    at = 0
    for i, c in enumerate(cells[:6]):
        if (c['cell_type'] == 'markdown' and src(c).lstrip().startswith('# ')) or (c['cell_type'] == 'code' and 'default_exp' in src(c)):
            at = i + 1
    return at


def notebooks(root=NBS):
    return [p for p in sorted(root.rglob('*.ipynb')) if p.name != 'index.ipynb'
            and not any(part.startswith(('_', '.')) for part in p.relative_to(root).parts[:-1])
            and '.ipynb_checkpoints' not in p.parts]


def write_nb(nb, path):
    "Write as nbdev/execnb does (sorted keys, indent 1, source as lists), so nbdev_clean leaves it unchanged."
    for c in nb['cells']:
        if isinstance(c['source'], str): set_src(c, c['source'])
    path.write_text(json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--check', action='store_true', help='change nothing; exit 1 listing the notebooks that need edits')
    ap.add_argument('paths', nargs='*', help='notebooks (default: every course notebook under nbs/)')
    a = ap.parse_args(argv)
    s = settings(); bad = 0
    for p in [Path(x) for x in a.paths] or notebooks():
        nb = json.loads(p.read_text(encoding='utf-8'))
        changes, warns = process(p, nb, s)
        for w in warns: print('WARNING:', w)
        if changes:
            bad += 1
            if a.check: print(f'{p.name}: not Colab-safe: ' + '; '.join(changes))
            else: write_nb(nb, p); print(f'{p.name}: ' + '; '.join(changes))
    if a.check:
        if bad: print(f'{bad} notebook(s) need `python scripts/colab_safe.py`'); return 1
        print('all notebooks Colab-safe')
    return 0


if __name__ == '__main__':
    sys.exit(main())
