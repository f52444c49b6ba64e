"""The dose slider in a real browser: Debian's chromium, headless, loads a page written by `dose_slider(...).write_html`
(plotly.js inlined, offline), a self-test script in the page moves the slider and clicks a window button with mouse
events, and writes what plotly.js then shows into the page; the test reads the page back with --dump-dom."""
import json, re, shutil, subprocess
import numpy as np
import pytest
import scipy.ndimage as ndi
from founddiff.core import WINDOWS
from founddiff.phantoms import phantom, FOV_MM
from founddiff.widgets import dose_slider

CHROMIUM = next((p for p in (shutil.which(n) for n in ('chromium', 'chromium-browser')) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium; "
                                                         ".ci/run installs it where it runs as root)")

# Runs after Plotly.newPlot; `{plot_id}` is the figure's div. Real mouse events: the slider's rail at the last tick,
# then a click on the second window button; then the state plotly.js shows, and a fingerprint of the rendered images.
SELF_TEST = r"""
(function () {
  var gd = document.getElementById('{plot_id}');
  function hash(s) { var h = 5381; for (var i = 0; i < s.length; i++) h = ((h * 33) ^ s.charCodeAt(i)) >>> 0; return h; }
  function state() {
    var imgs = Array.prototype.map.call(gd.querySelectorAll('.hm image'), function (im) {
      return hash(im.getAttribute('href') || im.getAttribute('xlink:href') || ''); });
    return {visible: gd._fullData.filter(function (t) { return t.visible === true; }).map(function (t) { return t.name; }),
            title: gd._fullLayout.title.text, cmin: gd._fullLayout.coloraxis.cmin, cmax: gd._fullLayout.coloraxis.cmax,
            slider: gd._fullLayout.sliders[0].active, button: gd._fullLayout.updatemenus[0].active, images: imgs};
  }
  function report(r) {
    var pre = document.createElement('pre'); pre.id = 'founddiff-selftest'; pre.textContent = JSON.stringify(r);
    document.body.appendChild(pre);
  }
  function mouse(el, type, x, y) {
    el.dispatchEvent(new MouseEvent(type, {bubbles: true, cancelable: true, view: window, clientX: x, clientY: y, buttons: 1}));
  }
  // plotly's slider applies its step in a requestAnimationFrame callback; a headless browser on virtual time does not
  // always draw frames, so frames become timers here: the same callback runs, only its scheduling differs
  window.requestAnimationFrame = function (cb) { return setTimeout(function () { cb(performance.now()); }, 16); };
  try {
    var before = state();
    var ticks = gd.querySelectorAll('.slider-tick-rect'), rail = gd.querySelector('.slider-rail-touch-rect');
    rail.scrollIntoView({block: 'center'});                                       // the mouse acts on what is in view
    var tb = ticks[ticks.length - 1].getBoundingClientRect(), x = tb.left + tb.width / 2, y = rail.getBoundingClientRect().top + 5;
    mouse(rail, 'mousedown', x, y); mouse(rail, 'mouseup', x, y); mouse(document, 'mouseup', x, y);
    var tries = 0;
    (function wait() {                       // the slider applies its step on the next animation frame: wait for it (at most 10 s)
      var moved = state();
      if (moved.title === before.title && ++tries < 50) { setTimeout(wait, 200); return; }
      mouse(gd.querySelectorAll('.updatemenu-button')[1], 'click', 0, 0);
      setTimeout(function () { report({before: before, moved: moved, after: state(), n_ticks: ticks.length, waits: tries}); }, 500);
    })();
  } catch (e) { report({error: String(e)}); }
})();
"""


def _self_test(page, tmp_path):
    "Load `page` in headless chromium; the JSON its self-test wrote into the DOM, and chromium's stderr (console)."
    cmd = [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
           f'--user-data-dir={tmp_path / "profile"}', '--virtual-time-budget=20000', '--enable-logging=stderr', '--v=0',
           '--dump-dom', page.as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="founddiff-selftest">(.*?)</pre>', r.stdout, re.S)
    assert m, f"the self-test wrote nothing (chromium rc {r.returncode}); stderr tail:\n{r.stderr[-2000:]}"
    res = json.loads(m.group(1).replace('&lt;', '<').replace('&gt;', '>').replace('&amp;', '&').replace('&quot;', '"'))
    return res, r.stderr


def test_dose_slider_in_chromium(tmp_path):
    hu = phantom('abdomen', 64, 0)
    fig = dose_slider(hu, lambda x: ndi.gaussian_filter(x, 1.0), pixel_spacing=FOV_MM['abdomen'] / 64, window='abdomen')
    page = tmp_path / 'slider.html'
    fig.write_html(page, include_plotlyjs=True, auto_play=False, post_script=SELF_TEST, div_id='founddiff-slider')
    assert '<script src=' not in page.read_text()                        # everything inline: works offline
    res, err = _self_test(page, tmp_path)
    assert 'error' not in res, res
    b, mv, a = res['before'], res['moved'], res['after']
    assert res['n_ticks'] == 8
    assert b['slider'] == 2 and b['visible'] == ['ldct 1/4', 'output 1/4', 'diff 1/4', 'NDCT'] and '1/4 dose' in b['title']
    # the slider moved to the last dose: other traces, another title, other pixels; the window stayed
    assert mv['slider'] == 7 and mv['visible'] == ['ldct 1/20', 'output 1/20', 'diff 1/20', 'NDCT'] and '1/20 dose' in mv['title']
    assert 'unseen in training' in mv['title'] and mv['images'] != b['images'] and mv['cmin'] == b['cmin']
    # the second window button: lung window on the grey axis, the rendered grey images change, the dose stays
    assert (b['cmin'], b['cmax']) == (WINDOWS['abdomen'].lo, WINDOWS['abdomen'].hi)
    assert a['button'] == 1 and (a['cmin'], a['cmax']) == (WINDOWS['lung'].lo, WINDOWS['lung'].hi)
    assert a['visible'] == mv['visible'] and a['images'] != mv['images']
    console = [l for l in err.splitlines() if 'CONSOLE' in l and re.search(r'Uncaught|Error|WARN', l)]
    assert not console, console


def test_demo_page_in_chromium(tmp_path):
    "The page `founddiff demo` writes (here for the bundled 128x128 slice): offline, no console errors, its slider and buttons work."
    from founddiff.cli import run_demo
    from founddiff.core import sample_path
    out = run_demo(sample_path('CT_small.dcm'), tmp_path / 'demo')
    page = (out / 'index.html').read_text()
    assert '<script src=' not in page and page.count('Plotly.newPlot(') == 1
    test_js = ("<script>window.addEventListener('load', function () { setTimeout(function () {"
               + SELF_TEST.replace('{plot_id}', 'dose-slider-0') + "}, 300); });</script>")
    probe = tmp_path / 'probe.html'
    probe.write_text(page.replace('</body>', test_js + '</body>'))        # a copy of the page with the self-test added
    res, err = _self_test(probe, tmp_path)
    assert 'error' not in res, res
    b, mv, a = res['before'], res['moved'], res['after']
    from founddiff.daclip import weights_dir
    panels = ['ldct', 'output', 'diff'] if (weights_dir() / 'dadiff_small.safetensors').exists() else ['ldct', 'diff']   # the shipped model adds its panel
    assert b['visible'] == [f'{p} 1/4' for p in panels] + ['NDCT'] and mv['visible'] == [f'{p} 1/20' for p in panels] + ['NDCT'], (b['visible'], mv['visible'])
    assert mv['images'] != b['images'] and a['cmin'] != mv['cmin'] and a['images'] != mv['images']
    console = [l for l in err.splitlines() if 'CONSOLE' in l and re.search(r'Uncaught|Error|WARN', l)]
    assert not console, console
