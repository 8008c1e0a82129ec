"""Checkpoints of a module-parallel run: one file per module plus a manifest, written atomically.

Layout (``WORK_DIR/pipeline_ckpt``)::

    iter_40/stage0.pth ... stage{K-1}.pth   # module k: its weights/buffers, optimizer, schedulers,
                                            # RNG states (stage 0: of every replica, for the data)
    iter_40/manifest.json                   # written last: iteration, K, R, cuts, files, keys
    last                                    # path of the newest complete manifest

Every file is written to a temporary name, fsynced and renamed. No stage waits for the others:
each writes its file (:class:`StageCheckpointer`), then bumps a counter in the job store; the rank
that completes the set writes the manifest and ``last``. A checkpoint without a manifest is
incomplete and ignored. :func:`load_for_resume` reads a stage's file back and
:meth:`StageCheckpointer.restore` puts it into the stage.

:func:`export` merges the stage files into the single-file checkpoint ordinary training writes
(``{'meta': ..., 'state_dict': ...}``, same keys), which ``tools/test.py`` and the export tools
read::

    python -m localvision.engine.pipeline.checkpoint WORK_DIR/pipeline_ckpt/last OUT.pth
"""
from __future__ import annotations

import io
import json
import os
import os.path as osp
import shutil
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from localvision.errors import InputError, MissingDataError
from localvision.utils.atomic_io import AtomicLocalBackend
from localvision.utils.checkpoint import check_state_fits

from .data import gather_rng_states
from .stage import owned_state
from .topology import Topology

MANIFEST = 'manifest.json'
CKPT_DIR = 'pipeline_ckpt'
LAST = 'last'
VERSION = 1


def put_bytes(data: bytes, path: str) -> None:
    """Write ``data`` to ``path`` atomically (temporary name, fsync, rename)."""
    AtomicLocalBackend().put(data, path)


def save_torch(obj: Any, path: str) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    put_bytes(buf.getvalue(), path)


def load_torch(path: str) -> Any:
    from localvision.utils import allow_mmengine_checkpoints
    allow_mmengine_checkpoints()
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise InputError(f'pipeline checkpoint file {path} cannot be loaded: {type(e).__name__}: {e}') from None


def ckpt_root(work_dir: str) -> str:
    return osp.join(work_dir, CKPT_DIR)


def iter_dir(work_dir: str, iteration: int) -> str:
    return osp.join(ckpt_root(work_dir), f'iter_{iteration}')


def stage_file(stage: int) -> str:
    return f'stage{stage}.pth'


def write_manifest(folder: str, manifest: Dict[str, Any], work_dir: Optional[str] = None) -> str:
    path = osp.join(folder, MANIFEST)
    put_bytes(json.dumps(manifest, indent=1).encode(), path)
    if work_dir is not None:
        put_bytes(osp.abspath(path).encode(), osp.join(ckpt_root(work_dir), LAST))
    return path


def resolve_manifest(path: str, work_dir: Optional[str] = None) -> str:
    """A manifest path from a manifest, its folder, a ``last`` pointer, or ``'auto'`` (the newest
    complete checkpoint in ``work_dir``)."""
    if path in (None, True, 'auto'):
        if work_dir is None:
            raise InputError('resuming a pipeline run needs the work dir or a manifest path')
        path = osp.join(ckpt_root(work_dir), LAST)
        if not osp.isfile(path):
            raise MissingDataError(f'no complete pipeline checkpoint to resume from in {ckpt_root(work_dir)}')
    if osp.isdir(path):
        path = osp.join(path, MANIFEST)
    if osp.basename(path) == LAST and osp.isfile(path):
        with open(path) as f:
            path = f.read().strip()
    if not osp.isfile(path):
        raise MissingDataError(f'pipeline checkpoint manifest {path} does not exist')
    return path


