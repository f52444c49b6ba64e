#!/usr/bin/env python
"""Train a DA-CLIP encoder on simulated phantoms at the seen doses, evaluate it on unseen doses, save safetensors weights.

    python scripts/train_daclip.py --config small                 # the shipped weights: founddiff/weights/daclip_small.*
    python scripts/train_daclip.py --config tiny --out /tmp/tiny  # a quick run
    python scripts/train_daclip.py --ablation --ablation-out ablation.json   # the 06_daclip ablation table (tiny, 3 seeds)

The data (phantoms + projection-domain simulation) is built here and handed to `founddiff.daclip` as tensors:
models never import datasets. Every image is a different random phantom; test phantoms use seeds never used in training.
"""
from __future__ import annotations
import argparse, json, os, platform, sys, time
from dataclasses import replace, asdict
from pathlib import Path
import numpy as np
import torch

from founddiff.phantoms import phantom, FOV_MM, REGIONS
from founddiff.physics import simulate_doses, DOSES, SEEN_DOSES, UNSEEN_DOSES
from founddiff.train import train_daclip
from founddiff.daclip import (DACLIP, CONFIGS, TRAIN_CONFIGS, evaluate_daclip, save_daclip,
                              weights_dir, REGION_NAMES)
from founddiff.core import atomic_write

TEST_SEED0 = 10_000   # test phantoms use seeds from here on; training phantoms use 0, 1, 2, ...

def make_pool(seeds, doses, size=64, seed=0):
    "HU images (N, size, size), dose fractions (N,), region indices (N,): every phantom seed of every region at every dose."
    X, D, R = [], [], []
    for ri, region in enumerate(REGIONS):
        phs = np.stack([phantom(region, size, generator=int(s)) for s in seeds])                            # (P, H, W)
        low, _ = simulate_doses(phs, doses, generator=1000 * seed + ri, pixel_spacing=FOV_MM[region] / size)  # (K, P, H, W)
        X.append(torch.from_numpy(low).reshape(-1, size, size))
        D += [d for d in doses for _ in seeds]; R += [ri] * (len(doses) * len(seeds))
    return torch.cat(X), torch.tensor(D, dtype=torch.float32), torch.tensor(R)

def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"

def _scalars(res): return {k: round(float(v), 4) for k, v in res.items() if isinstance(v, float)}

def per_dose(res, test):
    "Median predicted dose per (region, true dose)."
    out = {}
    for ri, reg in enumerate(REGION_NAMES):
        out[reg] = {f"1/{1 / d:.0f}": round(float(res['pred_dose'][(test[2] == ri) & ((test[1] - d).abs() < 1e-6)].median()), 4) for d in DOSES}
    return out

def ablation(args):
    "The 06_daclip ablation: tiny encoder, the notebook's data, 5 dose losses x 3 seeds."
    train = make_pool(range(16), SEEN_DOSES, 64, seed=0)
    test = make_pool(range(TEST_SEED0, TEST_SEED0 + 8), DOSES, 64, seed=1)
    variants = [('RnC, log dose', {}), ('RnC, inverse dose', dict(dose_label='inverse')),
                ('SupCon on dose classes', dict(dose_loss='supcon')), ('cross-entropy, 4 classes', dict(dose_loss='ce')),
                ('regression (MSE, log dose)', dict(dose_loss='mse'))]
    keys = ('spearman_unseen', 'pair_order_unseen', 'log_dose_error_unseen', 'spearman_pc1_unseen', 'spearman_seen', 'region_acc_unseen')
    steps = args.ablation_steps or TRAIN_CONFIGS['tiny'].steps
    rows = {}
    for label, kw in variants:
        runs = []
        for seed in args.seeds:
            torch.manual_seed(seed)
            m = DACLIP('tiny')
            h = train_daclip(m, *train, replace(TRAIN_CONFIGS['tiny'], seed=seed, steps=steps, **kw))
            r = _scalars(evaluate_daclip(m, train, test, UNSEEN_DOSES)); r['time'] = h[-1]['time']; runs.append(r)
            print(label, seed, r, flush=True)
        rows[label] = dict(runs=runs, **{k: [float(np.mean([r[k] for r in runs])), float(np.std([r[k] for r in runs]))] for k in keys + ('time',)})
        print(f"| {label} | " + ' | '.join(f"{rows[label][k][0]:.3f} ± {rows[label][k][1]:.3f}" for k in keys)
              + f" | {rows[label]['time'][0]:.0f} s |", flush=True)
    out = dict(machine=machine(), seeds=list(args.seeds), steps=steps, rows=rows)
    if args.ablation_out:
        with atomic_write(args.ablation_out, 'w') as f: json.dump(out, f, indent=1)
    return out

