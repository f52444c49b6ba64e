#!/usr/bin/env python
"""The comparison of the evaluation notebook (12b_evaluate), run once on this machine: every available method on
held-out phantoms and on real CT, eight doses, seen vs unseen, with timings; tables and plots into --out.

    python scripts/evaluate_all.py                       # writes nbs/results/evaluate/ (what the notebook shows)
    python scripts/evaluate_all.py --quick --out /tmp/e  # smoke test: small phantoms, one real slice, fast methods

Cases
- phantoms: `--phantoms` held-out phantoms per region (split 'test': never trained on), head / chest / abdomen, at
  `--size` (512: the full scanner geometry), each at its region's pixel spacing.
- real CT: the CT slices bundled with founddiff (693_UNCI.dcm, CT_small.dcm, from pydicom's test data) and the other CT
  slices of pydicom-data (`pip install pydicom-data`; skipped with a note when absent), each simulated at its own size
  and pixel spacing. Evaluation only: no model here was trained on any real scan.
Each low-dose image is scored against its normal-dose partner (the same slice through the same simulated scanner,
without the added noise), on [-1000, 2000] HU -> [0, 1], full image (founddiff.metrics).

Methods (founddiff.evaluate.default_methods): LDCT, Gaussian (oracle), NLM, RED-CNN and DA-Diff without DA-CLIP when
their weights exist (scripts/train_baselines.py), DA-Diff `small` when it ships (scripts/train_small.py).

Writes {real,phantoms}_{rows,summary,split,timing}.csv, {real,phantoms}.md, {real,phantoms}_psnr_vs_dose.png and
run.json (command, machine, methods, skipped methods and cases, the goal checks).
"""
from __future__ import annotations
import argparse, json, shlex, sys, time, warnings
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# real CT slices: file -> region (from the DICOM body part where it is right; by eye where it is missing or wrong)
REAL_CT = {
    '693_UNCI.dcm': 'head',                 # bundled with founddiff; an axial head slice (no body part in the header)
    'CT_small.dcm': 'other',                # bundled with founddiff; a 128x128 crop around a vertebra (no body part)
    'J2K_pixelrep_mismatch.dcm': 'head',    # pydicom-data, body part HEAD
    'explicit_VR-UN.dcm': 'abdomen',        # pydicom-data, body part PANCREAS
    'bad_sequence.dcm': 'abdomen',          # pydicom-data, says NECK but shows the lumbar spine and abdomen
}


def real_cases(names=REAL_CT, log=print):
    "Cases from the bundled samples and pydicom-data's CT slices; those that cannot be found or read are skipped (reason logged)."
    from founddiff.core import sample_path, SAMPLES
    from founddiff.io import read_dicom
    from founddiff.evaluate import Case
    out, skipped = [], {}
    for name, region in names.items():
        try:
            if name in SAMPLES: path = sample_path(name)
            else:
                from pydicom.data import get_testdata_file
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore'); path = get_testdata_file(name)
                if path is None: raise FileNotFoundError(f"{name} is not in pydicom's test data (pip install pydicom-data)")
            img = read_dicom(path)
            out.append(Case(name, img.hu.astype(np.float32), img.meta.get('pixel_spacing'), region, 'real'))
        except Exception as e:
            skipped[name] = f"{type(e).__name__}: {e}"; log(f"real CT: skipped {name}: {e}")
    return out, skipped


