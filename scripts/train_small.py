#!/usr/bin/env python
"""Reproduce the shipped `small` models in one command: DA-CLIP at the full 512x512 geometry, then DA-Diff `small`.

    python scripts/train_small.py                 # both stages; resumable: run it again after a stop and it continues
    python scripts/train_small.py --skip-daclip   # keep the shipped DA-CLIP, train DA-Diff only
    python scripts/train_small.py --bench         # measure steps/s of both configs here and exit (no training run)

Stage 1 trains DA-CLIP with `configs/daclip_small.json` (phantoms at 512x512, plus 64/128 px; MLP heads, as in the
paper) and keeps it in its run folder; stage 1b freezes that encoder's backbone and anatomy head and fits a *linear*
dose head on the same data for `--head-steps` steps (600; notebook 06: it keeps the backbone's dose order beyond the
seen doses, where the MLP head can fold back; `--head-steps 0`: no stage 1b). `--dose-head-from W.safetensors` runs stage 1b alone on an
existing encoder. Stage 1c (`--anat-config`, default configs/daclip_small_anat.json: the same phantoms with half of the
512x512 ones showing the air of a real scan; '' skips it) gives the frozen encoder a new anatomy head: by default a linear
head fitted in closed form on the whole 512x512 slices (`--anat-fit ridge`, `founddiff.daclip.fit_anatomy_head`; notebook
06: it reads the region of real scans far better than the MLP head), or the MLP head fine-tuned with SupCon
(`--anat-fit supcon`, the config's steps; a try that did not pay). The last DA-CLIP stage run writes
founddiff/weights/daclip_small.{safetensors,json}, the earlier ones the run folder; `--anat-head-from W` runs stage 1c
alone on an existing encoder. Stage 2 trains DA-Diff `small` with `configs/small.json` on random
patches of 512x512 phantoms at the seen doses, conditioned on that DA-CLIP's whole-slice embeddings, and writes
founddiff/weights/dadiff_small.safetensors (`founddiff.pipeline.save_model`, EMA weights) with a model card
dadiff_small.md / .json and the loss curve dadiff_small_loss.png. Training data: phantoms only; real slices
(pydicom-data or any other collection) are never read here.

What ships: the DA-CLIP `small` of stages 1-1c (`python scripts/train_small.py --skip-dadiff`), and a DA-Diff `small`
conditioned on the stage-1b encoder, which its file carries (`python scripts/train_small.py --anat-config ''` makes that
pair); a DA-Diff retrained on the stage-1c encoder scored 0.2 dB lower on real CT and was not shipped (notebook 06).
"""
from __future__ import annotations
import argparse, json, os, platform, shlex, shutil, sys, time
from dataclasses import replace, asdict
from pathlib import Path
import numpy as np
import torch

from founddiff.core import atomic_write, hu_to_unit, unit_to_hu, DOSES, SEEN_DOSES, UNSEEN_DOSES, REGIONS, dose_name
from founddiff.daclip import DACLIP, save_daclip, load_daclip, weights_dir, evaluate_daclip, fit_anatomy_head
from founddiff.data import phantom_dataset
from founddiff.pipeline import Denoiser, save_model, load_model
from founddiff.train import TrainConfig, Trainer, build_slices, embed_slices, train_from_config, train_daclip

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"


def steps_per_second(cfg: TrainConfig, n: int = 5, phantoms: int = 3) -> float:
    "Optimiser steps/s of `cfg` on `phantoms` phantoms (best of `n` single steps after a warm-up step)."
    cfg = replace(cfg, phantoms=phantoms, checkpoint_every=0, sample_every=0, out=str(Path(cfg.out) / 'bench'))
    tr = Trainer(cfg, build_slices(cfg, progress=False), progress=False)
    tr.train_step(); ts = []
    for _ in range(n):
        t0 = time.perf_counter(); tr.train_step(); ts.append(time.perf_counter() - t0)
    return 1 / min(ts)


def heldout(size: int, n: int, doses, seed: int = 0):
    "Held-out phantoms (split 'test': never in training) at `doses`: HU images (N, H, W), doses (N,), regions (N,), NDCT (N, H, W)."
    ds = phantom_dataset(n, size, doses=doses, seed=seed, split='test', scale='hu')
    items = [ds[i] for i in range(len(ds))]
    return (torch.stack([s['ldct'][0] for s in items]), torch.tensor([float(s['dose']) for s in items]),
            torch.tensor([int(s['region']) for s in items]), torch.stack([s['ndct'][0] for s in items]))


