#!/usr/bin/env python
"""Benchmark founddiff's low-dose CT simulation (our torch fan-beam projector + FBP).

Times, on the device given (CPU by default):
  * one 512x512 slice at the full Siemens-like geometry (1160 views x 672 channels): projection, FBP, and
    `simulate_pair` (projection + noise + 2 FBPs), and `simulate_doses` at all 8 doses;
  * the small geometry a CPU course or DA-CLIP pre-training uses: 3 regions x 8 doses x N 64x64 phantoms,
    with the `grid_sample` backend and with the cached sparse matrices.
Every time is also printed as a ratio to a baseline measured in the same run (one 64x64 FBP with grid_sample),
so runs on different or busy machines compare. No absolute time is asserted.

    python scripts/bench_physics.py                 # CPU, everything
    python scripts/bench_physics.py --quick         # skip the 512x512 part
    python scripts/bench_physics.py --device cuda   # on a GPU
"""
import argparse, platform, time
import numpy as np
import torch
from founddiff.phantoms import phantom, REGIONS, FOV_MM
from founddiff.physics import (FanBeamGeometry, fan_project, fan_fbp, hu_to_mu, simulate_pair, simulate_doses, DOSES)


def timeit(fn, repeat=1, sync=None):
    "Best wall time of `repeat` runs (after none: the first call counts, caches included where noted)."
    best = float('inf')
    for _ in range(repeat):
        if sync: sync()
        t = time.perf_counter(); out = fn()
        if sync: sync()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--quick', action='store_true', help='skip the 512x512 full-geometry part')
    ap.add_argument('--n', type=int, default=24, help='64x64 phantoms per region for the small-geometry part')
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == 'cuda' else None
    print(f"torch {torch.__version__}, device {dev}, {torch.get_num_threads()} CPU threads, {platform.processor() or platform.machine()}")
    print("projector: founddiff's own torch fan-beam (equi-angular), ray-driven grid_sample; FBP: cosine weight + "
          "equi-angular ramp (Hann window) + 1/L^2 back-projection\n")

    # baseline: one 64x64 FBP with grid_sample
    g64 = FanBeamGeometry.for_image((64, 64))
    mu64 = torch.tensor(hu_to_mu(phantom('abdomen', 64, 0)), device=dev)
    p64 = fan_project(mu64, g64, backend='grid')
    base, _ = timeit(lambda: fan_fbp(p64, g64, (64, 64), backend='grid'), repeat=3, sync=sync)
    print(f"baseline: one 64x64 FBP (grid_sample, {g64.n_views} views x {g64.n_det} channels): {base * 1e3:.1f} ms")
    row = lambda name, t: print(f"  {name:<62s} {t:8.2f} s  ({t / base:8.0f} x baseline)")

    print(f"\nsmall geometry: {len(REGIONS)} regions x {len(DOSES)} doses x {args.n} phantoms of 64x64 "
          f"({len(REGIONS) * len(DOSES) * args.n} low-dose images + {len(REGIONS) * args.n} references)")
    xs = {r: torch.tensor(np.stack([phantom(r, 64, i) for i in range(args.n)]), device=dev) for r in REGIONS}
    for backend in ('grid', 'matrix'):
        t, _ = timeit(lambda: [simulate_doses(xs[r], DOSES, generator=0, pixel_spacing=FOV_MM[r] / 64, backend=backend) for r in REGIONS], sync=sync)
        row(f"simulate_doses, backend={backend!r}" + (" (first call: builds 3 matrices)" if backend == 'matrix' else ''), t)
    t, _ = timeit(lambda: [simulate_doses(xs[r], DOSES, generator=0, pixel_spacing=FOV_MM[r] / 64, backend='matrix') for r in REGIONS], sync=sync)
    row("simulate_doses, backend='matrix' (matrices cached)", t)

    if not args.quick:
        print("\nfull geometry: one 512x512 abdomen phantom, 1160 views x 672 channels, 0.74 mm pixels")
        g = FanBeamGeometry.for_image((512, 512), FOV_MM['abdomen'] / 512)
        hu = phantom('abdomen', 512, 0)
        mu = torch.tensor(hu_to_mu(hu), device=dev)
        t_p, p = timeit(lambda: fan_project(mu, g), sync=sync); row("fan_project", t_p)
        t_f, _ = timeit(lambda: fan_fbp(p, g, (512, 512)), sync=sync); row("fan_fbp", t_f)
        x = torch.tensor(hu, device=dev)
        t_s, (lo, ref) = timeit(lambda: simulate_pair(x, 0.25, generator=0, pixel_spacing=FOV_MM['abdomen'] / 512), sync=sync)
        row("simulate_pair (1/4 dose + noiseless reference)", t_s)
        t_d, _ = timeit(lambda: simulate_doses(x, DOSES, generator=0, pixel_spacing=FOV_MM['abdomen'] / 512), sync=sync)
        row("simulate_doses (all 8 doses + reference, one projection)", t_d)
        body = (ref > -500)
        print(f"  noise at 1/4 dose inside the body: {float((lo - ref)[body].std()):.1f} HU (Hann filter)")


if __name__ == '__main__':
    main()
