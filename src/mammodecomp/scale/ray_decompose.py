"""Decompose a large manifest with Ray, into the ordinary store.

:func:`ray_decompose` computes the same entry as
:meth:`mammodecomp.store.DecompStore.get_or_compute` (same key, same
``<key>.npy`` / ``<key>.json`` layout, same atomic rename under the same file
lock) but spreads the batches over Ray workers, CPU or GPU. The batches are
the single-process path's batches (rows ``[s, s + batch_size)``), so the
entry is bit-for-bit the one a single process writes: the tests check it on a
local Ray cluster. Two engines:

* ``"data"``: Ray Data ``map_batches`` over the batch starts (streaming,
  back-pressured: the driver writes each result into the memory-mapped entry
  as it arrives);
* ``"tasks"``: plain Ray tasks, at most ``max_in_flight`` at a time.

:func:`ray_extract_rois` cuts the ROIs of a manifest in chunks on Ray
workers (each film is read by the worker that owns its rows), and
:func:`ray_prepare_store` chains the two for a config, so that a following
``mammodecomp cv`` finds its components in the store.

The driver holds the ROIs (N, H, W) float32 and writes the float16 entry
through a memory map; the workers need the ROIs in the object store (put
once, read zero-copy by the workers of a node).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .ray_cv import ensure_ray, import_ray

__all__ = ["ray_decompose", "ray_extract_rois", "ray_prepare_store"]


def _decompose_batch(images: np.ndarray, start: int, stop: int, method: str, k: int, params: dict,
                     device: str | None, dtype: str):
    """Decompose rows ``[start, stop)``; returns (components in the store dtype, info)."""
    import torch

    from ..decompose import decompose
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    comp, info = decompose(np.asarray(images[start:stop]), method, k, device=device, return_info=True, **params)
    return comp.astype(dtype), info


class _BatchFn:
    """Ray Data callable: one batch start -> one row (start, components, per-image info arrays).

    Info values that are 1-D arrays (per image, e.g. VMD iterations) travel
    as ``info.<name>`` columns; the store's summary only keeps those.
    """

    def __init__(self, images_ref, n, batch_size, method, k, params, device, dtype):
        ray = import_ray()
        self.images = ray.get(images_ref[0])
        self.n, self.batch_size = n, batch_size
        self.method, self.k, self.params, self.device, self.dtype = method, k, params, device, dtype

    def __call__(self, batch: dict) -> dict:
        (s,) = batch["start"].tolist()    # map_batches(batch_size=1)
        c, info = _decompose_batch(self.images, s, min(s + self.batch_size, self.n), self.method, self.k,
                                   self.params, self.device, self.dtype)
        row = {"start": np.asarray([s], dtype=np.int64), "comps": c[None]}
        for name, v in info.items():
            if isinstance(v, np.ndarray) and v.ndim == 1:
                row[f"info.{name}"] = v[None]
        return row


def _results_data(ray, images_ref, n, batch_size, starts, method, k, params, device, dtype, num_gpus, num_cpus,
                  concurrency):
    import ray.data
    ds = ray.data.from_items([{"start": int(s)} for s in starts], override_num_blocks=len(starts))
    kw = {"num_gpus": num_gpus} if num_gpus else {"num_cpus": num_cpus}
    ds = ds.map_batches(_BatchFn, batch_size=1, batch_format="numpy", concurrency=concurrency,
                        fn_constructor_args=([images_ref], n, batch_size, method, k, params, device, dtype), **kw)
    for b in ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=1):
        info = {k[5:]: np.asarray(v[0]) for k, v in b.items() if k.startswith("info.")}
        yield int(b["start"][0]), np.asarray(b["comps"][0]), info


def _results_tasks(ray, images_ref, n, batch_size, starts, method, k, params, device, dtype, num_gpus, num_cpus,
                   max_in_flight):
    fn = ray.remote(_decompose_batch).options(num_gpus=num_gpus, num_cpus=0 if num_gpus else num_cpus,
                                              num_returns=2)
    todo = list(starts)
    pending: dict = {}
    while todo or pending:
        while todo and len(pending) < max_in_flight:
            s = todo.pop(0)
            c_ref, i_ref = fn.remote(images_ref, s, min(s + batch_size, n), method, k, params, device, dtype)
            pending[c_ref] = (s, i_ref)
        ready, _ = ray.wait(list(pending), num_returns=1)
        s, i_ref = pending.pop(ready[0])
        yield s, ray.get(ready[0]), ray.get(i_ref)


def ray_decompose(images, method: str, k: int, params: dict | None = None, *, store, batch_size: int = 32,
                  engine: str = "data", num_gpus_per_worker: float = 0, num_cpus_per_worker: float = 1,
                  concurrency: int | None = None, max_in_flight: int = 8, device: str | None = None,
                  address: str | None = None, progress: bool = True, init_kwargs: dict | None = None) -> np.ndarray:
    """Decompose ``images`` on Ray workers into ``store`` (or reuse the entry).

    Parameters
    ----------
    images : (N, H, W) array
        ROIs in manifest row order (float32 in [0, 1]).
    method, k, params :
        As for :meth:`mammodecomp.store.DecompStore.get_or_compute`.
    store : DecompStore or path
        The store to write into.
    batch_size : int
        Images per decomposition call; the same value as a single-process
        run gives the same batches, hence the same entry, bit for bit.
    engine : {"data", "tasks"}
        Ray Data ``map_batches`` or plain Ray tasks.
    num_gpus_per_worker : float
        GPUs per worker (0: CPU workers; 0.5: two workers per GPU).
    num_cpus_per_worker : float
        CPUs per CPU worker.
    concurrency : int or None
        Ray Data: number of workers (default: as many as the cluster fits).
    max_in_flight : int
        Ray tasks engine: batches submitted at once.
    device : str or None
        Torch device inside a worker; None: CUDA when the worker sees a GPU.
    address : str or None
        Ray cluster address; None starts (and stops) a local Ray unless this
        process is already connected.
    progress : bool
        Show a progress bar.
    init_kwargs : dict or None
        Passed to ``ray.init`` when this call starts Ray.

    Returns
    -------
    numpy.memmap
        (N, K, H, W) read-only, in the store's dtype.

    Notes
    -----
    Crash safety is the store's: the entry is written to a temporary file
    under the entry's file lock and renamed at the end; a killed run leaves
    no entry and the next one recomputes it.
    """
    from ..errors import InputError
    from ..store import DecompStore, _pixels

    if engine not in ("data", "tasks"):
        raise InputError(f"engine must be 'data' or 'tasks', got {engine!r}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    store = store if isinstance(store, DecompStore) else DecompStore(store)
    params = dict(params or {})
    n = len(_pixels(images))
    starts = list(range(0, n, batch_size))

    def batches(arr):
        """Ray's results as (start, components, info); Ray is stopped again if this call started it."""
        ray = import_ray()
        started = ensure_ray(address, **dict(init_kwargs or {}))
        try:
            common = (ray, ray.put(arr), n, batch_size, starts, method, int(k), params, device, store.dtype.name,
                      num_gpus_per_worker, num_cpus_per_worker)
            yield from (_results_data(*common, concurrency) if engine == "data"
                        else _results_tasks(*common, max_in_flight))
        finally:
            if started:
                ray.shutdown()

    return store.compute_entry(images, method, k, params, batches, n_batches=len(starts),
                               desc=f"decompose {method} (ray {engine})", progress=progress,
                               extra={"engine": f"ray-{engine}"})


