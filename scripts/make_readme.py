#!/usr/bin/env python
"""Write README.md from nbs/index.ipynb without Quarto (nbconvert's markdown exporter).

    python scripts/make_readme.py          # regenerate README.md
    python scripts/make_readme.py --check  # exit 1 if README.md is not current (CI)
"""
import argparse, re, sys
from pathlib import Path
import nbformat
from nbconvert import MarkdownExporter

ROOT = Path(__file__).resolve().parents[1]
HEADER = '<!-- Generated from nbs/index.ipynb by scripts/make_readme.py: edit the notebook, not this file. -->\n\n'
_DIRECTIVE = re.compile(r'^\s*#\|')


def readme_text(nb_path: Path = ROOT / 'nbs' / 'index.ipynb') -> str:
    nb = nbformat.read(nb_path, as_version=4)
    cells = []
    for c in nb.cells:
        src = c.source.splitlines()
        if c.cell_type == 'code':
            flags = ' '.join(l for l in src if _DIRECTIVE.match(l))
            if re.search(r'\b(hide|export|exporti|default_exp)\b', flags) or 'eval: false' in flags: continue
            c.source = '\n'.join(l for l in src if not _DIRECTIVE.match(l)).strip()
            c.outputs = []
        cells.append(c)
    nb.cells = cells
    body, _ = MarkdownExporter().from_notebook_node(nb)
    body = body.replace('](images/', '](nbs/images/')           # README sits at the repo root
    body = re.sub(r'\]\(([\w-]+)\.ipynb\)', r'](nbs/\1.ipynb)', body)   # any notebook beside index (10b_pipeline, method_notes)
    body = re.sub(r'\n{3,}', '\n\n', body).strip() + '\n'
    return HEADER + body


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--check', action='store_true', help='fail if README.md differs from what index.ipynb gives')
    a = ap.parse_args()
    text, readme = readme_text(), ROOT / 'README.md'
    if a.check:
        if not readme.exists() or readme.read_text(encoding='utf-8') != text:
            sys.exit('README.md is not current with nbs/index.ipynb: run `python scripts/make_readme.py` and commit it')
        print('README.md is current')
    else:
        readme.write_text(text, encoding='utf-8'); print(f'wrote {readme}')
