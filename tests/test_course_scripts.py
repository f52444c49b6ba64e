"The course scripts: colab_safe (Colab-safe Run all), execute_nbs (stored outputs, minutes), check_outputs (CI checks)."
import base64, json, os, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'scripts'))
import colab_safe as cs, check_outputs as co, execute_nbs as ex


def _nb(*cells):
    "A notebook dict of code cells (str) and markdown cells (('md', str))."
    out = []
    for i, c in enumerate(cells):
        md = isinstance(c, tuple)
        d = {'cell_type': 'markdown' if md else 'code', 'id': f'c{i:07d}', 'metadata': {}, 'source': []}
        if not md: d.update(execution_count=None, outputs=[])
        cs.set_src(d, c[1] if md else c); out.append(d)
    return {'cells': out, 'metadata': {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}},
            'nbformat': 4, 'nbformat_minor': 5}


SLOW = '''#| slow
msg = """a multi-line string
whose second line must not move"""
open('slow_ran.txt', 'w').write(msg)
len(msg)'''
CUDA = "#| cuda\nx = torch.zeros(1, device='cuda')\nprint('gpu ok')"
EXPORT = '#| hide\nimport nbdev; nbdev.nbdev_export()'


def _course_nb():
    return _nb('#| default_exp demo', ('md', '# Demo\n\n> a test notebook'), '#| hide\nfrom fastcore.test import test_eq',
               '#| export\nimport torch\nfrom founddiff.core import hu_to_unit', SLOW, CUDA, "print('plain cell ran')", EXPORT)


def _sources(nb): return [cs.src(c) for c in nb['cells']]


def test_colab_safe_edits_and_is_idempotent(tmp_path):
    p = tmp_path / 'nbs' / '99_demo.ipynb'; p.parent.mkdir()
    nb = _course_nb()
    changes, warns = cs.process(p, nb)
    assert not warns and len(changes) == 5, changes        # slow guard, cuda guard, export, install added, switch added
    s = _sources(nb)
    inst = next(x for x in s if cs.INSTALL_MARK in x)
    assert inst.startswith('#| hide\n#| eval: false') and "if 'google.colab' in sys.modules:" in inst and '-c' in inst
    compile(inst, 'install', 'exec')
    assert 'fastcore>=1.12.3,<2' in inst and 'torch' not in inst.split('pin.name,')[1]    # installs no torch itself
    assert s.index(inst) == 2 and s[3] == cs.SWITCH_SRC                       # after the title, then the switch
    slow = next(x for x in s if x.startswith('#| slow'))
    assert slow.splitlines()[1] == 'if RUN_SLOW:' and '\nwhose second line must not move"""' in slow   # string unchanged
    assert '    display(len(msg))' in slow and slow.endswith(cs.GUARDS[True, False][1])
    assert next(x for x in s if x.startswith('#| cuda')).splitlines()[1] == 'if torch.cuda.is_available():'
    exp = next(x for x in s if 'nbdev_export' in x)
    assert "if Path('../settings.ini').exists():" in exp
    again = json.loads(json.dumps(nb))
    assert cs.process(p, again) == ([], []) and again == nb                   # idempotent
    # a slow cell that also becomes a cuda cell gets the combined guard, its body unchanged
    c = next(c for c in again['cells'] if cs.src(c).startswith('#| slow'))
    cs.set_src(c, '#| slow\n#| cuda\n' + cs.src(c).split('\n', 1)[1])
    cs.process(p, again)
    both = cs.src(c).splitlines()
    assert both[2] == 'if RUN_SLOW and torch.cuda.is_available():' and both[3:-2] == slow.splitlines()[2:-2]


def test_colab_safe_check_passes_on_the_repository():
    assert cs.main(['--check']) == 0


def test_colab_safe_install_cell_follows_imports(tmp_path):
    "nbformat comes from the dev extras when a notebook imports it; unknown packages are reported."
    p = tmp_path / 'x.ipynb'
    nb = _nb('#| default_exp x', '#| export\nimport founddiff', 'import nbformat\nimport notapackage_xyz')
    _, warns = cs.process(p, nb)
    assert any("'nbformat>=" in x for x in _sources(nb)) and any('notapackage_xyz' in w for w in warns)


@pytest.fixture(scope='module')
def executed(tmp_path_factory):
    "The demo notebook made Colab-safe, then executed by execute_nbs (one kernel) outside the repository."
    d = tmp_path_factory.mktemp('nbs'); p = d / '99_demo.ipynb'
    nb = _course_nb(); cs.process(p, nb); cs.write_nb(nb, p)
    out, cpu, wall = ex.execute(p, timeout=120)
    return p, out, cpu, wall


def test_execute_runs_as_colab_does(executed):
    "RUN_SLOW = False skips the slow cell with a note, the cuda cell skips on a CPU, the export cell does not run."
    p, out, cpu, wall = executed
    text = {c.id: ''.join(o.get('text', '') for o in c.outputs) for c in out.cells if c.cell_type == 'code'}
    assert not any(o.get('output_type') == 'error' for c in out.cells for o in c.get('outputs', []))
    slow = next(c for c in out.cells if c.source.startswith('#| slow'))
    cuda = next(c for c in out.cells if c.source.startswith('#| cuda'))
    assert 'Skipped: a slow cell' in text[slow.id] and not (p.parent / 'slow_ran.txt').exists()
    assert 'Skipped: this cell needs a CUDA GPU' in text[cuda.id]
    assert 'plain cell ran' in ''.join(text.values())
    assert len(out.cells) == len(json.loads(p.read_text())['cells'])             # the timing cell is gone
    assert 0 < cpu and cpu <= wall * os.cpu_count() + 5


