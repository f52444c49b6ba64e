#!/usr/bin/env python
"""Execute the course notebooks top to bottom on the CPU and store their outputs, so figures show without running.

    python scripts/execute_nbs.py                       # index and every course notebook in nbs/, in order
    python scripts/execute_nbs.py --only 00_core 05_contrastive
    python scripts/execute_nbs.py --isolated            # run each copy in an empty folder (no repository files beside it)
    python scripts/execute_nbs.py --isolated --installed --no-write   # Colab mimic: + founddiff from the installed wheel

Each notebook runs in a fresh kernel (nbclient) with the defaults a student gets in Colab on a CPU: `RUN_SLOW = False`
(slow cells print a note), no GPU (cuda cells print a note), the closing `nbdev_export()` cell and `#| eval: false`
cells not run (as nbdev_test does). Outputs are stored in the notebook, which is then cleaned the way `nbdev_clean`
cleans it (execution counts and metadata go, outputs stay; settings.ini keeps clear_all off), so a later
`nbdev_clean` changes nothing.

Figures: matplotlib draws inline PNGs. plotly figures are rendered with the `plotly_mimetype` renderer (no plotly.js
copy in the notebook) and stored as a static PNG, drawn by headless chromium when it is installed, next to the
figure's JSON when that is at most PLOTLY_JSON_MAX bytes (JupyterLab and VS Code then show it live); re-running the
cell makes any figure live. ipywidget outputs become a one-line text note (no widget state is stored).

Each notebook's kernel CPU minutes (its process and its child processes) and wall minutes go to nbs/course_times.json,
keyed by file name ({"00_core.ipynb": {"cpu_min": 0.4, "wall_min": 0.5}}, plus "_machine" and "_how" notes), which
scripts/course_map.py turns into the index's course map; a table is printed at the end. Exit status 1 if any notebook failed (a failed
notebook is not rewritten).
"""
import argparse, base64, copy, json, os, platform, shutil, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'
sys.path.insert(0, str(ROOT / 'scripts'))
TIMES = NBS / 'course_times.json'
PLOTLY_JSON_MAX = 500_000          # bytes of figure JSON kept next to the static image
PLOTLY_MIME = 'application/vnd.plotly.v1+json'
WIDGET_MIME = 'application/vnd.jupyter.widget-view+json'
_TIMING_CELL = ("import json as _j, time as _t, resource as _r\n"
                "_c = _r.getrusage(_r.RUSAGE_CHILDREN)\n"
                "print('__FOUNDDIFF_CPU__' + _j.dumps(_t.process_time() + _c.ru_utime + _c.ru_stime))")


def course_notebooks():
    "index first (its figures show on the docs home), then the course notebooks in order."
    from colab_safe import notebooks
    return [p for p in [NBS / 'index.ipynb'] if p.exists()] + notebooks(NBS)


def _skipped(src):
    "Cells nbdev_test does not run either: the export cell and `#| eval: false`."
    from colab_safe import split_directives
    heads, _, _ = split_directives(src)
    return 'nbdev_export' + '(' in src or any(h.replace(' ', '').lower() == '#|eval:false' for h in heads)


def kernel_env(installed=False):
    "The kernel's environment: no IN_TEST (so RUN_SLOW stays False), inline figures, plotly as JSON, no GPU."
    env = {k: v for k, v in os.environ.items() if k not in ('IN_TEST', 'MPLBACKEND', 'PLOTLY_RENDERER')}
    env['PLOTLY_RENDERER'] = 'plotly_mimetype'
    env['CUDA_VISIBLE_DEVICES'] = ''          # the CPU, as on a Colab CPU runtime, even on a GPU machine
    paths = [x for x in env.get('PYTHONPATH', '').split(os.pathsep) if x and Path(x).resolve() != ROOT]
    env['PYTHONPATH'] = os.pathsep.join(paths if installed else [str(ROOT)] + paths)   # installed: the founddiff pip put there
    return env


