#!/usr/bin/env python
"""Remove the imports that ruff (F401) finds unused in founddiff/*.py from the notebooks' exported cells.

    python scripts/fix_unused_imports.py && nbdev_export && nbdev_clean

The modules are generated, so the fix goes to the notebook cell each import came from (found through nbdev's
`# %% ../nbs/NN.ipynb #cellid` markers). A name the notebook still uses in a cell that is not exported moves to the
notebook's hidden test-import cell (the first `#| hide` cell with imports that is neither the install nor the
export cell), so every notebook still runs. Check the result with `nbdev_test --path` on the notebooks it names.
"""
import ast, json, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'scripts'))
from colab_safe import write_nb, src, set_src, split_directives, is_install_cell, is_export_cell

EXPORTED = {'export', 'exports', 'exporti'}


def ruff_f401():
    r = subprocess.run(['ruff', 'check', '--no-cache', '--select', 'F401', '--output-format', 'json', 'founddiff',
                        '--exclude', 'founddiff/_modidx.py'], cwd=ROOT, capture_output=True, text=True)
    return json.loads(r.stdout or '[]')


def _find(tree, full):
    "The import node and alias that bind ruff's dotted name `full` ('.core.show_ct', 'os', 'dataclasses.field')."
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = ('.' * node.level) + (node.module or '')
            mod = '.' + mod[len('founddiff.'):] if mod.startswith('founddiff.') else mod
            hit = [a for a in node.names if f'{mod}.{a.name}' == full]
        elif isinstance(node, ast.Import): hit = [a for a in node.names if a.name == full]
        else: continue
        if hit: return node, hit[0]
    return None, None


def importers(module, name):
    "Other code (founddiff/, tests/, scripts/) that imports `name` from founddiff.`module`: removing it would break them."
    out = []
    for f in [*(ROOT / 'founddiff').glob('*.py'), *(ROOT / 'tests').glob('*.py'), *(ROOT / 'scripts').glob('*.py')]:
        try: tree = ast.parse(f.read_text())
        except SyntaxError: continue
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.module and (n.module == module and n.level == 1 or n.module == f'founddiff.{module}'):
                if any(a.name == name for a in n.names): out.append(f.relative_to(ROOT).as_posix())
    return out


def fix(issues):
    todo = {}
    for it in issues:
        f = Path(it['filename']); row = it['location']['row']
        name = re.match(r'`(.+)` imported but unused', it['message']).group(1).split('.')[-1]
        users = importers(f.stem, name)
        if users:
            print(f'{f.name}:{row}: {name} is imported from founddiff.{f.stem} by {users}: import it from its own module there first')
            continue
        lines = f.read_text().splitlines()
        hdr = next((lines[i] for i in range(row - 1, -1, -1) if lines[i].startswith('# %% ../nbs/')), None)
        if hdr is None: print(f'{f.name}:{row}: not from a notebook, fix by hand'); continue
        nbp, cid = re.match(r'# %% \.\./(nbs/\S+\.ipynb) #(\w+)', hdr).groups()
        todo.setdefault((nbp, cid), []).append(re.match(r'`(.+)` imported but unused', it['message']).group(1))
    books = {}
    for (nbp, cid), fulls in todo.items():
        nb = books.setdefault(nbp, json.loads((ROOT / nbp).read_text()))
        cell = next(c for c in nb['cells'] if c.get('id') == cid)
        heads, body, _ = split_directives(src(cell))
        lines, readd = list(body), []
        for full in fulls:
            node, a = _find(ast.parse('\n'.join(lines)), full)
            if node is None: print(f'{nbp} {cid}: {full} not found, fix by hand'); continue
            l0, l1 = node.lineno - 1, node.end_lineno - 1
            stmt = '\n'.join(lines[l0:l1 + 1])
            tok = re.escape(a.name) + (r'\s+as\s+' + re.escape(a.asname) if a.asname else '')
            new, k = re.subn(r'(?<![\w.])' + tok + r'(?![\w.])\s*,\s*', '', stmt, count=1)
            if not k: new, k = re.subn(r',\s*(?<![\w.])' + tok + r'(?![\w.])', '', stmt, count=1)
            lines[l0:l1 + 1] = new.split('\n') if k else []             # the only name: the statement goes
            bound = a.asname or a.name.split('.')[0]
            used = any(re.search(r'(?<![\w.])' + re.escape(bound) + r'(?!\w)', src(c)) for c in nb['cells']
                       if c['cell_type'] == 'code' and c is not cell and not (EXPORTED & split_directives(src(c))[2]))
            if used:
                if isinstance(node, ast.ImportFrom):
                    readd.append(f"from {'founddiff.' + node.module if node.level else node.module} import {a.name}" + (f' as {a.asname}' if a.asname else ''))
                else: readd.append(f'import {a.name}' + (f' as {a.asname}' if a.asname else ''))
            print(f"{nbp} {cid}: removed {full}" + (' (moved to the hidden imports: the notebook uses it)' if used else ''))
        set_src(cell, '\n'.join(heads + lines))
        if readd:
            hid = next((c for c in nb['cells'] if c['cell_type'] == 'code' and 'hide' in split_directives(src(c))[2]
                        and 'import' in src(c) and not is_install_cell(src(c)) and not is_export_cell(src(c))), None)
            if hid is None: print(f'{nbp}: no hidden import cell for {readd}: add them by hand'); continue
            set_src(hid, src(hid).rstrip('\n') + '\n' + '\n'.join(readd))
    for nbp, nb in books.items(): write_nb(nb, ROOT / nbp)
    return sorted(books)


if __name__ == '__main__':
    changed = fix(ruff_f401())
    print(f"{len(changed)} notebook(s) edited{': ' + ', '.join(changed) if changed else ''}; now run nbdev_export and nbdev_clean")
