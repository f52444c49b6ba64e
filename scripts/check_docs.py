#!/usr/bin/env python
"""Process the notebooks for the docs site the way `nbdev_docs` does, minus Quarto (which cannot be installed on
every machine): refresh nbs/nbdev.yml, rebuild the module index, run nbdev's notebook processors into _proc/,
and check that nbs/sidebar.yml lists exactly the notebooks that exist. With Quarto installed, `nbdev_docs`
renders the site from the same files."""
import pathlib, sys
import yaml
from nbdev.quarto import refresh_quarto_yml
from nbdev.serve import proc_nbs
import nbdev.doclinks


def _names(items):
    for c in items:
        if isinstance(c, str): yield c
        else: yield from _names(c['contents'])


def main():
    refresh_quarto_yml(); nbdev.doclinks._build_modidx()
    proc_nbs(n_workers=2)
    n = len(list(pathlib.Path('_proc').glob('*.ipynb')))
    if n < 3: sys.exit(f'only {n} processed notebooks in _proc/')
    side = yaml.safe_load(open('nbs/sidebar.yml'))
    listed = set(_names(side['website']['sidebar']['contents']))
    nbs = {p.name for p in pathlib.Path('nbs').glob('*.ipynb') if not p.name.startswith('_')}
    if listed - nbs: sys.exit(f'nbs/sidebar.yml lists notebooks that do not exist: {sorted(listed - nbs)}')
    if nbs - listed: sys.exit(f'notebooks missing from nbs/sidebar.yml: {sorted(nbs - listed)}')
    print(f'docs: processed {n} notebooks into _proc/; the sidebar lists all {len(nbs)}')


if __name__ == '__main__': main()