def goal_checks(table) -> dict:
    "The stated goals on real CT at the unseen doses: DA-Diff small >= RED-CNN + 0.5 dB; with DA-CLIP > without."
    from founddiff.core import UNSEEN_DOSES
    mean = lambda m: float(np.mean([r['psnr'] for r in table.rows if r['method'] == m and r['dose'] in UNSEEN_DOSES])) \
        if any(r['method'] == m for r in table.rows) else None
    d, rc, nc = mean('DA-Diff small'), mean('RED-CNN'), mean('DA-Diff w/o DA-CLIP')
    out = dict(unseen_psnr={k: v for k, v in (('DA-Diff small', d), ('RED-CNN', rc), ('DA-Diff w/o DA-CLIP', nc), ('LDCT', mean('LDCT'))) if v is not None})
    if d is not None and rc is not None: out['dadiff_minus_redcnn_db'] = round(d - rc, 3); out['goal_dadiff_ge_redcnn_plus_0.5'] = bool(d - rc >= 0.5)
    if d is not None and nc is not None: out['daclip_minus_nodaclip_db'] = round(d - nc, 3); out['goal_daclip_better'] = bool(d > nc)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', default=str(ROOT / 'nbs' / 'results' / 'evaluate'), help='output folder (default: nbs/results/evaluate)')
    ap.add_argument('--phantoms', type=int, default=2, help='held-out phantoms per region (default 2)')
    ap.add_argument('--size', type=int, default=512, help='phantom size in pixels (default 512: the full geometry)')
    ap.add_argument('--methods', nargs='+', default=None, help='method keys (default: all available): ldct gaussian nlm redcnn dadiff-nodaclip dadiff')
    ap.add_argument('--redcnn', default=None, help='RED-CNN weights (default: founddiff/weights/redcnn_small.safetensors)')
    ap.add_argument('--nodaclip', default=None, help='DA-Diff w/o DA-CLIP model file (default: founddiff/weights/dadiff_small_nodaclip.safetensors)')
    ap.add_argument('--model', default='small', help='DA-Diff model: a shipped name or a file (default: small)')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--threads', type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument('--update', action='store_true', help="re-run only --methods and keep the other methods' rows already in --out "
                    "(e.g. after retraining DA-Diff, when the baselines' weights are not at hand); run.json records both runs")
    ap.add_argument('--quick', action='store_true', help='smoke test: 64 px phantoms (1 per region), CT_small only, 3 doses, LDCT/Gaussian/NLM')
    args = ap.parse_args(argv)
    import matplotlib; matplotlib.use('Agg')
    import torch
    if args.threads: torch.set_num_threads(args.threads)
    from founddiff.core import DOSES, atomic_write
    from founddiff.evaluate import default_methods, evaluate, phantom_cases, plot_psnr_vs_dose, machine_name, METHOD_KEYS, read_csv, EvalTable
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    log = lambda s: print(s, flush=True)
    command = 'python scripts/evaluate_all.py ' + ' '.join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    if args.update and not args.methods: ap.error('--update needs --methods (the methods to re-run)')
    keys = args.methods or (('ldct', 'gaussian', 'nlm') if args.quick else METHOD_KEYS)
    methods = default_methods(args.redcnn, args.nodaclip, args.model, keys=keys, seed=args.seed)
    for k, v in methods.skipped.items(): log(f"method skipped: {k}: {v}")
    log(f"methods: {[m.name for m in methods]}; machine: {machine_name()}")
    doses = (1/2, 1/3, 1/20) if args.quick else DOSES
    real, skipped_cases = real_cases({'CT_small.dcm': 'other'} if args.quick else REAL_CT, log)
    sets = dict(real=real, phantoms=phantom_cases(1 if args.quick else args.phantoms, 64 if args.quick else args.size, seed=0))
    run = dict(command=command, machine=machine_name(), methods={m.name: m.note for m in methods}, skipped_methods=methods.skipped,
               skipped_cases=skipped_cases, doses=list(doses), seed=args.seed, started=time.strftime('%Y-%m-%d %H:%M:%S'))
    if args.update and (out / 'run.json').exists():               # the earlier run stays the record; this one is listed as an update
        old = json.loads((out / 'run.json').read_text())
        old['methods'].update(run['methods'])
        old.setdefault('updates', []).append({k: run[k] for k in ('command', 'machine', 'started')} | dict(methods=[m.name for m in methods]))
        run = old
    for part, cases in sets.items():
        if not cases: log(f"{part}: no cases"); continue
        t0 = time.perf_counter()
        log(f"{part}: {len(cases)} cases {[(c.name, c.hu.shape, c.region) for c in cases]}")
        table = evaluate(methods, cases, doses, seed=args.seed, progress=True)
        if args.update and (out / f'{part}_rows.csv').exists():   # keep the other methods' rows, in their order
            old = read_csv(out / f'{part}_rows.csv')
            new = {m.name for m in methods}
            order = list(dict.fromkeys(old.methods() + table.methods()))
            cases_ = list(dict.fromkeys([r['case'] for r in old.rows] + [r['case'] for r in table.rows]))
            rows = [r for r in old.rows if r['method'] not in new] + table.rows
            table = EvalTable(sorted(rows, key=lambda r: (cases_.index(r['case']), order.index(r['method']))), table.machine,
                              dict(table.notes, updated=f"rows of {', '.join(sorted(new))} from a later run (run.json: updates); "
                                                        "the time per slice of the two runs is not a same-run comparison"))
            log(f"{part}: rows of {sorted(new)} replaced, the others kept from {out / f'{part}_rows.csv'}")
        table.notes['cases'] = ', '.join(f"{c.name} ({c.region}, {c.hu.shape[0]}x{c.hu.shape[1]})" for c in cases)
        if methods.skipped: table.notes['not run'] = '; '.join(f"{k} ({v})" for k, v in methods.skipped.items())
        for w in ('rows', 'summary', 'split', 'timing'): table.to_csv(out / f'{part}_{w}.csv', w)
        table.to_markdown_file(out / f'{part}.md')
        fig = plot_psnr_vs_dose(table); fig.savefig(out / f'{part}_psnr_vs_dose.png', dpi=100, bbox_inches='tight')
        run[part] = dict(cases=len(cases), seconds=round(time.perf_counter() - t0, 1), goals=goal_checks(table))
        log(table.to_markdown()); log(f"{part}: goals {run[part]['goals']}; {run[part]['seconds']} s")
    with atomic_write(out / 'run.json', 'w') as f: json.dump(run, f, indent=1)
    log(f"wrote {out}")


if __name__ == '__main__':
    main()
