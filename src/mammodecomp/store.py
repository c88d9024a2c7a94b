"""A cache of decomposed ROIs: one memory-mapped ``.npy`` per key.

The key is a hash of the input pixels (float32 bytes and shape), the method,
``k``, the method parameters, the storage dtype and :data:`CODE_VERSION`, so a
decomposition is reused across folds and runs and rebuilt when any of them
changes.

Layout of a store folder::

    STORE/<key>.npy          (N,K,H,W) components, float16 by default
    STORE/<key>.json         what made it (method, k, params, shape, version, info)
    STORE/<key>.lock         file lock held while an entry is written
    STORE/store.json         the store layout's format and the version that created it

A store whose ``store.json`` names another :data:`STORE_FORMAT` is refused
with :class:`~mammodecomp.errors.VersionMismatchError` (use a new folder).

Crash safety: an entry is written to a temporary file in the same folder,
flushed and fsynced, then renamed onto ``<key>.npy``; readers only ever open
``<key>.npy``, so a partial entry is never served. Writers take the entry's
file lock and look again before computing, so two processes asking for the
same entry compute it once and never interleave their writes.

Examples
--------
>>> import tempfile, numpy as np
>>> store = DecompStore(tempfile.mkdtemp())
>>> x = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
>>> a = store.get_or_compute(x, "starlet", 3, progress=False)
>>> a.shape, a.dtype, store.last_computed
((3, 3, 16, 16), dtype('float16'), True)
>>> b = store.get_or_compute(x, "starlet", 3, progress=False)
>>> store.last_computed, bool((a == b).all())
(False, True)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from .errors import InputError, VersionMismatchError
from .io import read_json, write_json

#: bump when any decomposition's output changes for the same inputs
CODE_VERSION = "decompose-4"  # 2: vmd runs the compiled CPU kernel; 3: its sums in a fixed order (rounding differs); 4: fabemd mean filter exactly D4-symmetric (rounding, and on plateaued films the windows, differ)
#: bump when the store's layout (file names, sidecars) changes
STORE_FORMAT = 1


def _canon(obj):
    if isinstance(obj, dict):
        return {str(k): _canon(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canon(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return {"__array__": obj.tolist()}
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj)
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    raise InputError(f"decomposition parameter value {obj!r} ({type(obj).__name__}) cannot be part of a "
                     "cache key; use numbers, strings, booleans or lists")


def _pixels(images) -> np.ndarray:
    try:
        import torch
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    arr = np.ascontiguousarray(np.asarray(images, dtype=np.float32))
    if arr.ndim != 3:
        raise InputError(f"images must be (N,H,W), got shape {arr.shape}")
    return arr


class DecompStore:
    """A folder of cached decompositions (see module docstring).

    Parameters
    ----------
    root : the store folder (created if missing).
    dtype : storage dtype, ``"float16"`` (default) or ``"float32"``.
    lock_timeout : seconds to wait for another writer before giving up.
    """

    def __init__(self, root: str | Path, dtype: str = "float16", lock_timeout: float = 3600.0):
        self.root = Path(root)
        if np.dtype(dtype) not in (np.dtype(np.float16), np.dtype(np.float32)):
            raise InputError(f"store dtype must be float16 or float32, got {dtype}")
        if self.root.exists() and not self.root.is_dir():
            raise InputError("store path exists and is not a folder", path=self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._check_format()
        self.dtype = np.dtype(dtype)
        self.lock_timeout = lock_timeout
        #: whether the last get_or_compute call computed (True) or reused (False)
        self.last_computed: bool | None = None

    def _check_format(self) -> None:
        """Refuse a store written with another layout; mark a new store with this one."""
        from . import __version__
        marker = self.root / "store.json"
        if marker.is_file():
            info = read_json(marker)
            fmt = info.get("format") if isinstance(info, dict) else None
            if fmt != STORE_FORMAT:
                version = info.get("version") if isinstance(info, dict) else "?"
                raise VersionMismatchError(f"store was written by mammodecomp {version} (store format {fmt}); "
                                           f"this is format {STORE_FORMAT}: use a new store folder", path=self.root)
            return
        try:
            write_json(marker, {"format": STORE_FORMAT, "version": __version__, "code_version": CODE_VERSION})
        except PermissionError:  # a read-only store can still serve its entries
            pass

    def key(self, images, method: str, k: int, params: dict | None = None) -> str:
        """A 24-hex-digit key for (pixels, method, k, params, dtype, code version)."""
        arr = _pixels(images)
        h = hashlib.blake2b(digest_size=12)
        head = {"version": CODE_VERSION, "method": str(method), "k": int(k), "params": _canon(params or {}),
                "dtype": self.dtype.name, "shape": list(arr.shape)}
        h.update(json.dumps(head, sort_keys=True).encode())
        h.update(arr.tobytes())
        return h.hexdigest()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npy"

    def get(self, key: str):
        """The entry as a read-only memmap, or None when there is no complete entry."""
        p = self.path(key)
        if not p.is_file():
            return None
        return np.load(p, mmap_mode="r")

    def get_or_compute(self, images, method: str, k: int, params: dict | None = None, *, batch_size: int = 32,
                       device=None, progress: bool = True) -> np.ndarray:
        """Return cached components (N,K,H,W) (read-only memmap), computing them if missing.

        ``params`` go to :func:`mammodecomp.decompose.decompose` (``append_raw``
        included). Images are decomposed ``batch_size`` at a time on
        ``device``.
        """
        from .decompose import decompose

        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        params = dict(params or {})

        def batches(arr):
            for s in range(0, len(arr), batch_size):
                comp, info = decompose(arr[s:s + batch_size], method, k, device=device, return_info=True,
                                       **params)
                yield s, comp, info

        return self.compute_entry(images, method, k, params, batches,
                                  n_batches=-(-len(_pixels(images)) // batch_size),
                                  desc=f"decompose {method}", progress=progress)

    def compute_entry(self, images, method: str, k: int, params: dict, batches, *, n_batches: int | None = None,
                      desc: str = "decompose", progress: bool = True, extra: dict | None = None) -> np.ndarray:
        """The one write path of the store, for any producer of components.

        ``batches(arr)`` is called only on a miss, under the entry's file lock,
        and yields ``(start_row, components, info)`` in any order (a local loop,
        or results coming back from Ray workers). The rows are written into a
        temporary memmap, fsynced, described in ``<key>.json`` (plus ``extra``)
        and renamed into place; every row must have been written. A
        producer that is a generator is closed on the way out, so its
        ``finally`` (e.g. shutting a cluster down) runs.
        """
        from filelock import FileLock

        from .progress import progress as bar

        arr = _pixels(images)
        key = self.key(arr, method, k, params)
        hit = self.get(key)
        if hit is not None:
            self.last_computed = False
            return hit
        with FileLock(str(self.root / f"{key}.lock"), timeout=self.lock_timeout):
            hit = self.get(key)  # another writer may have finished while we waited
            if hit is not None:
                self.last_computed = False
                return hit
            for stale in self.root.glob(f".{key}.npy.*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
            tmp = self.root / f".{key}.npy.{os.getpid()}.tmp"
            t0 = time.time()
            infos: dict[int, dict] = {}
            produced = batches(arr)
            try:
                out, rows = None, 0
                b = bar(total=n_batches, desc=desc, disable=None if progress else True)
                for s, comp, info in produced:
                    if out is None:
                        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype,
                                                        shape=(len(arr), *comp.shape[1:]))
                    out[s:s + len(comp)] = comp.astype(self.dtype)
                    infos[s] = info
                    rows += len(comp)
                    b.update(1)
                b.close()
                if out is None or rows != len(arr):
                    raise RuntimeError(f"decomposition produced {rows} of {len(arr)} rows")
                out.flush()
                shape = list(out.shape)
                del out
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                write_json(self.root / f"{key}.json", {
                    "key": key, "version": CODE_VERSION, "method": method, "k": int(k),
                    "params": _canon(params), "shape": shape, "dtype": self.dtype.name,
                    "seconds": round(time.time() - t0, 3), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "info": _summarise([infos[s] for s in sorted(infos)]), **(extra or {})})
                os.replace(tmp, self.path(key))
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                raise
            finally:
                close = getattr(produced, "close", None)
                if close is not None:
                    close()
        self.last_computed = True
        return np.load(self.path(key), mmap_mode="r")


def _summarise(infos: list[dict]) -> dict:
    """Concatenate per-image numeric info arrays (e.g. VMD iterations) over batches."""
    out = {}
    for name in infos[0] if infos else []:
        vals = [i.get(name) for i in infos]
        if all(isinstance(v, np.ndarray) for v in vals):
            cat = np.concatenate(vals)
            if cat.ndim == 1 and cat.dtype != object:
                out[name] = {"mean": float(cat.mean()), "min": float(cat.min()), "max": float(cat.max())}
    return out
