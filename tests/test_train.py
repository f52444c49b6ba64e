"Trainer checks that do not fit the notebook: exact resume, 2-process DDP on gloo, config files, layering, the script."
import ast, json, math, os, socket, subprocess, sys
from dataclasses import replace
from pathlib import Path
import pytest
import torch
import torch.multiprocessing as mp
from founddiff.train import (TrainConfig, Trainer, build_slices, embed_slices, train_from_config, _IDENTITY)
from founddiff.daclip import load_daclip

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    "Tiny DA-Diff run on 2 phantoms of 32x32 at the 4 seen doses, with their whole-slice DA-CLIP embeddings."
    d = tmp_path_factory.mktemp('train')
    cfg = TrainConfig(model='dadiff', config='tiny', phantoms=2, image_size=32, patch=16, steps=4, batch_size=4, lr=1e-3,
                      ema_decay=0.9, log_every=0, checkpoint_every=0, out=str(d / 'run'), cache_dir=str(d / 'cache'))
    s = build_slices(cfg, progress=False)
    embed_slices(s, load_daclip('small'))
    return cfg, s, d


def _weights(tr): return {**{f'm.{k}': v for k, v in tr.objective.state_dict().items()}, **{f'e.{k}': v for k, v in tr.ema.state_dict().items()}}


def test_exact_resume_on_cpu(setup):
    cfg, s, d = setup
    a = Trainer(cfg, s, progress=False); a.fit()                                      # 4 steps
    b = Trainer(cfg, s, progress=False); b.fit(2); ck = b.save(d / 'two.safetensors')  # 2 steps, save
    c = Trainer(cfg, s, progress=False).load(ck); assert c.step == 2; c.fit()         # load, 2 steps
    wa, wc = _weights(a), _weights(c)
    assert wa.keys() == wc.keys()
    for k in wa: assert torch.equal(wa[k], wc[k]), k
    assert a.history == c.history
    assert not torch.equal(wa['m.model.init_conv.weight'], _weights(Trainer(cfg, s, progress=False))['m.model.init_conv.weight'])   # it trained
    # optimiser moments came back too: one more step from each is identical
    ra, rc = a.train_step(), c.train_step()
    assert ra['loss'] == rc['loss']