def load_manifest(path: str) -> Dict[str, Any]:
    try:
        with open(path) as f:
            m = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f'pipeline checkpoint manifest {path} is unreadable: {e}') from None
    if not isinstance(m, dict) or m.get('version') != VERSION or 'stages' not in m:
        raise InputError(f'{path} is not a localvision pipeline manifest (version {VERSION})')
    folder = osp.dirname(osp.abspath(path))
    for s in m['stages']:
        f = osp.join(folder, s['file'])
        if not osp.isfile(f):
            raise MissingDataError(f'pipeline checkpoint {path} lists {s["file"]}, which is missing')
    m['folder'] = folder
    return m


def check_compatible(manifest: Dict[str, Any], num_stages: int, cuts: Optional[List[int]], path: str) -> None:
    if manifest['num_stages'] != num_stages:
        raise InputError(f'pipeline checkpoint {path} has K={manifest["num_stages"]} modules; this run has '
                         f'K={num_stages}')
    if cuts is not None and manifest.get('cuts') is not None and list(manifest['cuts']) != list(cuts):
        raise InputError(f'pipeline checkpoint {path} was cut at {manifest["cuts"]}; this run cuts at {cuts}')


def merged_state_dict(manifest_path: str) -> Dict[str, torch.Tensor]:
    """The whole model's state dict from the stage files of a manifest."""
    m = load_manifest(manifest_path)
    state: Dict[str, torch.Tensor] = {}
    for s in sorted(m['stages'], key=lambda d: d['stage']):
        part = load_torch(osp.join(m['folder'], s['file']))['state_dict']
        overlap = set(part) & set(state)
        if overlap:
            raise InputError(f'stage files of {manifest_path} overlap in {sorted(overlap)[:3]}')
        state.update(part)
    missing = set(m.get('keys', [])) - set(state)
    if missing:
        raise InputError(f'stage files of {manifest_path} miss {len(missing)} keys, e.g. {sorted(missing)[:3]}')
    return {k: state[k] for k in m.get('keys', sorted(state))}


def export(manifest_path: str, out: str, cfg_text: Optional[str] = None) -> str:
    """Merge a pipeline checkpoint into one mmengine-style file (``meta`` + ``state_dict``)."""
    manifest_path = resolve_manifest(manifest_path)
    m = load_manifest(manifest_path)
    state = merged_state_dict(manifest_path)
    meta = dict(epoch=m.get('epoch', 0), iter=m['iteration'], pipeline=dict(
        num_stages=m['num_stages'], replicas=m.get('replicas', 1), schedule=m.get('schedule'),
        manifest=osp.abspath(manifest_path)), time=time.strftime('%Y%m%d_%H%M%S'))
    if cfg_text is None:
        cfg_text = m.get('cfg')
    if cfg_text:
        meta['cfg'] = cfg_text
    save_torch(dict(meta=meta, state_dict=state), out)
    return out


def prune(work_dir: str, keep: int) -> None:
    """Keep the ``keep`` newest complete checkpoints (``keep <= 0``: keep all)."""
    if keep is None or keep <= 0:
        return
    root = ckpt_root(work_dir)
    done = []
    for name in os.listdir(root):
        if name.startswith('iter_') and osp.isfile(osp.join(root, name, MANIFEST)):
            try:
                done.append((int(name[5:]), name))
            except ValueError:
                pass
    for _, name in sorted(done)[:-keep]:
        shutil.rmtree(osp.join(root, name), ignore_errors=True)


def load_for_resume(path: str, work_dir: str, stage: int, num_stages: int,
                    cuts: Optional[List[int]]) -> Tuple[int, Dict[str, Any]]:
    """``(iteration, stage file)`` of the checkpoint to resume (``path`` as :func:`resolve_manifest`
    takes it), checked against this run's K and cuts."""
    path = resolve_manifest(path, work_dir)
    m = load_manifest(path)
    check_compatible(m, num_stages, cuts, path)
    return int(m['iteration']), load_torch(osp.join(m['folder'], stage_file(stage)))