def psnr(x, ref) -> float:
    "PSNR in dB on [-1000, 2000] HU scaled to [0, 1] (max 1), full image."
    mse = float(((hu_to_unit(x) - hu_to_unit(ref)) ** 2).mean())
    return 10 * np.log10(1 / mse)


def stage_daclip(args, log):
    cfg = TrainConfig.from_file(args.daclip_config)
    t0 = time.perf_counter()
    tr = train_from_config(cfg)
    train = heldout(cfg.image_size, 3 * args.eval_phantoms, SEEN_DOSES, seed=1)   # fits the probe: other held-out phantoms
    test = heldout(cfg.image_size, 3 * args.eval_phantoms, DOSES, seed=2)
    scores = {}
    for name, m in (('ema', tr.ema.module.eval()), ('raw', tr.model.eval())):   # ship the better on held-out phantoms (EMA lags early on)
        res = evaluate_daclip(m, train[:3], test[:3], UNSEEN_DOSES, batch_size=8)
        scores[name] = (m, {k: round(float(v), 4) for k, v in res.items() if isinstance(v, float)})
        log(f"DA-CLIP {name}: {scores[name][1]}")
    pick = max(scores, key=lambda k: (scores[k][1]['spearman_unseen'] + scores[k][1]['region_acc_unseen'], k == 'ema'))
    model, scal = scores[pick]
    metrics = dict(scal, weights=pick, metrics_at_size=cfg.image_size, by_size={str(cfg.image_size): scal}, train_time_s=round(tr.wall, 1),
                   steps=tr.step, machine=machine(), command=args.command,
                   data=dict(phantoms=cfg.phantoms, sizes=[cfg.image_size, *cfg.extra_sizes], doses=list(cfg.doses),
                             test='held-out phantoms (split test) at all 8 doses, probe fitted on other held-out phantoms at seen doses'))
    dest = Path(cfg.out) / 'daclip_small_stage1' if args.head_steps or args.anat_config else args.weights_dir / 'daclip_small'   # later stages follow: the run folder
    path = save_daclip(model, dest, cfg.daclip_train_config(), metrics)
    log(f"DA-CLIP: {tr.step} steps, {tr.wall:.0f} s of training, {tr.step / max(tr.wall, 1e-9):.3f} steps/s "
        f"({time.perf_counter() - t0:.0f} s in all this session); {scal}; saved {path}")
    return path


def fit_part(args, cfg: TrainConfig, base: DACLIP, config, part: str, loss: dict, keep: bool):
    """A DA-CLIP of `config` with `base`'s weights, everything frozen (weights and BatchNorm statistics) except `part`
    ('dose_head' or 'anat_head': kept from `base` and fine-tuned if `keep`, else new), trained on `cfg`'s data for
    `cfg.steps` with the `loss` weights; then scored on held-out phantoms. Returns (model, wall seconds, DACLIPTrainConfig, scores)."""
    torch.manual_seed(cfg.seed)
    model = DACLIP(config)
    for name, mod in model.named_children():
        if name != part or keep: mod.load_state_dict(getattr(base, name).state_dict())
        for p in mod.parameters(): p.requires_grad_(name == part)
    sl = build_slices(cfg)
    groups = {}                                               # train_daclip takes one HU set per image size
    for x, d, r in zip(sl.ldct, sl.doses, sl.regions): groups.setdefault(tuple(x.shape), []).append((x, d, r))
    sets = [[torch.stack([g[j] for g in grp]) for j in range(3)] for grp in groups.values()]
    tcfg = replace(cfg.daclip_train_config(), **loss)
    t0 = time.perf_counter()
    train_daclip(model, [unit_to_hu(s[0]) for s in sets], [s[1] for s in sets], [s[2] for s in sets], tcfg)
    wall = time.perf_counter() - t0
    return model, wall, tcfg, heldout_scores(args, cfg, model)