def _overrides(cfg, items):
    "Parse KEY=VALUE strings into typed fields of the dataclass `cfg`."
    out = {}
    for it in items:
        k, _, v = it.partition('=')
        if not hasattr(cfg, k): raise SystemExit(f"--set: {k!r} is not a training-config field; fields: {list(asdict(cfg))}")
        cur = getattr(cfg, k)
        out[k] = None if v == 'None' else type(cur)(v) if cur is not None else int(v)
    return out

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--config', default='small', choices=[k for k, c in CONFIGS.items() if c.backbone == 'cnn'])
    ap.add_argument('--sizes', type=int, nargs='+', default=None,
                    help='image sizes in pixels to train and test at (default: 64 128 for small, 64 for tiny)')
    ap.add_argument('--phantoms', type=int, default=64, help='training phantoms per region (seeds 0..N-1)')
    ap.add_argument('--test-phantoms', type=int, default=16, help=f'test phantoms per region (seeds {TEST_SEED0}...)')
    ap.add_argument('--steps', type=int, default=None, help='override the config\'s number of steps')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--set', nargs='+', default=[], metavar='KEY=VALUE', help='override training-config fields, e.g. --set w_anat=0.25 lr=1e-3')
    ap.add_argument('--threads', type=int, default=1, help='torch threads (1 avoids oversubscription on shared CPUs)')
    ap.add_argument('--out', default=None, help='output path without suffix (default: founddiff/weights/daclip_<config>)')
    ap.add_argument('--ablation', action='store_true', help='run the 06_daclip ablation (tiny, 5 losses, 64x64) instead')
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2], help='seeds for --ablation')
    ap.add_argument('--ablation-out', default=None, help='JSON file for the --ablation results')
    ap.add_argument('--ablation-steps', type=int, default=None, help='training steps per --ablation run (default: the tiny config)')
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.ablation: return ablation(args)

    sizes = args.sizes or ([64, 128] if args.config == 'small' else [64])
    t0 = time.perf_counter()
    trains = [make_pool(range(args.phantoms), SEEN_DOSES, n, seed=args.seed + 10 * i) for i, n in enumerate(sizes)]
    tests = [make_pool(range(TEST_SEED0, TEST_SEED0 + args.test_phantoms), DOSES, n, seed=args.seed + 10 * i + 1) for i, n in enumerate(sizes)]
    t_data = time.perf_counter() - t0
    print(f"data: sizes {sizes}, train {[tuple(t[0].shape) for t in trains]} (seen doses), "
          f"test {[tuple(t[0].shape) for t in tests]} (all doses) in {t_data:.0f} s", flush=True)
    tcfg = TRAIN_CONFIGS[args.config]
    tcfg = replace(tcfg, seed=args.seed, **({'steps': args.steps} if args.steps else {}), **_overrides(tcfg, args.set))
    torch.manual_seed(args.seed)
    model = DACLIP(args.config)
    n_par = sum(p.numel() for p in model.parameters())
    print(f"{args.config}: {n_par:,} parameters; {tcfg}", flush=True)
    log = lambda s, r: print(f"step {s:5d}  {r['size'][0]:4d}px  loss {r['loss']:.3f}  dose {r['dose']:.3f}  anat {r['anat']:.3f}  {r['time']:.0f} s", flush=True) \
        if s % 100 == 0 or s == tcfg.steps - 1 else None
    hist = train_daclip(model, [t[0] for t in trains], [t[1] for t in trains], [t[2] for t in trains], tcfg, callback=log)
    by_size = {}
    for n, tr, te in zip(sizes, trains, tests):
        res = evaluate_daclip(model, tr, te, UNSEEN_DOSES)
        by_size[str(n)] = dict(_scalars(res), median_predicted_dose=per_dose(res, te))
        print(f"{n}x{n}:", _scalars(res), flush=True)
    first = by_size[str(sizes[0])]
    metrics = dict({k: v for k, v in first.items() if k != 'median_predicted_dose'}, metrics_at_size=sizes[0], by_size=by_size,
                   train_time_s=round(hist[-1]['time'], 1), data_time_s=round(t_data, 1), parameters=n_par, machine=machine(),
                   data=dict(sizes=sizes, train_phantoms_per_region=args.phantoms, train_seeds=f"0..{args.phantoms - 1}",
                             test_phantoms_per_region=args.test_phantoms, test_seeds=f"{TEST_SEED0}..{TEST_SEED0 + args.test_phantoms - 1}",
                             train_doses=list(SEEN_DOSES), unseen_doses=list(UNSEEN_DOSES),
                             simulation='founddiff.physics.simulate_doses defaults, pixel spacing FOV_MM[region]/size'))
    out = Path(args.out) if args.out else weights_dir() / f'daclip_{args.config}'
    path = save_daclip(model, out, tcfg, metrics)
    print(json.dumps({k: v for k, v in metrics.items() if k != 'by_size'}, indent=1))
    print(f"saved {path} ({path.stat().st_size / 1e6:.2f} MB) and {path.with_suffix('.json').name}")
    return metrics

if __name__ == '__main__':
    main()
