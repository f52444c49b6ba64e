"scripts/course_map.py: the course map in nbs/index.ipynb is generated from nbs/course.json and the measured times (fast)."
import importlib.util, json, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location('course_map', ROOT / 'scripts' / 'course_map.py')
cm = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(cm)


def _course(**over):
    n = dict(file='00_core.ipynb', module='core', path='core', gpu='not used', study_min=110,
             objective='learn | things', prerequisites=['Python'])
    n.update(over)
    return {'notebooks': [n], 'notation': [{'symbol': '$\\tau$', 'meaning': 'temperature', 'unit': '1', 'code': '`tau`'}],
            'units': [{'quantity': 'CT number', 'unit': 'HU', 'note': '-'}]}


def test_times_shown_or_not_yet_measured():
    c = _course()
    assert '| not yet measured |' in cm.course_map(c, {})
    text = cm.course_map(c, {'00_core.ipynb': {'cpu_min': 0.43, 'wall_min': 0.5}})
    assert '| 0.4 |' in text and 'not yet measured' not in text and 'total 0.4 min for the 1 measured' in text
    assert 'learn \\| things' in text                      # a '|' in a cell is escaped, the table keeps its columns
    assert text.startswith(cm.BEGIN)


def test_bad_course_json_names_the_problem(tmp_path):
    for over, msg in [(dict(path='core path'), 'path must be one of'), (dict(gpu='yes'), 'gpu must be one of'),
                      (dict(prerequisites='00_core'), 'prerequisites must be a list')]:
        p = tmp_path / 'course.json'; p.write_text(json.dumps(_course(**over)))
        with pytest.raises(ValueError, match=msg): cm.load_course(p)
    c = _course(); c['notebooks'] *= 2
    p.write_text(json.dumps(c))
    with pytest.raises(ValueError, match='listed twice'): cm.load_course(p)
    c = _course(); del c['notebooks'][0]['objective']
    p.write_text(json.dumps(c))
    with pytest.raises(ValueError, match='lacks'): cm.load_course(p)


def test_problems_unlisted_notebook_and_core_length(tmp_path, monkeypatch):
    for f in ('index.ipynb', '00_core.ipynb', '99_new.ipynb'): (tmp_path / f).write_text('{}')
    monkeypatch.setattr(cm, 'NBS', tmp_path)
    got = cm.problems(_course())
    assert got == ['nbs/99_new.ipynb is not in nbs/course.json'], got
    assert any('core path is 300 min' in p for p in cm.problems(_course(study_min=300)))


def test_repository_course_map_is_current_and_complete():
    course = cm.load_course()
    assert cm.problems(course) == []
    r = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'course_map.py'), '--check'], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    files = [n['file'] for n in course['notebooks']]
    assert 'method_notes.ipynb' in files and '12b_evaluate.ipynb' in files
    symbols = [s['symbol'] for s in course['notation']]
    assert len(symbols) == len(set(symbols))                 # one row per symbol
