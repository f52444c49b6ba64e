#!/usr/bin/env python
"""Check the outputs stored in the notebooks (CI): no errors, every notebook that draws shows an image, sizes in budget.

    python scripts/check_outputs.py                     # notebooks with no outputs yet are reported, not failed
    python scripts/check_outputs.py --require-executed  # every notebook must carry outputs (after execute_nbs.py)

A notebook with no output at all counts as "not executed" (scripts/execute_nbs.py stores them). For every executed
notebook it fails on:
- an error output (`output_type: error`) or a traceback in a stderr stream;
- drawing code (matplotlib `plt.`, `show_ct(`, plotly figures) in cells that run by default (not slow, cuda, export
  or `eval: false`) but no image output (image/png, image/jpeg, image/svg+xml);
- a machine path in an output (the repository's path, home directories): outputs never hold them;
- a notebook over NB_MAX_MB, or one output over OUTPUT_MAX_MB.
And always on nbs/ as a whole over TOTAL_MAX_MB.

Budget: the notebooks' sources and images are 1.7 MB before outputs; two executed notebooks (00_core, 05_contrastive)
grew by about 0.14 and 0.10 MB (two matplotlib figures each, ~50-70 kB a figure). With ~90 drawing cells in the course
that extrapolates to about 6-13 MB; plotly figures add a static PNG (~30-150 kB) and their JSON when under 0.5 MB.
TOTAL_MAX_MB = 40 leaves room for the course to grow; NB_MAX_MB = 6 and OUTPUT_MAX_MB = 1.5 catch an inlined
plotly.js (4.8 MB) or a stray full-resolution image stack.
"""
import argparse, json, os, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'
sys.path.insert(0, str(ROOT / 'scripts'))
TOTAL_MAX_MB, NB_MAX_MB, OUTPUT_MAX_MB = 40, 6, 1.5
IMAGE_MIMES = ('image/png', 'image/jpeg', 'image/svg+xml')
_DRAWS = re.compile(r'\bplt\.|\bshow_ct\(|\bgo\.Figure\(|\bpx\.\w+\(|\bmake_subplots\(|\.imshow\(')
_NO_RUN = {'slow', 'cuda', 'export', 'exports', 'exporti'}


def _src(x): return ''.join(x) if isinstance(x, list) else (x or '')


def machine_paths():
    pats = {str(ROOT), str(Path.home()) + '/', '/home/', '/Users/', 'C:\\Users\\'}
    return sorted(p for p in pats if p not in ('/', '//'))


def runs_by_default(cell):
    from colab_safe import split_directives
    heads, _, names = split_directives(_src(cell['source']))
    if names & _NO_RUN or 'nbdev_export' + '(' in _src(cell['source']): return False
    return not any(h.replace(' ', '').lower() == '#|eval:false' for h in heads)


def check_notebook(path, paths=None):
    "(executed?, size MB, number of images, list of problems) for one notebook."
    paths = paths or machine_paths()
    raw = path.read_text(encoding='utf-8'); nb = json.loads(raw)
    size = len(raw.encode()) / 2**20
    code = [c for c in nb['cells'] if c['cell_type'] == 'code']
    executed = any(c.get('outputs') for c in code)
    problems, images = [], 0
    if not executed: return False, size, 0, problems
    for c in code:
        where = f"cell {c.get('id', '?')}"
        for o in c.get('outputs', []):
            t = o.get('output_type')
            if t == 'error': problems.append(f"{where}: error output {o.get('ename')}: {_src(o.get('evalue'))[:200]}")
            text = _src(o.get('text'))
            if t == 'stream' and o.get('name') == 'stderr' and 'Traceback (most recent call last)' in text:
                problems.append(f'{where}: a traceback in stderr')
            data = o.get('data', {})
            images += any(m in data for m in IMAGE_MIMES)
            blob = json.dumps(o)
            if len(blob) / 2**20 > OUTPUT_MAX_MB: problems.append(f'{where}: one output of {len(blob) / 2**20:.1f} MB > {OUTPUT_MAX_MB} MB')
            texts = text + ''.join(_src(v) for k, v in data.items() if k.startswith('text/'))
            for p in paths:
                if p in texts: problems.append(f'{where}: output holds a machine path ({p})'); break
    draws = [c.get('id') for c in code if runs_by_default(c) and _DRAWS.search(_src(c['source']))]
    if draws and not images: problems.append(f'draws (cells {", ".join(draws[:4])}) but stores no image output')
    if size > NB_MAX_MB: problems.append(f'{size:.1f} MB > {NB_MAX_MB} MB per notebook')
    return True, size, images, problems


def all_notebooks():
    return [p for p in sorted(NBS.rglob('*.ipynb'))
            if not any(part.startswith(('_', '.')) for part in p.relative_to(NBS).parts[:-1])]


def dir_size_mb(root=NBS):
    return sum(f.stat().st_size for f in root.rglob('*') if f.is_file()
               and not any(part.startswith(('_', '.')) for part in f.relative_to(root).parts[:-1])) / 2**20


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--require-executed', action='store_true', help='fail on notebooks that carry no outputs')
    ap.add_argument('paths', nargs='*', type=Path, help='notebooks (default: all under nbs/)')
    a = ap.parse_args(argv)
    failed, not_run = [], []
    print(f"{'notebook':<24} {'state':<13} {'MB':>5} {'images':>6}")
    for p in a.paths or all_notebooks():
        executed, size, images, problems = check_notebook(p)
        print(f"{p.name:<24} {'executed' if executed else 'not executed':<13} {size:5.2f} {images:6d}")
        for q in problems: print(f'    {q}')
        if problems: failed.append(p.name)
        if not executed: not_run.append(p.name)
    total = dir_size_mb()
    print(f'nbs/ in all: {total:.1f} MB (budget {TOTAL_MAX_MB} MB; {NB_MAX_MB} MB a notebook, {OUTPUT_MAX_MB} MB an output)')
    bad = bool(failed)
    if total > TOTAL_MAX_MB: print(f'nbs/ is over budget: {total:.1f} MB > {TOTAL_MAX_MB} MB'); bad = True
    if not_run:
        print(f"{len(not_run)} notebook(s) not executed yet (python scripts/execute_nbs.py stores outputs): {', '.join(not_run)}")
        if a.require_executed: bad = True
    if failed: print(f"outputs with problems: {', '.join(failed)}")
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
