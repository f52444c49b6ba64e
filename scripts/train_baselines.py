#!/usr/bin/env python
"""Train the baselines of the evaluation notebook (12b_evaluate) on DA-Diff `small`'s data, under one wall-clock budget.

    python scripts/train_baselines.py --budget-min 60                  # both, 60 min each, weights into founddiff/weights
    python scripts/train_baselines.py --budget-min 60 --only redcnn    # RED-CNN only
    python scripts/train_baselines.py --budget-min 0.1 --config configs/tiny.json --weights-dir /tmp/w --runs /tmp/r  # smoke test

Both train on `build_slices(TrainConfig.from_file(--config))`: the same phantoms, simulated at the same seen doses, as
DA-Diff `small` (configs/small.json); real scans are never read. Each gets `--budget-min` minutes of training on this
machine (and at most the config's `steps` for the DA-Diff ablation, so it never trains longer than DA-Diff `small`):

- **RED-CNN** (Chen et al. 2017; `founddiff.evaluate.train_redcnn`): 55x55 patches, batch 16, Adam 1e-4 -> 1e-5, MSE.
  Writes redcnn_small.safetensors + redcnn_small.json (card: data, budget, steps, steps/s, machine).
- **DA-Diff without DA-CLIP**: the same config with `unet = {"conditioning": "none"}` (`train_dadiff_budget`), EMA
  weights as a `founddiff.pipeline` model file: dadiff_small_nodaclip.safetensors + dadiff_small_nodaclip.json.

Resumable: run the same command again and each continues from its checkpoint under --runs (the budget counts the
training time already spent).
"""
from __future__ import annotations
import argparse, json, os, platform, shlex, sys, time
from dataclasses import replace, asdict
from pathlib import Path
import torch

from founddiff.core import atomic_write, dose_name
from founddiff.daclip import weights_dir
from founddiff.evaluate import RedCNNTrainConfig, train_redcnn, save_redcnn, train_dadiff_budget, machine_name
from founddiff.pipeline import Denoiser, save_model
from founddiff.train import TrainConfig, build_slices

ROOT = Path(__file__).resolve().parents[1]


def _card(path: Path, card: dict):
    with atomic_write(path, 'w') as f: json.dump(card, f, indent=1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--budget-min', type=float, required=True, help='wall-clock minutes of training for each baseline')
    ap.add_argument('--config', default=str(ROOT / 'configs' / 'small.json'), help='the DA-Diff config whose data (and steps cap) they share')
    ap.add_argument('--only', choices=('redcnn', 'nodaclip'), default=None, help='train one of the two')
    ap.add_argument('--weights-dir', default=None, help='where weights and cards go (default: founddiff/weights)')
    ap.add_argument('--runs', default='runs/baselines', help='checkpoints (resumed from) live here')
    ap.add_argument('--redcnn-patch', type=int, default=55); ap.add_argument('--redcnn-batch', type=int, default=16)
    ap.add_argument('--threads', type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args(argv)
    if not args.budget_min > 0: ap.error('--budget-min must be > 0')
    if args.threads: torch.set_num_threads(args.threads)
    wdir = Path(args.weights_dir) if args.weights_dir else weights_dir()
    runs, budget = Path(args.runs), args.budget_min * 60
    command = 'python scripts/train_baselines.py ' + ' '.join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    cfg = TrainConfig.from_file(args.config)
    log = lambda s: print(s, flush=True)
    t0 = time.perf_counter()
    slices = build_slices(cfg, progress=True)
    log(f"data: {slices} ({time.perf_counter() - t0:.0f} s to build/read the cache)")
    data = (f"{cfg.phantoms} phantoms (head/chest/abdomen) at {cfg.image_size}x{cfg.image_size} at the seen doses "
            f"{[dose_name(d) for d in cfg.doses]} (the data of {Path(args.config).name}); no real scans")
    name = cfg.config
    if args.only in (None, 'redcnn'):
        rc = RedCNNTrainConfig(patch=min(args.redcnn_patch, min(min(x.shape) for x in slices.ldct)), batch_size=args.redcnn_batch, seed=cfg.seed)
        model, info = train_redcnn(slices, rc, budget_s=budget, out=runs / f'redcnn_{name}')
        card = dict(model='RED-CNN (Chen et al. 2017)', params=sum(p.numel() for p in model.parameters()), train=asdict(rc),
                    budget_min=args.budget_min, steps=info['steps'], train_wall_s=round(info['wall_s'], 1),
                    steps_per_s=round(info['steps_per_s'], 4), final_loss=info['history'][-1][1] if info['history'] else None,
                    data=data, config=args.config, machine=machine_name(), command=command)
        p = save_redcnn(model, wdir / f'redcnn_{name}.safetensors', card); _card(p.with_suffix('.json'), card)
        log(f"RED-CNN: {info['steps']} steps in {info['wall_s']:.0f} s ({info['steps_per_s']:.3f} steps/s); wrote {p}")
    if args.only in (None, 'nodaclip'):
        nc = replace(cfg, unet={**cfg.unet, 'conditioning': 'none'}, out=str(runs / f'dadiff_{name}_nodaclip'))
        tr = train_dadiff_budget(nc, budget_s=budget, slices=replace(slices, emb=None), chunk=1)
        den = Denoiser(tr.ema.module.eval(), None, preset=nc.schedule)   # sample on the schedule it trained on
        p = save_model(den, wdir / f'dadiff_{name}_nodaclip.safetensors')
        card = dict(model='DA-Diff without DA-CLIP (conditioning "none")', config=nc.to_dict(), budget_min=args.budget_min,
                    steps=tr.step, train_wall_s=round(tr.wall, 1), steps_per_s=round(tr.step / max(tr.wall, 1e-9), 4),
                    stopped_by='steps' if tr.step >= nc.steps else 'budget', data=data, machine=machine_name(), command=command)
        _card(p.with_suffix('.json'), card)
        log(f"DA-Diff w/o DA-CLIP: {tr.step} steps in {tr.wall:.0f} s ({card['steps_per_s']:.3f} steps/s); wrote {p}")
    log(f"done in {(time.perf_counter() - t0) / 60:.1f} min on {machine_name()}")


if __name__ == '__main__':
    main()
