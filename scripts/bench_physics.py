#!/usr/bin/env python
"""Benchmark founddiff's low-dose CT simulation against the previous implementation, in the same run.

Prints, for one 512x512 abdomen phantom at the full geometry (1160 views x 672 channels):
  * `simulate_doses` at all eight doses: this checkout (first call, which builds the cached back-projector, and a
    second call) and the implementation of commit 5c96ee1 (checked out by this script into a temporary
    `git worktree`, imported in a child process), and their ratio;
  * one more dose from a `DoseSimulator` that already holds the slice's noise-free sinogram (a dose slider);
  * a batch of 8 slices of 256x256 at their geometry: time per slice;
  * the peak memory each measurement added (resident set size above the child's baseline);
  * the agreement of the fast operator with the readable `grid_sample` one (relative L2, sinogram and FBP);
  * the noise of a 200 mm water cylinder against dose (fitted exponent) and the mean bias, as a statistics check.
Every measurement runs in its own child process (clean caches and clean peak memory). Absolute times depend on the
machine and its load; the ratio to the baseline measured in the same run is the number to compare.

    python scripts/bench_physics.py              # everything (a few minutes on 2 cores: the old version alone takes 20-60 s)
    python scripts/bench_physics.py --no-old     # skip the 5c96ee1 baseline
"""
import argparse, json, os, platform, resource, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = '5c96ee1'


def _rss_mb() -> float:
    "Current resident set size (MB), from /proc."
    with open('/proc/self/statm') as f: return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(task: str) -> dict:
    "One measurement in this (child) process; returns a dict of numbers."
    import numpy as np, torch
    from founddiff.phantoms import phantom, FOV_MM
    import founddiff.physics as ph
    out = {}
    if task in ('new8', 'old8'):
        hu = phantom('abdomen', 512, 0); sp = FOV_MM['abdomen'] / 512
        base = _rss_mb()
        c, t = time.process_time(), time.perf_counter()
        low, ref = ph.simulate_doses(hu, ph.DOSES, generator=0, pixel_spacing=sp)
        out['first_s'], out['first_cpu_s'] = time.perf_counter() - t, time.process_time() - c
        out['peak_extra_mb'] = _peak_mb() - base
        if task == 'new8':
            c, t = time.process_time(), time.perf_counter()
            low, ref = ph.simulate_doses(hu, ph.DOSES, generator=0, pixel_spacing=sp)
            out['second_s'], out['second_cpu_s'] = time.perf_counter() - t, time.process_time() - c
            sim = ph.DoseSimulator(hu, pixel_spacing=sp); sim(0.5, generator=0)
            ts = []
            for d in ph.DOSES:
                t = time.perf_counter(); sim(d, generator=1); ts.append(time.perf_counter() - t)
            out['one_more_dose_s'] = float(np.median(ts)); out['one_more_dose_max_s'] = max(ts)
            out['peak_extra_mb'] = _peak_mb() - base
        body = ref > -500
        out['noise_1_4_hu'] = float(np.std((low[2] - ref)[body]))
        np.save(os.environ['BENCH_OUT'] + f'.{task}.npy', np.stack([ref, low[2]]))
    elif task == 'batch256':
        hu = np.stack([phantom(r, 256, s) for s in range(3) for r in ('head', 'chest', 'abdomen')][:8]); sp = FOV_MM['abdomen'] / 256
        base = _rss_mb()
        ph.simulate_doses(hu[:1], ph.DOSES, generator=[0], pixel_spacing=sp)   # build the back-projector once
        t = time.perf_counter(); ph.simulate_doses(hu, ph.DOSES, generator=list(range(8)), pixel_spacing=sp); dt = time.perf_counter() - t
        out.update(batch_s=dt, per_slice_s=dt / 8, peak_extra_mb=_peak_mb() - base)
    elif task == 'agree':
        hu = phantom('abdomen', 512, 0); sp = FOV_MM['abdomen'] / 512
        g = ph.FanBeamGeometry.for_image((512, 512), sp); mu = torch.tensor(ph.hu_to_mu(hu))
        pg, pf = ph.fan_project(mu, g, sp, backend='grid'), ph.fan_project(mu, g, sp, backend='fast')
        rg, rf = (ph.fan_fbp(pg, g, (512, 512), sp, filter='hann', backend=b) for b in ('grid', 'fast'))
        rel = lambda a, b: float((a - b).norm() / b.norm())
        out.update(sino_rel_l2=rel(pf, pg), fbp_rel_l2=rel(rf, rg))
    elif task == 'water':
        from founddiff.phantoms import rasterize, Ellipse
        N, fov = 256, 350.
        cyl = rasterize([Ellipse(0, 0, 200 / fov, 200 / fov, 0, 0., 'water')], N, 4)
        low, ref = ph.simulate_doses(np.stack([cyl] * 2), ph.DOSES, generator=0, pixel_spacing=fov / N)
        yy, xx = np.mgrid[:N, :N]
        roi = (yy - (N - 1) / 2)**2 + (xx - (N - 1) / 2)**2 <= (0.6 * 100 / (fov / N))**2
        std = (low - ref[None])[:, :, roi].std((1, 2)); mean = low[:, :, roi].mean((1, 2))
        out.update(exponent=float(np.polyfit(np.log(ph.DOSES), np.log(std), 1)[0]), max_abs_bias_hu=float(np.abs(mean).max()))
    return out