def _extract_chunk(manifest, kw: dict):
    from ..roi import extract_rois
    return extract_rois(manifest, progress=False, **kw)


def ray_extract_rois(manifest, *, size: int = 320, mode: str = "context", fov_mm: float | None = None,
                     chunk_rows: int = 256, num_cpus_per_worker: float = 1, address: str | None = None,
                     init_kwargs: dict | None = None, progress: bool = True):
    """:func:`mammodecomp.roi.extract_rois` over chunks of rows on Ray workers.

    Parameters
    ----------
    manifest : DataFrame
        A validated manifest whose image paths every worker can read.
    size, mode, fov_mm :
        As for :func:`mammodecomp.roi.extract_rois`.
    chunk_rows : int
        Manifest rows per task (rows of one film are kept together, so each
        film is read once).
    num_cpus_per_worker : float
        CPUs per task.
    address, init_kwargs :
        As for :func:`ray_decompose`.
    progress : bool
        Show a progress bar.

    Returns
    -------
    rois : (N, size, size) float32
    meta : DataFrame
        Both in manifest row order, equal to ``extract_rois(manifest)``'s.
    """
    import pandas as pd

    from ..progress import progress as bar
    ray = import_ray()
    df = manifest.reset_index(drop=True)
    # cut between films only, so no film is read by two workers
    film = df["image_path"].astype(str).to_numpy()
    cuts, last = [0], 0
    for i in range(1, len(df) + 1):
        if i == len(df) or (i - last >= chunk_rows and film[i] != film[i - 1]):
            if i > last:
                cuts.append(i)
                last = i
    started = ensure_ray(address, **dict(init_kwargs or {}))
    try:
        fn = ray.remote(_extract_chunk).options(num_cpus=num_cpus_per_worker)
        kw = {"size": size, "mode": mode, "fov_mm": fov_mm}
        refs = [fn.remote(df.iloc[a:b], kw) for a, b in zip(cuts[:-1], cuts[1:])]
        parts = [ray.get(r) for r in bar(refs, total=len(refs), desc="ROIs (ray)",
                                         disable=None if progress else True)]
    finally:
        if started:
            ray.shutdown()
    rois = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, size, size), np.float32)
    meta = pd.concat([p[1] for p in parts], ignore_index=True) if parts else pd.DataFrame()
    return rois, meta