def heldout_scores(args, cfg: TrainConfig, model: DACLIP) -> dict:
    "evaluate_daclip's scores of `model` on held-out phantoms at `cfg.image_size` (probe fitted on other held-out phantoms)."
    train = heldout(cfg.image_size, 3 * args.eval_phantoms, SEEN_DOSES, seed=1)
    test = heldout(cfg.image_size, 3 * args.eval_phantoms, DOSES, seed=2)
    res = evaluate_daclip(model.eval(), train[:3], test[:3], UNSEEN_DOSES, batch_size=8)
    return {k: round(float(v), 4) for k, v in res.items() if isinstance(v, float)}


def stage_dose_head(args, log, source: Path, dest: Path):
    "Stage 1b: the stage-1 encoder's backbone and anatomy head, frozen, under a linear dose head fitted on the same data."
    cfg = replace(TrainConfig.from_file(args.daclip_config), steps=args.head_steps)
    base = load_daclip(path=source)
    model, wall, tcfg, scal = fit_part(args, cfg, base, replace(base.config, dose_head='linear'), 'dose_head', dict(w_anat=0.0), keep=False)
    stage1 = json.loads(source.with_suffix('.json').read_text()).get('metrics', {})
    metrics = dict(scal, weights='ema (stage 1) + linear dose head (stage 1b)', metrics_at_size=cfg.image_size,
                   by_size={str(cfg.image_size): scal},
                   train_time_s=round(float(stage1.get('train_time_s', float('nan'))) + wall, 1),
                   steps=stage1.get('steps'), machine=machine(), command=args.command, data=stage1.get('data'),
                   stage1=dict(source=source.name, train_time_s=stage1.get('train_time_s'), steps=stage1.get('steps'),
                               command=stage1.get('command'), **{k: stage1.get(k) for k in ('spearman_unseen', 'log_dose_error_unseen', 'real_ct')}),
                   dose_head=dict(kind='linear', steps=tcfg.steps, train_time_s=round(wall, 1), lr=tcfg.lr, rnc_tau=tcfg.rnc_tau,
                                  what='backbone and anatomy head frozen (weights and BatchNorm statistics); Rank-N-Contrast on log dose only'))
    path = save_daclip(model, dest, TrainConfig.from_file(args.daclip_config).daclip_train_config(), metrics)
    log(f"DA-CLIP stage 1b: {tcfg.steps} steps of the linear dose head in {wall:.0f} s; {scal}; saved {path}")
    return path


def stage_anat_head(args, log, source: Path, dest: Path):
    """Stage 1c: a new anatomy head on the frozen backbone (and dose head), from data where half the slices show scanner air.
    `--anat-fit ridge` (the shipped recipe): a linear head fitted in closed form (`daclip.fit_anatomy_head`) on the slices of
    `--anat-config` at its image size; `supcon`: the MLP head fine-tuned with its SupCon loss for the config's steps."""
    cfg = TrainConfig.from_file(args.anat_config)
    base = load_daclip(path=source)
    if args.anat_fit == 'ridge':
        t0 = time.perf_counter()
        sl = build_slices(cfg)
        keep = [i for i, x in enumerate(sl.ldct) if x.shape[-1] == cfg.image_size]   # whole slices at the full geometry
        hu = unit_to_hu(torch.stack([sl.ldct[i] for i in keep]))
        model = fit_anatomy_head(base, hu, sl.regions[keep], lam=args.anat_lam, batch_size=8)
        wall = time.perf_counter() - t0
        scal, tcfg = heldout_scores(args, cfg, model), cfg.daclip_train_config()
        how = dict(kind='linear', fit='ridge (closed form, daclip.fit_anatomy_head)', lam=args.anat_lam, slices=len(keep),
                   what='backbone and dose head frozen; a linear anatomy head = the ridge regression of the one-hot region on '
                        'the backbone features of whole slices at the full geometry, of which a fraction show the air of a real '
                        'scan (phantoms.add_scanner_air)')
    else:
        model, wall, tcfg, scal = fit_part(args, cfg, base, base.config, 'anat_head', {}, keep=True)
        how = dict(kind=base.config.anat_head, fit='SupCon fine-tuning', steps=tcfg.steps, lr=tcfg.lr, w_dose=tcfg.w_dose, w_anat=tcfg.w_anat,
                   what='backbone and dose head frozen (weights and BatchNorm statistics); the anatomy head starts from '
                        "the previous stage's and learns on phantoms of which a fraction show the air of a real scan "
                        '(phantoms.add_scanner_air); SupCon on region only')
    prev = json.loads(source.with_suffix('.json').read_text()).get('metrics', {})
    metrics = dict(prev, **scal, by_size={str(cfg.image_size): scal}, machine=machine(), command=args.command,
                   weights=prev.get('weights', 'stage 1') + (' + linear anatomy head fitted in closed form (stage 1c)' if args.anat_fit == 'ridge'
                                                             else ' + anatomy head fine-tuned (stage 1c)'),
                   train_time_s=round(float(prev.get('train_time_s', float('nan'))) + wall, 1),
                   anat_head=dict(how, source=source.name, train_time_s=round(wall, 1), air=cfg.air, config=Path(args.anat_config).name,
                                  before={k: prev.get(k) for k in ('region_acc_unseen', 'real_ct')}))
    metrics.pop('real_ct', None)                             # scored again by scripts/daclip_card.py
    path = save_daclip(model, dest, tcfg, metrics)
    log(f"DA-CLIP stage 1c ({args.anat_fit}): anatomy head in {wall:.0f} s; {scal}; saved {path}")
    return path


