#!/usr/bin/env python
"""How much averaging mirrored and turned views (`Denoiser.denoise(ensemble=...)`) gains on real CT at the unseen
doses, and what it costs; the table notebook 10b shows.

    python scripts/ensemble_gain.py                        # writes nbs/results/ensemble/real_ct.json
    python scripts/ensemble_gain.py --quick --out /tmp/e   # one slice, two doses: a smoke test

Each real CT slice (the bundled samples and pydicom-data's CT slices, as in scripts/evaluate_all.py: evaluation only)
is simulated at its own pixel spacing at 1/3, 1/5, 1/8 and 1/20 of its dose and denoised by the shipped DA-Diff
`small` with ensemble 1, 2, 4 and 8, same seed; PSNR against the normal-dose partner on [-1000, 2000] HU -> [0, 1].
Seconds are per 512x512 slice on this machine, measured in the same run.
"""
from __future__ import annotations
import argparse, json, os, shlex, sys, time
from pathlib import Path
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'scripts'))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', default=str(ROOT / 'nbs' / 'results' / 'ensemble'), help='output folder (default: nbs/results/ensemble)')
    ap.add_argument('--model', default='small', help='a shipped DA-Diff name or a model file (default: small)')
    ap.add_argument('--quick', action='store_true', help='one slice, two doses (smoke test)')
    args = ap.parse_args(argv)
    from evaluate_all import real_cases, REAL_CT
    from founddiff.core import UNSEEN_DOSES, atomic_write
    from founddiff.evaluate import evaluate, Method, ldct_method, machine_name
    from founddiff.pipeline import load_model, ENSEMBLES
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    den = load_model(args.model, device='cpu')
    names = dict(list(REAL_CT.items())[:1]) if args.quick else REAL_CT
    doses = list(UNSEEN_DOSES)[::2] if args.quick else list(UNSEEN_DOSES)
    cases, skipped = real_cases(names)
    if not cases: raise SystemExit(f"no real CT slice could be read: {skipped}")
    methods = [ldct_method()] + [Method(f'ensemble {n}', (lambda n: lambda x, d: den.denoise(x, batch_size=2, generator=0, ensemble=n))(n))
                                 for n in ENSEMBLES]
    den.denoise(cases[0].hu, generator=0)               # warm-up, so that the first timing is not the slowest
    t0 = time.time()
    table = evaluate(methods, cases, doses, progress=True)
    rows = [{k: r[k] for k in ('case', 'region', 'method', 'dose', 'psnr', 'ssim', 'seconds_per_512')} for r in table.rows]
    gain = {}
    for n in ENSEMBLES:
        d = [r['psnr'] - next(q['psnr'] for q in rows if q['case'] == r['case'] and q['dose'] == r['dose'] and q['method'] == 'LDCT')
             for r in rows if r['method'] == f'ensemble {n}']
        s = np.mean([r['seconds_per_512'] for r in rows if r['method'] == f'ensemble {n}'])
        gain[str(n)] = dict(mean_gain_over_ldct_db=round(float(np.mean(d)), 3), min_gain_db=round(float(np.min(d)), 3),
                            seconds_per_512=round(float(s), 2))
    base = gain['1']['seconds_per_512']
    for v in gain.values(): v['time_ratio'] = round(v['seconds_per_512'] / base, 2)
    out = dict(command='python ' + ' '.join(shlex.quote(a) for a in ['scripts/ensemble_gain.py', *(argv if argv is not None else sys.argv[1:])]),
               machine=machine_name(), torch=torch.__version__, threads=torch.get_num_threads(), model=str(args.model),
               doses=doses, cases=[c.name for c in cases], skipped=skipped, summary=gain, rows=rows,
               wall_s=round(time.time() - t0, 1))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    dst = Path(args.out) / 'real_ct.json'
    with atomic_write(dst, 'w') as f: f.write(json.dumps(out, indent=1) + '\n')
    for n, v in gain.items(): print(f"ensemble {n}: {v}")
    print(f"wrote {dst}")


if __name__ == '__main__':
    main()
