"Tests for founddiff.diffusion that do not fit the notebook: layering, the interface other modules rely on, gradients, batch independence."
import ast, dataclasses, json, os, subprocess, sys
from pathlib import Path
import pytest, torch
from founddiff import diffusion as D
from founddiff.blocks import DACB

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'PYTHONPATH': str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', '')}

def _micro(**kw):
    "A very small U-Net config for gradient checks."
    return dataclasses.replace(D.get_config('tiny'), name='micro', **kw)

def _open_gates(unet, std=0.05, seed=0):
    "Give every DACB's adaLN a non-zero weight, as after training, so the conditioning path is exercised."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in unet.modules():
            if isinstance(m, DACB): m.adaLN.linear.weight.copy_(torch.randn(m.adaLN.linear.weight.shape, generator=g, dtype=m.adaLN.linear.weight.dtype) * std)

def test_module_imports_follow_the_layers():
    "diffusion imports core and blocks (and through them scan), never daclip, physics, data or the sampler."
    tree = ast.parse((ROOT / 'founddiff' / 'diffusion.py').read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import): names |= {a.name for a in node.names}
        if isinstance(node, ast.ImportFrom) and node.module: names.add(('founddiff.' if node.level else '') + node.module)
    assert {n for n in names if n.startswith('founddiff')} <= {'founddiff.core', 'founddiff.blocks', 'founddiff.scan'}
    code = ("import sys, founddiff.diffusion; fd = sorted(m for m in sys.modules if m.startswith('founddiff.')); "
            "assert set(fd) <= {'founddiff.core', 'founddiff.scan', 'founddiff.blocks', 'founddiff.diffusion'}, fd")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr + r.stdout

def test_interface_contract():
    "The names and fields the sampler and the pipeline code against."
    s = D.get_schedule('founddiff', T=1000)
    assert {f.name for f in dataclasses.fields(s)} == {'name', 'T', 'abar', 'bbar'}
    assert s.abar.dtype == s.bbar.dtype == torch.float64 and s.abar.shape == (1000,)
    assert s.time_input(torch.tensor([999])).dtype == torch.float32
    with pytest.raises(dataclasses.FrozenInstanceError): s.T = 3
    r = D.get_schedule('rddm', T=10)
    assert r.T == 10 and float(r.abar[-1]) == 1.0 and abs(float(r.bbar[-1]) - 0.1) < 1e-12
    assert torch.equal(r.time_input(torch.arange(10)), torch.arange(10, dtype=torch.float32))
    assert set(D.CONFIGS) >= {'tiny', 'small', 'paper'}
    for cfg in D.CONFIGS.values():
        d = json.loads(json.dumps(dataclasses.asdict(cfg)))
        assert D.get_config(d) == cfg and d['dose_dim'] == 1024 and d['anat_dim'] == 256 and d['conditioning'] in D.CONDITIONING
        assert d['name'] in D.CONFIGS
    unet = D.DADiffUNet('tiny')
    assert unet.config is D.CONFIGS['tiny']

def test_official_float32_buffers():
    "The founddiff schedule's abar, cast to float32, is the official float32 computation bit for bit."
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32)
    ac = torch.cumprod(1.0 - betas, dim=0)
    s = D.get_schedule('founddiff')
    assert torch.equal(s.abar.float(), 1 - ac ** 0.5) and torch.equal(s.bbar.float(), torch.sqrt(1 - ac))