def execute(path, timeout=600, isolated=False, installed=False):
    "Run `path` in a fresh kernel; (executed notebook, cpu seconds, wall seconds). Raises on a cell error."
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    run = copy.deepcopy(nb)
    for c in run.cells:
        if c.cell_type == 'code' and _skipped(c.source): c.metadata.setdefault('tags', []).append('skip-execution')
    run.cells.append(nbformat.v4.new_code_cell(_TIMING_CELL))
    with tempfile.TemporaryDirectory() as tmp:
        cwd = path.parent
        if isolated: cwd = Path(tmp) / 'colab'; cwd.mkdir(); shutil.copy(path, cwd / path.name)
        client = NotebookClient(run, timeout=timeout, kernel_name='python3', store_widget_state=False,
                                resources={'metadata': {'path': str(cwd)}})
        t0 = time.perf_counter()
        client.execute(env=kernel_env(installed))
        wall = time.perf_counter() - t0
    out = ''.join(o.get('text', '') for o in run.cells[-1].outputs if o.get('output_type') == 'stream')
    cpu = float(out.split('__FOUNDDIFF_CPU__')[1].split()[0])
    for c, r in zip(nb.cells, run.cells[:-1]):
        if c.cell_type == 'code': c.outputs = r.outputs
    return nb, cpu, wall


# --- plotly figures: a static image (and the JSON when small) -----------------------------------------------------
def chromium():
    return next((p for p in (shutil.which(n) for n in ('chromium', 'chromium-browser')) if p), None)


def plotly_png(fig_json, browser=None):
    "PNG bytes of a plotly figure drawn by headless chromium (plotly.js inlined, nothing fetched), or None."
    browser = browser or chromium()
    if not browser: return None
    import plotly.graph_objects as go
    fig = go.Figure(fig_json)
    w = int(fig.layout.width or 800); h = int(fig.layout.height or 500)
    with tempfile.TemporaryDirectory() as tmp:
        page, png = Path(tmp) / 'fig.html', Path(tmp) / 'fig.png'
        fig.write_html(page, include_plotlyjs=True, full_html=True, auto_play=False,
                       config={'staticPlot': True, 'displayModeBar': False})
        cmd = [browser, '--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
               '--hide-scrollbars', f'--user-data-dir={Path(tmp) / "profile"}', '--virtual-time-budget=10000',
               f'--window-size={w + 20},{h + 20}', f'--screenshot={png}', page.as_uri()]
        try: subprocess.run(cmd, capture_output=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired): return None
        return png.read_bytes() if png.exists() and png.stat().st_size > 0 else None


def shrink_plotly(nb, browser=None):
    "Replace each plotly output by a static PNG (+ the figure JSON if small) and a text note; (figures, images)."
    n = imgs = 0
    for c in nb.cells:
        for o in c.get('outputs', []):
            data = o.get('data', {})
            if PLOTLY_MIME not in data: continue
            n += 1
            fig = data[PLOTLY_MIME]
            js = json.dumps(fig)
            png = plotly_png(fig, browser)
            new = {'text/plain': ['Interactive plotly figure, stored as a static image: run the cell to make it live.']}
            if png: new['image/png'] = base64.b64encode(png).decode(); imgs += 1
            if len(js) <= PLOTLY_JSON_MAX: new[PLOTLY_MIME] = fig
            o['data'] = new
            o['metadata'] = {}
    for c in nb.cells:                       # ipywidgets: no widget state is stored, so keep only a text note
        for o in c.get('outputs', []):
            if WIDGET_MIME in o.get('data', {}):
                o['data'] = {'text/plain': ['Interactive widget (ipywidgets): run the cell to use it.']}
    return n, imgs