def test_checkpoint_is_safetensors_and_refuses_others(setup):
    cfg, s, d = setup
    tr = Trainer(replace(cfg, steps=1), s, progress=False); tr.fit(); ck = tr.save(d / 'one.safetensors')
    raw = ck.read_bytes(); n = int.from_bytes(raw[:8], 'little'); hdr = json.loads(raw[8:8 + n])
    assert hdr['__metadata__']['format'] == 'founddiff.checkpoint' and not raw.startswith(b'PK')
    assert {'rng.batches', 'rng.torch', 'rng.numpy'} <= set(hdr) and hdr['rng.torch']['dtype'] == 'U8'
    assert any(k.startswith('opt.') for k in hdr) and any(k.startswith('ema.') for k in hdr)
    with pytest.raises(ValueError, match=r"checkpoint of another run .*'schedule': \('founddiff', 'rddm'\)"):
        Trainer(replace(cfg, schedule='rddm'), s, progress=False).load(ck)
    cut = d / 'cut.safetensors'; cut.write_bytes(raw[:len(raw) // 2])
    with pytest.raises(ValueError, match='cut.safetensors'): Trainer(cfg, s, progress=False).load(cut)
    with pytest.raises(ValueError, match='not a founddiff training checkpoint'):
        Trainer(cfg, s, progress=False).load(ROOT / 'founddiff' / 'weights' / 'daclip_small.safetensors')


def _worker(rank, world, port, cfg, slices, out):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import warnings; warnings.filterwarnings('ignore')
    tr = Trainer(replace(cfg, out=str(Path(out).parent / 'ddp')), slices, progress=False)
    assert tr.world == world and tr.rank == rank
    tr.fit()                                                      # rank 0 writes the checkpoint at the end
    if rank == 0: torch.save({'w': _weights(tr), 'history': tr.history}, out)
    torch.distributed.destroy_process_group()


def test_two_gloo_processes_match_one(setup):
    "2 processes with 2 items each take the same steps as 1 process with the global batch of 4 (up to float rounding)."
    cfg, s, d = setup
    cfg = replace(cfg, steps=2)
    one = Trainer(cfg, s, progress=False); one.fit()
    with socket.socket() as so: so.bind(('127.0.0.1', 0)); port = so.getsockname()[1]
    mp.spawn(_worker, args=(2, port, cfg, s, str(d / 'ddp.pt')), nprocs=2, join=True)
    got = torch.load(d / 'ddp.pt', weights_only=True)
    w1, w0 = _weights(one), _weights(Trainer(cfg, s, progress=False))
    for (_, l1), (_, l2) in zip(one.history, got['history']): assert math.isclose(l1, l2, rel_tol=1e-5)   # same batches, same losses
    moved = math.sqrt(sum(((w1[k] - w0[k]).double() ** 2).sum() for k in w1 if w1[k].is_floating_point()))
    off = math.sqrt(sum(((w1[k] - got['w'][k]).double() ** 2).sum() for k in w1 if w1[k].is_floating_point()))
    assert moved > 1e-3 and off < 2e-2 * moved, (off, moved)     # Adam turns rounding-level gradient differences into small steps
    n = sum(w.numel() for w in w1.values())
    far = sum(int(((w1[k] - got['w'][k]).abs() > 1e-4).sum()) for k in w1 if w1[k].is_floating_point())
    assert far < 1e-3 * n, (far, n)
    assert (d / 'ddp' / 'checkpoint.safetensors').exists()       # rank 0 wrote it
    with pytest.raises(ValueError, match='multiple of the number of processes'):
        os.environ['WORLD_SIZE'] = '3'
        try: Trainer(cfg, s, progress=False)
        finally: del os.environ['WORLD_SIZE']


def test_config_files(tmp_path):
    for name in ('tiny', 'small', 'small_long', 'daclip_small', 'paper'):
        cfg = TrainConfig.from_file(ROOT / 'configs' / f'{name}.json')
        assert cfg.doses == (1/2, 1/4, 1/6, 1/10) and cfg.model in ('dadiff', 'daclip')
    small = TrainConfig.from_file(ROOT / 'configs' / 'small.json')
    assert (small.config, small.image_size) == ('small', 512) and 96 <= small.patch <= 128
    assert TrainConfig.from_file(ROOT / 'configs' / 'daclip_small.json').image_size == 512
    long = TrainConfig.from_file(ROOT / 'configs' / 'small_long.json')   # the experiment of notebook 11: DA-CLIP's varied data
    daclip = TrainConfig.from_file(ROOT / 'configs' / 'daclip_small.json')
    assert (long.phantoms, long.fov_scale, long.variety, long.source_dose) == (daclip.phantoms, daclip.fov_scale, True, daclip.source_dose)
    assert long.out != small.out and long.steps > small.steps
    p = tmp_path / 'c.json'
    p.write_text(json.dumps({'model': 'dadiff', 'learning_rate': 1e-3}))
    with pytest.raises(ValueError, match=r"c\.json.*unknown TrainConfig field\(s\) \['learning_rate'\]"): TrainConfig.from_file(p)
    p.write_text(json.dumps({'model': 'dadiff', 'steps': -1}))
    with pytest.raises(ValueError, match=r"c\.json.*steps must be a positive int"): TrainConfig.from_file(p)
    p.write_text('[1, 2]')
    with pytest.raises(ValueError, match=r"c\.json.*JSON object"): TrainConfig.from_file(p)
    with pytest.raises(FileNotFoundError, match='no training config'): TrainConfig.from_file(tmp_path / 'none.json')
    with pytest.raises(ValueError, match="not a daclip config"): TrainConfig(model='daclip', config='nano')


def test_train_from_config_file_resumes(setup, tmp_path):
    cfg, s, d = setup
    p = replace(cfg, steps=1, out=str(tmp_path / 'r')).to_file(tmp_path / 'c.json')
    t = train_from_config(p, slices=s, progress=False); assert t.step == 1
    replace(cfg, steps=2, out=str(tmp_path / 'r')).to_file(p)
    t = train_from_config(p, slices=s, progress=False); assert (t.step, len(t.history)) == (2, 2)
    assert {'checkpoint.safetensors', 'config.json', 'loss.png'} <= {f.name for f in (tmp_path / 'r').iterdir()}
    t = train_from_config(p, resume=False, slices=s, progress=False); assert len(t.history) == 2   # a fresh run


def test_module_imports_follow_the_layers():
    "train -> data, daclip, diffusion, losses (+ core, and the sampler for its sample grids); never pipeline, cli, widgets."
    tree = ast.parse((ROOT / 'founddiff' / 'train.py').read_text())
    mods = {('founddiff.' if n.level else '') + n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    mods |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    allowed = {'founddiff.core', 'founddiff.io', 'founddiff.data', 'founddiff.daclip', 'founddiff.diffusion', 'founddiff.losses', 'founddiff.sampler'}
    assert {m for m in mods if m.startswith('founddiff')} <= allowed, mods


def test_train_small_script_help():
    r = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'train_small.py'), '--help'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and '--skip-daclip' in r.stdout and '--bench' in r.stdout, r.stderr


def test_resume_refuses_another_daclip(setup, tmp_path):
    "A DA-Diff checkpoint remembers the DA-CLIP that made its embeddings; resuming with a retrained one is refused."
    cfg, s, d = setup
    c = replace(cfg, steps=1, out=str(tmp_path / 'r'), cache_dir=str(tmp_path / 'cache'))
    plain = replace(s, emb=None)
    a = Trainer(c, plain, progress=False); a.fit(); ck = a.save()
    assert Trainer(c, replace(s, emb=None), progress=False).load(ck).step == 1
    other = load_daclip('small'); torch.nn.init.zeros_(next(other.parameters()))
    with pytest.raises(ValueError, match='embeddings of another DA-CLIP'):
        Trainer(c, replace(s, emb=None), daclip=other, progress=False).load(ck)


def test_train_small_script_end_to_end_tiny(tmp_path):
    "The one-command script at toy scale (tiny models, 64 px phantoms, 2 steps each), writing into a temporary weights folder."
    from founddiff.pipeline import load_model
    common = dict(phantoms=3, image_size=64, steps=2, log_every=0, checkpoint_every=0, cache_dir=str(tmp_path / 'cache'), threads=2)
    TrainConfig(model='daclip', config='tiny', patch=0, batch_size=6, out=str(tmp_path / 'dc'), **common).to_file(tmp_path / 'dc.json')
    TrainConfig(model='dadiff', config='tiny', patch=32, batch_size=2, out=str(tmp_path / 'dd'), **common).to_file(tmp_path / 'dd.json')
    TrainConfig(model='daclip', config='tiny', patch=0, batch_size=6, out=str(tmp_path / 'dc'), air=0.5, daclip_loss=dict(w_dose=0.0, w_anat=1.0),
                **common).to_file(tmp_path / 'anat.json')
    w = tmp_path / 'weights'
    r = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'train_small.py'), '--config', str(tmp_path / 'dd.json'),
                        '--daclip-config', str(tmp_path / 'dc.json'), '--weights-dir', str(w), '--eval-phantoms', '1', '--head-steps', '2',
                        '--anat-config', str(tmp_path / 'anat.json')],
                       capture_output=True, text=True, timeout=600, env={**os.environ, 'TQDM_DISABLE': '1'})
    assert r.returncode == 0, r.stderr[-3000:]
    assert {'daclip_small.safetensors', 'daclip_small.json', 'dadiff_small.safetensors', 'dadiff_small.json', 'dadiff_small.md',
            'dadiff_small_loss.png'} <= {f.name for f in w.iterdir()}
    card = json.loads((w / 'dadiff_small.json').read_text())
    assert card['steps'] == 2 and set(card['psnr']['rows']) == {'1/2', '1/3', '1/4', '1/5', '1/6', '1/8', '1/10', '1/20'}
    den = load_model(w / 'dadiff_small.safetensors')
    assert den.unet.config.name == 'tiny' and den.daclip.config.name == 'tiny'   # conditioned on the stage-1c encoder
    assert den.daclip.config.dose_head == 'linear' and (tmp_path / 'dc' / 'daclip_small_stage1.safetensors').exists()
    assert (tmp_path / 'dc' / 'daclip_small_stage1b.safetensors').exists()
    assert den.daclip.config.anat_head == 'linear'                                     # stage 1c's default: the closed-form head
    assert json.loads((w / 'daclip_small.json').read_text())['metrics']['anat_head']['kind'] == 'linear'
    assert not list(w.glob('.*.tmp'))