def test_stored_notebook_is_nbdev_clean_stable(executed, tmp_path):
    from nbdev.clean import nbdev_clean
    p, out, *_ = executed
    q = tmp_path / 'stored.ipynb'; ex.clean_and_write(out, q)
    before = q.read_text(); nbdev_clean(fname=str(q))
    assert q.read_text() == before and 'plain cell ran' in before
    ok, size, imgs, problems = co.check_notebook(q)
    assert ok and problems == []


def test_nbdev_test_flags_still_decide(tmp_path):
    "Under nbdev_test RUN_SLOW follows IN_TEST: `--flags slow` runs the guarded slow cell, the default skips it."
    from nbdev.test import test_nb
    p = tmp_path / 'demo.ipynb'
    nb = _nb(('md', '# Demo'), SLOW, "print('done')"); cs.process(p, nb); cs.write_nb(nb, p)
    env = os.environ.pop('IN_TEST', None)
    try:
        ok, _ = test_nb(p, skip_flags=['slow', 'cuda']); assert ok and not (tmp_path / 'slow_ran.txt').exists()
        ok, _ = test_nb(p, skip_flags=['slow', 'cuda'], force_flags=['slow']); assert ok and (tmp_path / 'slow_ran.txt').exists()
    finally:
        if env is None: os.environ.pop('IN_TEST', None)
        else: os.environ['IN_TEST'] = env


def _write(tmp_path, name, nb):
    p = tmp_path / name; p.write_text(json.dumps(nb)); return p


def _out(nb, i, *outputs):
    nb['cells'][i]['outputs'] = list(outputs); return nb


PNG = {'output_type': 'display_data', 'metadata': {}, 'data': {'image/png': 'iVBORw0KGgo=', 'text/plain': ['<Figure>']}}


def test_check_outputs_verdicts(tmp_path):
    draw = lambda: _nb('import matplotlib.pyplot as plt', 'plt.plot([1, 2]);', "print('x')")
    ok, _, _, probs = co.check_notebook(_write(tmp_path, 'a.ipynb', draw()))
    assert not ok and probs == []                                               # not executed: reported, not failed
    good = _out(draw(), 1, PNG)
    ok, _, n, probs = co.check_notebook(_write(tmp_path, 'b.ipynb', good)); assert ok and n == 1 and probs == []
    noimg = _out(draw(), 2, {'output_type': 'stream', 'name': 'stdout', 'text': ['x\n']})
    assert 'stores no image' in co.check_notebook(_write(tmp_path, 'c.ipynb', noimg))[3][0]
    err = _out(draw(), 1, PNG, {'output_type': 'error', 'ename': 'ValueError', 'evalue': 'bad', 'traceback': []})
    assert 'error output ValueError' in co.check_notebook(_write(tmp_path, 'd.ipynb', err))[3][0]
    tb = _out(draw(), 1, PNG, {'output_type': 'stream', 'name': 'stderr', 'text': ['Traceback (most recent call last):\n']})
    assert 'traceback' in co.check_notebook(_write(tmp_path, 'e.ipynb', tb))[3][0]
    path = _out(draw(), 1, PNG, {'output_type': 'stream', 'name': 'stdout', 'text': [f'wrote {ROOT}/x.png\n']})
    assert 'machine path' in co.check_notebook(_write(tmp_path, 'f.ipynb', path))[3][0]
    big = _out(draw(), 1, {'output_type': 'display_data', 'metadata': {}, 'data': {'image/png': 'A' * int(co.OUTPUT_MAX_MB * 2**20 + 10)}})
    assert 'MB >' in co.check_notebook(_write(tmp_path, 'g.ipynb', big))[3][0]
    slow_draw = _out(_nb('#| slow\nplt.plot([1])', "print('x')"), 1, {'output_type': 'stream', 'name': 'stdout', 'text': ['x']})
    assert co.check_notebook(_write(tmp_path, 'h.ipynb', slow_draw))[3] == []   # only default-run cells must draw
    assert co.main([str(tmp_path / 'a.ipynb')]) == 0 and co.main(['--require-executed', str(tmp_path / 'a.ipynb')]) == 1
    assert co.main([str(tmp_path / 'd.ipynb')]) == 1


def test_plotly_output_becomes_a_static_image():
    import nbformat
    fig = {'data': [{'type': 'heatmap', 'z': [[0, 1], [1, 0]]}], 'layout': {'width': 300, 'height': 200}}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('fig')])
    nb.cells[0].outputs = [nbformat.v4.new_output('display_data', data={ex.PLOTLY_MIME: fig}),
                           nbformat.v4.new_output('display_data', data={ex.WIDGET_MIME: {'model_id': 'abc'}, 'text/plain': 'VBox()'})]
    n, imgs = ex.shrink_plotly(nb)
    assert nb.cells[0].outputs[1]['data'] == {'text/plain': ['Interactive widget (ipywidgets): run the cell to use it.']}
    data = nb.cells[0].outputs[0]['data']
    assert n == 1 and data[ex.PLOTLY_MIME] == fig and 'run the cell' in data['text/plain'][0]
    if ex.chromium():
        assert imgs == 1 and base64.b64decode(data['image/png'])[:8] == b'\x89PNG\r\n\x1a\n'
    else:
        assert imgs == 0 and 'image/png' not in data