def clean_and_write(nb, path):
    "Write `nb` as nbdev_clean leaves a notebook (execnb's format, settings.ini's clean options)."
    from nbdev.clean import clean_nb
    from nbdev.config import get_config
    from execnb.nbio import dict2nb, write_nb
    import nbformat
    cfg = get_config(path=ROOT)
    text = nbformat.writes(nb)
    for root in {str(ROOT), str(ROOT.resolve())}:                  # outputs name files relative to the repository, not this machine
        text = text.replace(json.dumps(root + '/')[1:-1], '').replace(json.dumps(root)[1:-1], '.')
    d = json.loads(text)
    nbx = dict2nb(d)
    clean_nb(nbx, False, cfg.get('allowed_metadata_keys').split(), cfg.get('allowed_cell_metadata_keys').split(), cfg.clean_ids)
    tmp = path.with_name('.' + path.name + '.tmp')
    write_nb(nbx, tmp); os.replace(tmp, path)


def load_times(path=TIMES):
    return json.loads(path.read_text()) if path.exists() else {}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--only', nargs='+', metavar='NAME', help='notebook names (with or without .ipynb), e.g. 00_core')
    ap.add_argument('--timeout', type=int, default=600, help='seconds one cell may run (default 600)')
    ap.add_argument('--isolated', action='store_true', help='run a copy in an empty folder, as Colab would (no repo files)')
    ap.add_argument('--installed', action='store_true', help="use the founddiff installed in this Python (e.g. from the wheel), not this checkout")
    ap.add_argument('--no-write', action='store_true', help='run and time, but store neither outputs nor times')
    ap.add_argument('--times', type=Path, default=TIMES, help=f'JSON file of minutes per notebook (default {TIMES.relative_to(ROOT)})')
    a = ap.parse_args(argv)
    nbs = course_notebooks()
    if a.only:
        want = {Path(x).stem for x in a.only}
        unknown = want - {p.stem for p in nbs}
        if unknown: ap.error(f'--only: no such notebook {sorted(unknown)} in {NBS}')
        nbs = [p for p in nbs if p.stem in want]
    browser = chromium()
    if not browser: print('chromium not found: plotly figures are stored without a static image (apt-get install chromium)')
    times, rows, failed = load_times(a.times), [], []
    for p in nbs:
        print(f'executing {p.relative_to(ROOT)} ...', flush=True)
        try: nb, cpu, wall = execute(p, a.timeout, a.isolated, a.installed)
        except Exception as e:                                   # CellExecutionError, timeouts, a dead kernel
            failed.append(p.name); print(f'FAILED {p.name}: {str(e)[-3000:]}', flush=True); continue
        figs, imgs = shrink_plotly(nb, browser)
        if not a.no_write:
            clean_and_write(nb, p)
            times[p.name] = {'cpu_min': round(cpu / 60, 2), 'wall_min': round(wall / 60, 2)}
        rows.append((p.stem, cpu / 60, wall / 60, p.stat().st_size / 2**20, figs))
    if rows and not a.no_write:
        meta = {'_machine': f'{platform.machine()} {platform.processor() or ""}'.strip() + f', {os.cpu_count()} CPUs, '
                            f'OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS", "unset")}, Python {platform.python_version()}',
                '_how': 'python scripts/execute_nbs.py: CPU only, default flags (RUN_SLOW = False), minutes'}
        data = {**meta, **{k: v for k, v in sorted(times.items()) if not k.startswith('_')}}
        tmp = a.times.with_name('.' + a.times.name + '.tmp'); tmp.write_text(json.dumps(data, indent=1) + '\n'); os.replace(tmp, a.times)
    print(f"\n{'notebook':<20} {'CPU min':>8} {'wall min':>9} {'MB':>6} {'plotly':>6}")
    for r in rows: print(f'{r[0]:<20} {r[1]:8.2f} {r[2]:9.2f} {r[3]:6.2f} {r[4]:6d}')
    if failed: print(f'\nFAILED: {", ".join(failed)}'); return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