def test_train_small_stage_1b_fits_a_linear_dose_head_on_the_frozen_encoder(tmp_path):
    "--head-steps: stage 1 goes to the run folder, stage 1b's encoder (its backbone and anatomy head bit for bit stage 1's) to the weights."
    from founddiff.daclip import load_daclip
    common = dict(phantoms=3, image_size=64, steps=2, log_every=0, checkpoint_every=0, cache_dir=str(tmp_path / 'cache'), threads=2)
    TrainConfig(model='daclip', config='tiny', patch=0, batch_size=6, out=str(tmp_path / 'dc'), **common).to_file(tmp_path / 'dc.json')
    w, script = tmp_path / 'weights', str(ROOT / 'scripts' / 'train_small.py')
    r = subprocess.run([sys.executable, script, '--daclip-config', str(tmp_path / 'dc.json'), '--weights-dir', str(w), '--eval-phantoms', '1',
                        '--skip-dadiff', '--head-steps', '3', '--anat-config', ''], capture_output=True, text=True, timeout=600, env={**os.environ, 'TQDM_DISABLE': '1'})
    assert r.returncode == 0, r.stderr[-3000:]
    s1, s1b = load_daclip(path=tmp_path / 'dc' / 'daclip_small_stage1.safetensors'), load_daclip(path=w / 'daclip_small.safetensors')
    assert (s1.config.dose_head, s1b.config.dose_head) == ('mlp', 'linear') and isinstance(s1b.dose_head, torch.nn.Linear)
    a, b = s1.state_dict(), s1b.state_dict()
    for k in a:
        if k.startswith(('backbone.', 'anat_head.')): assert torch.equal(a[k], b[k]), k
    meta = json.loads((w / 'daclip_small.json').read_text())['metrics']
    assert meta['dose_head']['steps'] == 3 and meta['stage1']['source'] == 'daclip_small_stage1.safetensors'
    r = subprocess.run([sys.executable, script, '--dose-head-from', str(w / 'daclip_small'), '--head-steps', '0', '--skip-dadiff'],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and '--head-steps' in r.stderr


@pytest.mark.parametrize('fit', ['supcon', 'ridge'])
def test_train_small_stage_1c_fits_the_anatomy_head_alone(tmp_path, fit):
    """--anat-head-from: the backbone and dose head stay bit for bit, the anatomy head changes, on data with scanner air; the card
    says so. 'supcon' fine-tunes the MLP head; 'ridge' (the default) fits a linear head in closed form, its outputs past the
    three class scores zero."""
    from founddiff.daclip import load_daclip, save_daclip, DACLIP
    torch.manual_seed(0); base = save_daclip(DACLIP('tiny'), tmp_path / 'base', metrics=dict(weights='stage 1', train_time_s=1.0))
    TrainConfig(model='daclip', config='tiny', patch=0, batch_size=6, phantoms=3, image_size=64, steps=3, log_every=0, checkpoint_every=0,
                air=1.0, variety=True, daclip_loss=dict(w_dose=0.0, w_anat=1.0), cache_dir=str(tmp_path / 'cache'), out=str(tmp_path / 'dc'),
                threads=2).to_file(tmp_path / 'anat.json')
    w = tmp_path / 'weights'
    r = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'train_small.py'), '--anat-head-from', str(base), '--anat-config', str(tmp_path / 'anat.json'),
                        '--weights-dir', str(w), '--eval-phantoms', '1', '--skip-dadiff', '--anat-fit', fit],
                       capture_output=True, text=True, timeout=600, env={**os.environ, 'TQDM_DISABLE': '1'})
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = load_daclip(path=base).state_dict(), load_daclip(path=w / 'daclip_small.safetensors').state_dict()
    for k in a:
        if k.startswith(('backbone.', 'dose_head.')): assert torch.equal(a[k], b[k]), k
    assert (tmp_path / 'cache' / 'phantoms-64-variety-air1').is_dir()                 # the main set, cached apart
    meta = json.loads((w / 'daclip_small.json').read_text())['metrics']
    assert meta['anat_head']['air'] == 1.0 and meta['weights'].endswith('(stage 1c)')
    if fit == 'supcon':
        assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith('anat_head.'))
        assert meta['anat_head']['steps'] == 3 and meta['anat_head']['kind'] == 'mlp'
    else:
        new = load_daclip(path=w / 'daclip_small.safetensors')
        assert new.config.anat_head == 'linear' and set(b) - set(a) == {'anat_head.weight', 'anat_head.bias'}
        assert b['anat_head.weight'].shape == (new.config.anat_dim, new.config.feat_dim) and b['anat_head.weight'][3:].abs().max() == 0
        assert b['anat_head.weight'][:3].abs().max() > 0 and meta['anat_head']['kind'] == 'linear' and meta['anat_head']['slices'] == 12
    assert TrainConfig.from_file(ROOT / 'configs' / 'daclip_small_anat.json').air == 0.5
    with pytest.raises(ValueError, match='air must be a fraction'): TrainConfig(air=2)


