"founddiff.evaluate's layer, and the two scripts of the evaluation notebook run end to end at tiny sizes (seconds)."
import ast, json, subprocess, sys
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _founddiff_imports(mod: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse((ROOT / 'founddiff' / f'{mod}.py').read_text())):
        if isinstance(node, ast.Import): names |= {a.name for a in node.names}
        if isinstance(node, ast.ImportFrom) and node.module: names.add(('founddiff.' if node.level else '') + node.module)
    return {n for n in names if n.startswith('founddiff')}


def test_evaluate_sits_on_pipeline_train_metrics():
    "evaluate is a top-floor module: it may use the joins and the ground floor, never the faces (cli, widgets)."
    allowed = {f'founddiff.{m}' for m in ('core', 'metrics', 'physics', 'data', 'phantoms', 'pipeline', 'train', 'daclip', 'diffusion', 'io')}
    assert _founddiff_imports('evaluate') <= allowed, _founddiff_imports('evaluate') - allowed
    for low in ('core', 'metrics', 'physics', 'data', 'pipeline', 'train'):   # and nothing below imports it
        assert 'founddiff.evaluate' not in _founddiff_imports(low), low


def _script(name, *args, cwd):
    r = subprocess.run([sys.executable, str(ROOT / 'scripts' / name), *args], capture_output=True, text=True, cwd=cwd, timeout=600,
                       env={**__import__('os').environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_train_baselines_tiny_budget(tmp_path):
    "A budget of about a second on the tiny config: both weight files and cards are written and load back."
    from founddiff.evaluate import load_redcnn, RedCNN
    from founddiff.pipeline import load_model
    w = tmp_path / 'w'
    _script('train_baselines.py', '--budget-min', '0.02', '--config', str(ROOT / 'configs' / 'tiny.json'), '--weights-dir', str(w),
            '--runs', str(tmp_path / 'runs'), '--redcnn-batch', '2', '--redcnn-patch', '32', cwd=tmp_path)
    assert isinstance(load_redcnn(w / 'redcnn_tiny.safetensors'), RedCNN)
    m = load_model(w / 'dadiff_tiny_nodaclip.safetensors')
    assert m.conditioning == 'none' and m.daclip is None
    for card in ('redcnn_tiny.json', 'dadiff_tiny_nodaclip.json'):
        c = json.loads((w / card).read_text())
        assert c['steps'] >= 1 and c['budget_min'] == 0.02 and c['steps_per_s'] > 0 and 'cores' in c['machine']
        assert c['train_wall_s'] >= 1.2                                  # it used its budget (0.02 min), not less


def test_evaluate_all_quick(tmp_path):
    "The real-CT + phantom evaluation script, smoke-test size: every table, the plots and run.json."
    from founddiff.evaluate import read_csv
    out = tmp_path / 'e'
    _script('evaluate_all.py', '--quick', '--out', str(out), cwd=tmp_path)
    for part in ('real', 'phantoms'):
        for f in ('rows.csv', 'summary.csv', 'split.csv', 'timing.csv', 'psnr_vs_dose.png'): assert (out / f'{part}_{f}').stat().st_size > 0
        t = read_csv(out / f'{part}_rows.csv')
        assert {r['method'] for r in t.rows} == {'LDCT', 'Gaussian (oracle)', 'NLM'}
        assert all(np.isfinite(r['psnr']) for r in t.rows)
        assert 'Machine:' in (out / f'{part}.md').read_text()
    run = json.loads((out / 'run.json').read_text())
    assert run['real']['cases'] == 1 and run['phantoms']['cases'] == 3 and 'cores' in run['machine']
    # --update re-runs one method and keeps the others' rows, in their places; run.json keeps the first run and lists the update
    before = {p: read_csv(out / f'{p}_rows.csv').rows for p in ('real', 'phantoms')}
    (out / 'phantoms_rows.csv').write_text((out / 'phantoms_rows.csv').read_text().replace(',NLM,', ',NLM (old),'))   # tell kept rows apart
    _script('evaluate_all.py', '--quick', '--out', str(out), '--methods', 'gaussian', '--update', cwd=tmp_path)
    after = read_csv(out / 'phantoms_rows.csv').rows
    assert [r['method'] for r in after] == [r['method'].replace('NLM', 'NLM (old)') for r in before['phantoms']]
    for a, b in zip(after, before['phantoms']): assert (a['case'], a['dose']) == (b['case'], b['dose']) and abs(a['psnr'] - b['psnr']) < 1e-9
    run2 = json.loads((out / 'run.json').read_text())
    assert run2['command'] == run['command'] and run2['updates'][0]['methods'] == ['Gaussian (oracle)'] and '--update' in run2['updates'][0]['command']
    r = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'evaluate_all.py'), '--update', '--out', str(out)], capture_output=True, text=True)
    assert r.returncode != 0 and '--update needs --methods' in r.stderr
