#!/usr/bin/env python
"""Score a DA-CLIP checkpoint the way its card reports it, and write the scores into its JSON sidecar.

    python scripts/daclip_card.py                                   # the shipped founddiff/weights/daclip_small.*
    python scripts/daclip_card.py --weights runs/w/daclip_small     # a checkpoint written by scripts/train_small.py

1. Held-out phantoms (split 'test', never in training) at 64 and 128 px: unseen-dose Spearman, pair order, log-dose
   error and region accuracy, with a probe fitted on other held-out phantoms at the seen doses (`metrics.by_size`).
2. Real CT, **evaluation only** (never training): the slices of `scripts/evaluate_all.py` (pydicom's test data and the two
   bundled samples, with the regions it gives them), each simulated at its own size and pixel spacing at the eight doses (seed 0). The dose is read by a log-dose ridge probe
   fitted on held-out *plain* 512x512 phantoms at the seen doses and the region by their nearest centroid, as a new user
   would do it (`metrics.real_ct`). Nothing here feeds back into training.
"""
from __future__ import annotations
import argparse, json, sys
from pathlib import Path
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_small import heldout
from evaluate_all import real_cases
from founddiff.core import DOSES, SEEN_DOSES, UNSEEN_DOSES, REGIONS, atomic_write
from founddiff.daclip import load_daclip, evaluate_daclip, weights_dir, ridge_probe, nearest_centroid, spearman
from founddiff.physics import simulate_doses


def real_ct_rows(model, n_probe: int = 6):
    "One row per real slice: Spearman of the dose read over the 8 doses, median read/true factor, regions read."
    ref = heldout(512, n_probe, SEEN_DOSES, seed=1)
    e = model.embed(ref[0], 8)
    probe, reg = ridge_probe(e.dose, ref[1].log()), nearest_centroid(e.anatomy, ref[2])
    rows = []
    cases, _ = real_cases()                                # the evaluation's real slices and regions ('other': none of the three)
    for case in cases:
        name, region, sp = case.name, (case.region if case.region in REGIONS else None), case.spacing
        low, _ = simulate_doses(case.hu, DOSES, generator=0, pixel_spacing=tuple(sp) if sp else None)
        emb = model.embed(torch.as_tensor(np.asarray(low)), 8)
        pred, truth = probe(emb.dose).exp(), torch.tensor(DOSES)
        regs = [REGIONS[int(k)] for k in reg(emb.anatomy)]
        rows.append(dict(slice=name, size=list(case.hu.shape), pixel_spacing_mm=round(float(sp[0]), 4) if sp else None,
                         spearman=round(spearman(pred, truth), 3),
                         median_dose_factor=round(float((pred / truth).log().abs().exp().median()), 2),
                         dose_read=[round(float(v), 3) for v in pred], region_truth=region, regions_read=regs,
                         region_right=None if region is None else float(np.mean([r == region for r in regs]))))
        print(rows[-1], flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--weights', default=None, help='checkpoint path without suffix (default: the shipped daclip_small)')
    args = ap.parse_args(argv)
    path = Path(args.weights).with_suffix('.safetensors') if args.weights else weights_dir() / 'daclip_small.safetensors'
    model = load_daclip(path=path)
    card = path.with_suffix('.json'); meta = json.loads(card.read_text())
    for size in (64, 128):
        train, test = heldout(size, 9, SEEN_DOSES, seed=1), heldout(size, 9, DOSES, seed=2)
        res = evaluate_daclip(model, train[:3], test[:3], UNSEEN_DOSES, batch_size=8)
        meta['metrics'].setdefault('by_size', {})[str(size)] = {k: round(float(v), 4) for k, v in res.items() if isinstance(v, float)}
        print(size, meta['metrics']['by_size'][str(size)], flush=True)
    meta['metrics']['real_ct'] = dict(
        what="pydicom-data CT slices and the two bundled samples (evaluation only, never training), each simulated at its own "
             "pixel spacing at the eight doses (seed 0); dose read by a log-dose ridge probe fitted on held-out plain 512x512 "
             "phantoms at the seen doses; region by the nearest centroid of the same phantoms (scripts/daclip_card.py)",
        rows=real_ct_rows(model))
    with atomic_write(card, 'w') as f: json.dump(meta, f, indent=1)
    print(f"wrote {card}")


if __name__ == '__main__':
    main()