def test_variety_builds_the_varied_phantom_set(tmp_path):
    "variety (and fov_scale above 1) reach the main phantom set only, under their own cache folder and keys; bad values are refused."
    from founddiff.train import build_slices
    cfg = TrainConfig(phantoms=3, image_size=32, extra_sizes=(32,), fov_scale=(1.2, 1.5), variety=True,
                      cache_dir=str(tmp_path / 'cache'), out=str(tmp_path / 'run'))
    s = build_slices(cfg, progress=False)
    assert (tmp_path / 'cache' / 'phantoms-32-fov-variety').is_dir() and (tmp_path / 'cache' / 'phantoms-32').is_dir()
    varied = [k for k in s.keys if k.startswith('phantoms-32-fov-variety/')]
    assert len(varied) == 3 * len(cfg.doses) and len(s.keys) == 2 * 3 * len(cfg.doses)
    assert any('-z1.' in k for k in varied) and not any('-z' in k for k in s.keys if '/' not in k)
    with pytest.raises(ValueError, match='variety must be true or false'): TrainConfig(variety='yes')
    with pytest.raises(ValueError, match='fov_scale must satisfy'): TrainConfig(fov_scale=(0.5, 3))
    assert TrainConfig.from_file(ROOT / 'configs' / 'daclip_small.json').variety is True
    assert TrainConfig.from_file(ROOT / 'configs' / 'small.json').variety is False     # DA-Diff's data is unchanged