def ray_prepare_store(cfg, out: str | Path, *, engine: str = "data", num_gpus_per_worker: float = 0,
                      num_cpus_per_worker: float = 1, chunk_rows: int = 256, address: str | None = None,
                      init_kwargs: dict | None = None, progress: bool = True) -> Path:
    """Fill the store entry a config's run will read, with Ray.

    Builds the config's manifest as :func:`mammodecomp.data.prepare_inputs`
    does, cuts the ROIs and decomposes them on Ray workers, and returns the
    entry's path; ``cross_validate(cfg, out)`` (any fold runner) then finds
    its components in the store instead of computing them.

    Parameters
    ----------
    cfg : Config
        The study's config.
    out : str or Path
        The run directory the study will use (locates the default store).
    engine, num_gpus_per_worker, num_cpus_per_worker, address, init_kwargs, progress :
        As for :func:`ray_decompose`.
    chunk_rows : int
        As for :func:`ray_extract_rois`.

    Returns
    -------
    Path
        ``STORE/<key>.npy``.
    """
    from ..data import build_manifest_for, default_store
    from ..store import DecompStore

    store_dir = Path(cfg.decomposition.store) if cfg.decomposition.store else default_store(Path(out))
    df = build_manifest_for(cfg, store_dir.parent / "data")
    started = ensure_ray(address, **dict(init_kwargs or {}))
    try:
        rois, _ = ray_extract_rois(df, size=cfg.data.roi_size, mode=cfg.data.crop_mode, fov_mm=cfg.data.fov_mm,
                                   chunk_rows=chunk_rows, num_cpus_per_worker=num_cpus_per_worker,
                                   progress=progress)
        dec = cfg.decomposition
        store = DecompStore(store_dir)
        ray_decompose(rois, dec.method, dec.k, dict(dec.params), store=store, engine=engine,
                      num_gpus_per_worker=num_gpus_per_worker, num_cpus_per_worker=num_cpus_per_worker,
                      progress=progress)
    finally:
        if started:
            import_ray().shutdown()
    return store.path(store.key(np.asarray(rois, np.float32), dec.method, dec.k, dict(dec.params)))
