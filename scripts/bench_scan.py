#!/usr/bin/env python
"""Benchmark the selective-scan backends against the sequential reference (a thin CLI over founddiff.scan.benchmark_scan).

Examples:
    python scripts/bench_scan.py                                   # B=1, D=64, L=4096, N=16, fp32, forward and fwd+bwd
    python scripts/bench_scan.py --cases mamba-layer dacb-128 dacb-512 --ref-max-L 4096
    python scripts/bench_scan.py --shape 2,128,1024,16,4 --threads 1
Ratios are measured in one run (median of interleaved repeats): x faster than the last backend listed (default 'ref').
"""
import argparse, sys
import torch
from founddiff.scan import BENCH_CASES, benchmark_scan, available_backends

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--cases', nargs='+', default=None, choices=sorted(BENCH_CASES), help="named shapes (default: mamba-layer, unless --shape is given)")
    p.add_argument('--shape', action='append', default=[], metavar='b,D,L,N[,G]', help='extra shape(s): batch, channels, length, states[, groups]')
    p.add_argument('--backends', nargs='+', default=['torch', 'ref'], help='backends; the last one is the baseline')
    p.add_argument('--reps', type=int, default=5, help='timed repeats (median reported)')
    p.add_argument('--forward-only', action='store_true', help='skip forward + backward')
    p.add_argument('--ref-max-L', type=int, default=8192, help='run the baseline at most at this L (others also timed there)')
    p.add_argument('--dtype', default='float32', choices=['float32', 'float64', 'float16', 'bfloat16'])
    p.add_argument('--device', default=None, help="e.g. 'cpu' or 'cuda' (default: cpu)")
    p.add_argument('--threads', type=int, default=None, help='torch intra-op threads (default: torch default)')
    a = p.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    cases = list(a.cases if a.cases is not None else ([] if a.shape else ['mamba-layer']))
    for s in a.shape:
        v = [int(t) for t in s.split(',')]
        if len(v) not in (4, 5): p.error(f'--shape wants b,D,L,N[,G], got {s!r}')
        cases.append(dict(name='x'.join(map(str, v)), b=v[0], D=v[1], L=v[2], N=v[3], G=v[4] if len(v) == 5 else None))
    dev = torch.device(a.device or 'cpu')
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, device {dev}, dtype {a.dtype}, '
          f'backends available here: {available_backends(dev)}')
    benchmark_scan(cases, backends=a.backends, reps=a.reps, backward=not a.forward_only, ref_max_L=a.ref_max_L,
                   dtype=getattr(torch, a.dtype), device=dev)
    return 0

if __name__ == '__main__': sys.exit(main())