def test_gradients_float64():
    "Gradients of a micro U-Net (DACBs open) match finite differences: the input pixels, and directional derivatives along the embeddings and time."
    torch.manual_seed(0)
    unet = D.DADiffUNet(_micro(dim=8, dim_mults=(1, 2), d_states=(2, 2)), backend='torch').double()
    _open_gates(unet)
    f64 = dict(dtype=torch.float64)
    ld, d, a, t = torch.randn(1, 1, 4, 3, **f64), torch.randn(1, 1024, **f64), torch.randn(1, 256, **f64), torch.tensor([300.], **f64)
    x = torch.randn(1, 1, 4, 3, **f64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: unet(x, ld, t, d, a), (x,), eps=1e-6, atol=1e-5, rtol=1e-4)
    w = torch.randn(1, 1, 4, 3, **f64)                                      # loss = <w, out>
    for name in ('dose', 'anatomy', 'time'):
        args = dict(dose=d.clone(), anatomy=a.clone(), time=t.clone())
        v = torch.randn_like(args[name]); args[name].requires_grad_(True)
        (unet(x.detach(), ld, args['time'], args['dose'], args['anatomy']) * w).sum().backward()
        analytic = float((args[name].grad * v).sum())
        def loss(h):
            kw = {k: (val.detach() + h * v if k == name else val.detach()) for k, val in args.items()}
            with torch.no_grad(): return float((unet(x.detach(), ld, kw['time'], kw['dose'], kw['anatomy']) * w).sum())
        numeric = (loss(1e-5) - loss(-1e-5)) / 2e-5
        assert abs(analytic - numeric) <= 1e-5 + 1e-4 * abs(numeric), (name, analytic, numeric)
        assert abs(analytic) > 1e-8, name                                   # the path is really open

def test_batch_items_are_independent():
    "A batch gives the same outputs as its items one by one (GroupNorm and the scans are per sample)."
    torch.manual_seed(1)
    unet = D.DADiffUNet('tiny').eval(); _open_gates(unet)
    x, ld = torch.randn(3, 1, 20, 28), torch.randn(3, 1, 20, 28)
    t, d, a = torch.tensor([1., 500., 990.]), torch.randn(3, 1024), torch.randn(3, 256)
    with torch.no_grad():
        full = unet(x, ld, t, d, a)
        one = torch.cat([unet(x[i:i + 1], ld[i:i + 1], t[i:i + 1], d[i:i + 1], a[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(full, one, rtol=1e-4, atol=1e-5)

def test_conditioning_none_has_no_dose_prompt():
    paper, none = D.CONFIGS['paper'], dataclasses.replace(D.CONFIGS['paper'], name='paper-none', conditioning='none')
    n = lambda c: sum(p.numel() for p in D.DADiffUNet(c).parameters())
    assert n(paper) - n(none) == 394_240                                   # exactly the dose prompt

def test_state_dict_round_trip_and_dtype():
    torch.manual_seed(2)
    a, b = D.DADiffUNet('tiny'), D.DADiffUNet('tiny')
    _open_gates(a)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 1, 12, 12); args = (x, x, torch.tensor([3., 4.]), torch.randn(2, 1024), torch.randn(2, 256))
    with torch.no_grad(): assert torch.equal(a(*args), b(*args))
    with pytest.raises(TypeError, match='time must be'): a(x, x, 'later', args[3], args[4])
    with pytest.raises(TypeError, match='config must be'): D.DADiffUNet(3)

def test_loss_takes_daclip_output():
    "residual_loss accepts DA-CLIP's output object as `emb` (anything with .dose and .anatomy): the two wings meet only through tensors."
    from founddiff.daclip import load_daclip
    torch.manual_seed(3)
    enc, unet = load_daclip('small').eval(), D.DADiffUNet('tiny')
    nd = torch.rand(2, 1, 32, 32) * 0.2 - 0.5; ld = nd + 0.02 * torch.randn(2, 1, 32, 32)
    with torch.no_grad(): emb = enc((ld + 1) / 2)                               # DA-CLIP works on [0, 1]
    loss = D.residual_loss(unet, nd, ld, emb, 'founddiff', generator=0)
    same = D.residual_loss(unet, nd, ld, (emb.dose, emb.anatomy), 'founddiff', generator=0)
    assert torch.isfinite(loss) and loss.item() == same.item()
    with pytest.raises(ValueError, match='dose embedding is required'): D.residual_loss(unet, nd, ld, None, generator=0)
    with pytest.raises(TypeError, match='emb must be'): D.residual_loss(unet, nd, ld, 'chest', generator=0)