class StageCheckpointer:
    """One stage's share of every checkpoint: its weights and buffers, optimizer, schedulers and the
    RNG states of its R replicas (replica 0 writes them).

    Args:
        work_dir: the run's work dir.
        topo: the grid (this rank's stage and replica, the stage's data-parallel group).
        model: the whole model; the stage saves the state-dict keys ``key_owner`` gives it.
        key_owner: the unit owning each state-dict key (:func:`.stage.ownership`).
        optim_wrapper: the stage's optimizer.
        schedulers: the stage's parameter schedulers.
        count: adds one to a job-wide counter and returns it (:meth:`.watchdog.Watchdog.count`):
            the stage that completes an iteration's set writes the manifest.
        run_info: what every manifest of the run records (``iters_per_epoch``, ``num_stages``,
            ``replicas``, ``schedule``, ``micro_batches``, ``cuts``).
        keys: the whole model's state-dict keys, in order.
        cfg_text: the config, kept in the manifest (and in the export).
        max_keep_ckpts: how many complete checkpoints to keep (``<= 0``: all).
    """

    def __init__(self, work_dir: str, topo: Topology, model: nn.Module, key_owner: Dict[str, int],
                 optim_wrapper, schedulers: Sequence, count: Callable[[str], int], run_info: Dict[str, Any],
                 keys: List[str], cfg_text: Optional[str] = None, max_keep_ckpts: int = -1) -> None:
        self.work_dir, self.topo, self.model, self.key_owner = work_dir, topo, model, key_owner
        self.optim_wrapper, self.schedulers, self.count = optim_wrapper, schedulers, count
        self.run_info, self.keys, self.cfg_text = run_info, keys, cfg_text
        self.max_keep_ckpts = max_keep_ckpts
        self.saved_at: Optional[int] = None  # the last iteration saved

    def save(self, iteration: int) -> None:
        """Save this stage at ``iteration`` (collective over the stage's replicas: the RNG states)."""
        stage = self.topo.stage
        self.saved_at = iteration
        rngs = gather_rng_states(self.topo.replicas, self.topo.dp_group)
        if self.topo.replica != 0:
            return
        folder = iter_dir(self.work_dir, iteration)
        os.makedirs(folder, exist_ok=True)
        payload = dict(stage=stage, iteration=iteration, state_dict=owned_state(self.model, self.key_owner, stage),
                       optimizer=self.optim_wrapper.state_dict(),
                       param_schedulers=[s.state_dict() for s in self.schedulers], rng=rngs)
        save_torch(payload, osp.join(folder, stage_file(stage)))
        num_stages = self.run_info['num_stages']
        if self.count(f'ckpt/{iteration}') == num_stages:  # the last stage to finish writes the manifest
            manifest = dict(version=VERSION, iteration=iteration,
                            epoch=iteration // self.run_info['iters_per_epoch'], **self.run_info,
                            stages=[dict(stage=k, file=stage_file(k)) for k in range(num_stages)],
                            keys=self.keys, cfg=self.cfg_text, time=time.strftime('%Y-%m-%d %H:%M:%S'))
            write_manifest(folder, manifest, self.work_dir)
            prune(self.work_dir, self.max_keep_ckpts)

    def restore(self, state: Dict[str, Any], path: str = '') -> None:
        """Load this stage's file (:func:`load_for_resume`, read from ``path``) into the model,
        optimizer and schedulers; a file of another model is one error."""
        own = {k: v for k, v in self.model.state_dict().items() if self.key_owner.get(k) == self.topo.stage}
        check_state_fits(own, state['state_dict'], path or f'of stage {self.topo.stage}')  # names and shapes only
        self.model.load_state_dict(state['state_dict'], strict=False)
        self.optim_wrapper.load_state_dict(state['optimizer'])
        for s, sd in zip(self.schedulers, state.get('param_schedulers', [])):
            s.load_state_dict(sd)


def main(argv=None) -> None:
    import argparse
    p = argparse.ArgumentParser(description='Merge a pipeline checkpoint into one checkpoint file')
    p.add_argument('manifest', help='manifest.json, its folder, or WORK_DIR/pipeline_ckpt/last')
    p.add_argument('out', help='output .pth')
    args = p.parse_args(argv)
    try:
        print(export(args.manifest, args.out))
    except InputError as e:
        raise SystemExit(f'error: {e}') from None


if __name__ == '__main__':
    main(sys.argv[1:])