def stage_dadiff(args, log):
    cfg = TrainConfig.from_file(args.config)
    if args.weights_dir != weights_dir() and not args.skip_daclip and not cfg.daclip.endswith('.safetensors'):   # stage 1's DA-CLIP
        cfg = replace(cfg, daclip=str(args.weights_dir / f'daclip_{cfg.daclip}.safetensors'))
    t0 = time.perf_counter()
    tr = train_from_config(cfg)
    den = Denoiser(tr.ema.module.eval(), load_daclip(path=cfg.daclip) if cfg.daclip.endswith('.safetensors') else load_daclip(cfg.daclip),
                   preset=cfg.schedule)                                             # sample on the schedule it was trained on
    out = args.weights_dir / 'dadiff_small.safetensors'
    save_model(den, out)
    den = load_model(out)                                                            # what users get
    x, d, r, nd = heldout(cfg.image_size, args.eval_phantoms, DOSES, seed=3)
    y = den.denoise(x, batch_size=4, generator=0)
    rows = {}
    for dose in DOSES:
        m = (d - dose).abs() < 1e-6
        rows[dose_name(dose)] = dict(seen=dose in SEEN_DOSES, ldct=round(float(np.mean([psnr(a, b) for a, b in zip(x[m], nd[m])])), 2),
                                     dadiff=round(float(np.mean([psnr(a, b) for a, b in zip(y[m], nd[m])])), 2))
    shutil.copyfile(tr.out / 'loss.png', args.weights_dir / 'dadiff_small_loss.png')
    card = dict(command=args.command, config=cfg.to_dict(), steps=tr.step, train_wall_s=round(tr.wall, 1),
                steps_per_s=round(tr.step / max(tr.wall, 1e-9), 3), machine=machine(),
                seed=cfg.seed, weights=out.name, size_mb=round(out.stat().st_size / 1e6, 2),
                data=f"{cfg.phantoms} phantoms (head/chest/abdomen) simulated at {cfg.image_size}x{cfg.image_size} (full geometry) "
                     f"at the seen doses {[dose_name(v) for v in cfg.doses]}; {cfg.patch} px patches; no real scans",
                psnr=dict(what=f"{args.eval_phantoms} held-out phantoms (split test) at {cfg.image_size}x{cfg.image_size}, mean PSNR (dB) "
                               "on [-1000, 2000] HU -> [0, 1] against the normal-dose partner", rows=rows))
    with atomic_write(args.weights_dir / 'dadiff_small.json', 'w') as f: json.dump(card, f, indent=1)
    md = [f"# DA-Diff `small`", "", f"- **Command**: `{args.command}`", f"- **Data**: {card['data']}",
          f"- **Steps**: {tr.step} (batch {cfg.batch_size}, lr {cfg.lr}, EMA {cfg.ema_decay}); **wall time** {tr.wall / 60:.1f} min of training",
          f"- **Machine**: {machine()}", f"- **Seed**: {cfg.seed}", f"- **Weights**: `{out.name}` ({card['size_mb']} MB, EMA), "
          f"with the DA-CLIP it was conditioned on", "", "![loss curve](dadiff_small_loss.png)", "",
          f"PSNR (dB), {card['psnr']['what']}:", "", "| dose | seen in training | LDCT | DA-Diff small | gain |", "|---|---|---|---|---|"]
    md += [f"| {k} | {'yes' if v['seen'] else 'no'} | {v['ldct']:.2f} | {v['dadiff']:.2f} | {v['dadiff'] - v['ldct']:+.2f} |" for k, v in rows.items()]
    with atomic_write(args.weights_dir / 'dadiff_small.md', 'w') as f: f.write('\n'.join(md) + '\n')
    log(f"DA-Diff: {tr.step} steps, {tr.wall:.0f} s of training, {tr.step / max(tr.wall, 1e-9):.3f} steps/s "
        f"({time.perf_counter() - t0:.0f} s in all this session); saved {out}")
    log('\n'.join(md[-10:]))
    return card


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--config', default=str(ROOT / 'configs' / 'small.json'), help='DA-Diff training config')
    ap.add_argument('--daclip-config', default=str(ROOT / 'configs' / 'daclip_small.json'), help='DA-CLIP training config')
    ap.add_argument('--skip-daclip', action='store_true', help='keep the shipped DA-CLIP weights')
    ap.add_argument('--skip-dadiff', action='store_true', help='train DA-CLIP only')
    ap.add_argument('--head-steps', type=int, default=600, help='stage 1b: steps of a linear dose head on the frozen stage-1 encoder (0: no stage 1b; the shipped encoder: 600)')
    ap.add_argument('--dose-head-from', default=None, help='stages 1b (and 1c) only, on this stage-1 DA-CLIP (.safetensors): skips stage 1')
    ap.add_argument('--anat-config', default=str(ROOT / 'configs' / 'daclip_small_anat.json'),
                    help="stage 1c: a new anatomy head on the frozen encoder, from this config's data (scanner air in half the slices); "
                         "'': no stage 1c")
    ap.add_argument('--anat-fit', default='ridge', choices=('ridge', 'supcon'),
                    help="stage 1c: 'ridge' (shipped): a linear head fitted in closed form; 'supcon': fine-tune the MLP head for the config's steps")
    ap.add_argument('--anat-lam', type=float, default=1e-2, help="stage 1c, --anat-fit ridge: the ridge penalty (fit_anatomy_head's lam)")
    ap.add_argument('--anat-head-from', default=None, help='stage 1c only, on this DA-CLIP (.safetensors): skips stages 1 and 1b')
    ap.add_argument('--eval-phantoms', type=int, default=3, help='held-out phantoms per stage for the quick tables')
    ap.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s)')
    ap.add_argument('--bench', action='store_true', help='measure steps/s of both configs and exit')
    ap.add_argument('--weights-dir', default=None, help='where the weights and cards go (default: the package, founddiff/weights)')
    args = ap.parse_args(argv)
    args.weights_dir = Path(args.weights_dir) if args.weights_dir else weights_dir()
    args.command = 'python scripts/train_small.py ' + ' '.join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    if args.threads: torch.set_num_threads(args.threads)
    log = lambda s: print(s, flush=True)
    if args.bench:
        for p in (args.daclip_config, args.config):
            cfg = TrainConfig.from_file(p)
            sps = steps_per_second(cfg)
            log(f"{Path(p).name}: {cfg.model} {cfg.config}, patch {cfg.patch}, batch {cfg.batch_size}: {sps:.3f} steps/s "
                f"-> {sps * 3600:.0f} steps/hour on {machine()}")
        return
    t0 = time.perf_counter()
    if args.dose_head_from and not args.head_steps: ap.error('--dose-head-from needs --head-steps N > 0')
    if args.anat_head_from and not args.anat_config: ap.error("--anat-head-from needs --anat-config (not '')")
    run = Path(TrainConfig.from_file(args.daclip_config).out)
    final = args.weights_dir / 'daclip_small'                 # the last DA-CLIP stage writes the shipped encoder, earlier ones the run folder
    if args.anat_head_from: stage_anat_head(args, log, Path(args.anat_head_from).with_suffix('.safetensors'), final)
    elif args.dose_head_from or not args.skip_daclip:
        path = Path(args.dose_head_from).with_suffix('.safetensors') if args.dose_head_from else stage_daclip(args, log)
        if args.head_steps: path = stage_dose_head(args, log, path, run / 'daclip_small_stage1b' if args.anat_config else final)
        if args.anat_config: stage_anat_head(args, log, path, final)
    if not args.skip_dadiff: stage_dadiff(args, log)
    log(f"done in {(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == '__main__':
    main()