def run_child(task: str, pythonpath: Path, out_prefix: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(pythonpath), BENCH_OUT=out_prefix, PYTHONWARNINGS='ignore')
    load0 = os.getloadavg()[0]
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), '--child', task], env=env, capture_output=True, text=True,
                       cwd=str(pythonpath))
    if r.returncode: raise RuntimeError(f"child {task} failed:\n{r.stderr[-3000:]}")
    return dict(json.loads(r.stdout.strip().splitlines()[-1]), load=(load0 + os.getloadavg()[0]) / 2)


def machine() -> str:
    import torch
    cpu = platform.processor() or platform.machine()
    try: cpu = next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration): pass
    try: load = ', load average %.2f %.2f %.2f' % os.getloadavg()
    except OSError: load = ''
    return f"{platform.node()}: {cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads){load}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--no-old', action='store_true', help=f'skip the baseline (commit {BASELINE})')
    ap.add_argument('--child', help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child: print(json.dumps(child(args.child))); return
    print(f"machine: {machine()}")
    print("one 512x512 abdomen phantom (0.68 mm pixels), 1160 views x 672 channels, Hann FBP, eight doses\n")
    with tempfile.TemporaryDirectory() as tmp:
        prefix = str(Path(tmp) / 'bench')
        new = run_child('new8', ROOT, prefix)
        old, wt = None, Path(tmp) / 'old'
        if not args.no_old:
            subprocess.run(['git', '-C', str(ROOT), 'worktree', 'add', '--detach', '-q', str(wt), BASELINE], check=True)
            try: old = run_child('old8', wt, prefix)
            finally: subprocess.run(['git', '-C', str(ROOT), 'worktree', 'remove', '--force', str(wt)], check=False)
        print(f"simulate_doses, 8 doses, this checkout: first call {new['first_s']:.2f} s (builds the back-projector), "
              f"second call {new['second_s']:.2f} s; CPU time {new['first_cpu_s']:.1f} s and {new['second_cpu_s']:.1f} s "
              f"(load average during the run {new['load']:.1f})")
        if old:
            print(f"simulate_doses, 8 doses, commit {BASELINE}: {old['first_s']:.2f} s, CPU time {old['first_cpu_s']:.1f} s "
                  f"(load average during the run {old['load']:.1f})")
            print(f"  ratio {BASELINE} / this, wall: {old['first_s'] / new['first_s']:.1f}x (first call), "
                  f"{old['first_s'] / new['second_s']:.1f}x (second call); CPU time: {old['first_cpu_s'] / new['first_cpu_s']:.1f}x, "
                  f"{old['first_cpu_s'] / new['second_cpu_s']:.1f}x")
            import numpy as np
            a, b = np.load(prefix + '.new8.npy'), np.load(prefix + '.old8.npy')
            print(f"  same seed, both versions: reference max |diff| {np.abs(a[0] - b[0]).max():.3f} HU, "
                  f"1/4 dose mean |diff| {np.abs(a[1] - b[1]).mean():.3f} HU; noise at 1/4 dose {new['noise_1_4_hu']:.1f} vs {old['noise_1_4_hu']:.1f} HU")
            print(f"  peak memory added: this {new['peak_extra_mb']:.0f} MB, {BASELINE} {old['peak_extra_mb']:.0f} MB")
        else: print(f"  peak memory added: {new['peak_extra_mb']:.0f} MB")
        print(f"one more dose from a DoseSimulator (sinogram kept): median {new['one_more_dose_s']:.2f} s, max {new['one_more_dose_max_s']:.2f} s")
        b = run_child('batch256', ROOT, prefix)
        print(f"batch of 8 slices of 256x256 (580 views x 336 channels), 8 doses each: {b['batch_s']:.2f} s, "
              f"{b['per_slice_s']:.2f} s per slice; peak memory added {b['peak_extra_mb']:.0f} MB")
        g = run_child('agree', ROOT, prefix)
        print(f"fast vs readable (grid_sample) operator at 512x512: sinogram rel. L2 {g['sino_rel_l2']:.1e}, FBP {g['fbp_rel_l2']:.1e}")
        w = run_child('water', ROOT, prefix)
        print(f"200 mm water cylinder, 256x256: noise exponent {w['exponent']:.3f} (expected -0.5 +/- 0.05), "
              f"max |mean| {w['max_abs_bias_hu']:.2f} HU")


if __name__ == '__main__':
    main()
