"""The split plan: which ROI is train, val or test in each (repeat, fold).

A plan is a long table with one row per (repeat, fold, roi):

``repeat`` (int), ``fold`` (int), ``roi_id`` (str), ``role`` (``'train'``,
``'val'`` or ``'test'``) and ``used_for_selection`` (bool: the rows whose
labels steer early stopping, checkpoint choice and the decision threshold).

Two schemes:

``"grouped"`` (the default, the honest one)
    Outer folds from scikit-learn's ``StratifiedGroupKFold`` (shuffled,
    ``random_state = seed + repeat``) with ``patient_id`` as the group and
    ``label`` as the stratum, so no patient is ever on both sides. The outer
    training part is split once more, again grouped and stratified
    (``StratifiedGroupKFold(n_splits=round(1 / inner_fraction))``, first
    split), into ``train`` and an inner ``val`` used for model selection.
    The ``test`` fold is touched once, for the final prediction.

``"contiguous"`` (the seed question's ``kfold_indices``, flaws included)
    ``fold_size = len(df) // k``; fold ``i`` tests rows
    ``[i * fold_size, (i + 1) * fold_size)`` in manifest order; no shuffle,
    no stratification, no groups (a patient's CC and MLO views can sit on
    both sides). The last ``len(df) % k`` rows are never tested: they stay
    in training in every fold, as in the seed code. The seed passes its test
    fold as Keras ``validation_data`` and reads its curves to choose epochs,
    so here there is no ``'val'`` role: the ``'test'`` rows carry
    ``used_for_selection=True``, reproducing the seed's selection on the
    test fold faithfully. Use it only to reproduce and diagnose.

:func:`fold_sets` turns a plan into the three id arrays a trainer needs.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from .errors import InputError

ROLES = ("train", "val", "test")
PLAN_COLUMNS = ["repeat", "fold", "roi_id", "role", "used_for_selection"]
SCHEMES = ("grouped", "contiguous")


def kfold_indices_seed(n: int, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The seed question's ``kfold_indices``, on a length instead of an array.

    Parameters
    ----------
    n : number of rows.
    k : number of folds.

    Returns
    -------
    list of ``(train_indices, test_indices)`` pairs, one per fold.

    Notes
    -----
    ``fold_size = n // k``; the last ``n % k`` indices are in every training
    set and in no test set.

    Examples
    --------
    >>> [t.tolist() for _, t in kfold_indices_seed(7, 3)]
    [[0, 1], [2, 3], [4, 5]]
    >>> kfold_indices_seed(7, 3)[0][0].tolist()
    [2, 3, 4, 5, 6]
    """
    fold_size = n // k
    indices = np.arange(n)
    folds = []
    for i in range(k):
        val_indices = indices[i * fold_size: (i + 1) * fold_size]
        train_indices = np.concatenate([indices[:i * fold_size], indices[(i + 1) * fold_size:]])
        folds.append((train_indices, val_indices))
    return folds


def _check_int(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise InputError(f"{name}={value!r}; expected an integer >= {lo}")
    return int(value)


def _check_df(df: pd.DataFrame, need: list[str]) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"expected a manifest DataFrame, got {type(df).__name__}")
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InputError(f"manifest lacks column(s) {missing}; a split plan needs {need}")
    if len(df) == 0:
        raise InputError("manifest has no rows; nothing to split")
    for c in need:
        if df[c].isna().any():
            i = int(np.flatnonzero(df[c].isna().to_numpy())[0]) + 1
            raise InputError("value is missing", row=i, field=c)
    if df["roi_id"].astype(str).duplicated().any():
        rid = df["roi_id"].astype(str)[df["roi_id"].astype(str).duplicated()].iloc[0]
        raise InputError(f"duplicate roi_id '{rid}'; roi_id must be unique", field="roi_id")
    if "label" in need:
        lab = pd.to_numeric(df["label"], errors="coerce")
        if lab.isna().any() or not lab.isin([0, 1]).all():
            raise InputError("labels must be 0 or 1", field="label")
    return df


def _class_patients(df: pd.DataFrame) -> dict[int, int]:
    lab = df["label"].astype(int).to_numpy()
    pid = df["patient_id"].astype(str).to_numpy()
    return {c: int(pd.unique(pid[lab == c]).size) for c in (0, 1)}


def make_split_plan(df: pd.DataFrame, n_folds: int = 5, n_repeats: int = 1, seed: int = 0,
                    scheme: str = "grouped", inner_fraction: float = 0.2) -> pd.DataFrame:
    """Build the split plan for a manifest.

    Parameters
    ----------
    df : manifest with ``roi_id``, ``patient_id`` and ``label`` (only
        ``roi_id`` for ``scheme="contiguous"``); row order matters for the
        contiguous scheme only.
    n_folds : outer folds (k).
    n_repeats : repetitions with different shuffles (grouped only; the
        contiguous scheme is deterministic and allows 1).
    seed : base seed; repeat ``r`` uses ``random_state = seed + r``.
    scheme : ``"grouped"`` or ``"contiguous"`` (see the module docstring).
    inner_fraction : share of the outer training patients held out as the
        inner validation set, in (0, 0.5]; ``round(1 / inner_fraction)``
        inner splits are made and the first is used.

    Returns
    -------
    DataFrame with columns ``repeat, fold, roi_id, role,
    used_for_selection``, one row per (repeat, fold, roi), sorted by repeat,
    fold and manifest order.

    Raises
    ------
    InputError
        fewer patients than folds, a class with fewer patients than folds, an
        outer training part with fewer patients than inner splits, or a fold
        that comes out empty.

    Warns
    -----
    UserWarning
        a class with fewer than ``2 * n_folds`` patients (legal, but fold
        metrics will be noisy), or an inner validation set with one class.

    Notes
    -----
    Invariants of a grouped plan (checked by :func:`check_plan`): in every
    (repeat, fold) each ROI has exactly one role; within a repeat every ROI is
    ``test`` exactly once; no patient appears in two roles of one
    (repeat, fold). The same arguments give the same plan.

    Examples
    --------
    >>> df = pd.DataFrame({"roi_id": [f"r{i}" for i in range(40)],
    ...                    "patient_id": [f"p{i // 2}" for i in range(40)],
    ...                    "label": [(i // 2) % 2 for i in range(40)]})
    >>> plan = make_split_plan(df, n_folds=4, seed=1)
    >>> plan.groupby("role").size().to_dict()
    {'test': 40, 'train': 96, 'val': 24}
    >>> check_plan(plan, df)
    >>> seed_plan = make_split_plan(df, n_folds=3, scheme="contiguous")
    >>> int((seed_plan.role == "test").sum())  # 40 // 3 = 13 per fold, row 39 never tested
    39
    """
    if scheme not in SCHEMES:
        raise InputError(f"scheme={scheme!r}; expected one of {list(SCHEMES)}")
    n_folds = _check_int("n_folds", n_folds, 2)
    n_repeats = _check_int("n_repeats", n_repeats, 1)
    seed = _check_int("seed", seed, 0)
    if scheme == "contiguous":
        return _contiguous(df, n_folds, n_repeats)
    try:
        inner_fraction = float(inner_fraction)
    except (TypeError, ValueError):
        raise InputError(f"inner_fraction={inner_fraction!r}; expected a number in (0, 0.5]") from None
    if not 0.0 < inner_fraction <= 0.5:
        raise InputError(f"inner_fraction={inner_fraction!r}; expected a number in (0, 0.5]")
    df = _check_df(df, ["roi_id", "patient_id", "label"])
    roi = df["roi_id"].astype(str).to_numpy()
    pid = df["patient_id"].astype(str).to_numpy()
    y = df["label"].astype(int).to_numpy()
    n_pat = int(pd.unique(pid).size)
    if n_pat < n_folds:
        raise InputError(f"{n_pat} patients for n_folds={n_folds}; every test fold needs a patient: "
                         f"use n_folds <= {n_pat}")
    per_class = _class_patients(df)
    for c, n in per_class.items():
        if n == 0:
            raise InputError(f"no ROI has label {c}; a classifier needs both classes 0 and 1", field="label")
        if n < n_folds:
            raise InputError(f"class {c} has {n} patients, fewer than n_folds={n_folds}; "
                             f"some test fold would lack it: use n_folds <= {max(n, 1)} or more data")
    for c, n in per_class.items():
        if n < 2 * n_folds:
            warnings.warn(f"class {c} has only {n} patients for {n_folds} folds; "
                          "fold metrics will be noisy", UserWarning, stacklevel=2)
    n_inner = int(round(1.0 / inner_fraction))
    n = len(df)
    rows = []
    for r in range(n_repeats):
        outer = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed + r)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # sklearn's per-ROI class count warning
            splits = list(outer.split(np.zeros(n), y, pid))
        for f, (tr, te) in enumerate(splits):
            if te.size == 0:
                raise InputError(f"repeat {r} fold {f}: empty test fold; use fewer folds")
            tr_pat = int(pd.unique(pid[tr]).size)
            if tr_pat < n_inner:
                raise InputError(f"repeat {r} fold {f}: the outer training part has {tr_pat} patients, "
                                 f"fewer than the {n_inner} inner splits inner_fraction={inner_fraction:g} "
                                 "asks for; raise inner_fraction or use more data")
            inner_seed = int(np.random.SeedSequence([seed, r, f]).generate_state(1)[0])
            inner = StratifiedGroupKFold(n_splits=n_inner, shuffle=True, random_state=inner_seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                try:
                    itr, iva = next(inner.split(np.zeros(tr.size), y[tr], pid[tr]))
                except ValueError as e:  # sklearn: every class has fewer ROIs than splits
                    raise InputError(f"repeat {r} fold {f}: cannot make {n_inner} inner splits of the outer "
                                     f"training part ({e}); raise inner_fraction or use more data") from None
            if iva.size == 0 or itr.size == 0:
                raise InputError(f"repeat {r} fold {f}: empty inner split; raise inner_fraction "
                                 "or use more data")
            if np.unique(y[tr][iva]).size < 2:
                warnings.warn(f"repeat {r} fold {f}: the inner validation set has one class only; "
                              "validation AUC is undefined there", UserWarning, stacklevel=2)
            role = np.empty(n, dtype=object)
            role[tr[itr]] = "train"
            role[tr[iva]] = "val"
            role[te] = "test"
            rows.append(pd.DataFrame({"repeat": r, "fold": f, "roi_id": roi, "role": role,
                                      "used_for_selection": role == "val"}))
    plan = pd.concat(rows, ignore_index=True)
    return _dtypes(plan)


def _contiguous(df: pd.DataFrame, n_folds: int, n_repeats: int) -> pd.DataFrame:
    df = _check_df(df, ["roi_id"])
    if n_repeats != 1:
        raise InputError(f"n_repeats={n_repeats} with scheme='contiguous'; that scheme has no "
                         "randomness, so every repeat would be the same: use n_repeats=1")
    n = len(df)
    if n < n_folds:
        raise InputError(f"{n} rows for n_folds={n_folds}; the contiguous scheme needs at least one row per fold")
    roi = df["roi_id"].astype(str).to_numpy()
    rows = []
    for f, (_, te) in enumerate(kfold_indices_seed(n, n_folds)):
        role = np.full(n, "train", dtype=object)
        role[te] = "test"
        rows.append(pd.DataFrame({"repeat": 0, "fold": f, "roi_id": roi, "role": role,
                                  "used_for_selection": role == "test"}))
    return _dtypes(pd.concat(rows, ignore_index=True))


def _dtypes(plan: pd.DataFrame) -> pd.DataFrame:
    plan["repeat"] = plan["repeat"].astype(np.int64)
    plan["fold"] = plan["fold"].astype(np.int64)
    plan["roi_id"] = plan["roi_id"].astype(str)
    plan["role"] = plan["role"].astype(str)
    plan["used_for_selection"] = plan["used_for_selection"].astype(bool)
    return plan[PLAN_COLUMNS]


def fold_sets(plan: pd.DataFrame, repeat: int, fold: int) -> dict[str, np.ndarray]:
    """The roi_id arrays of one (repeat, fold): ``train``, ``val``, ``test``.

    ``val`` is the set used for model selection (``used_for_selection``);
    for a contiguous (seed) plan it is the test fold itself. Without that
    column (a plan read from an older ``splits.csv``), ``val`` is the rows
    with role ``'val'``.

    Examples
    --------
    >>> df = pd.DataFrame({"roi_id": list("abcdef")})
    >>> s = fold_sets(make_split_plan(df, n_folds=3, scheme="contiguous"), 0, 1)
    >>> s["test"].tolist(), s["val"].tolist(), s["train"].tolist()
    (['c', 'd'], ['c', 'd'], ['a', 'b', 'e', 'f'])
    """
    part = plan[(plan["repeat"] == repeat) & (plan["fold"] == fold)]
    if len(part) == 0:
        raise InputError(f"the plan has no repeat {repeat} fold {fold}")
    sel = part["used_for_selection"].astype(bool) if "used_for_selection" in part else part["role"] == "val"
    return {"train": part.loc[part["role"] == "train", "roi_id"].to_numpy(dtype=str),
            "val": part.loc[sel, "roi_id"].to_numpy(dtype=str),
            "test": part.loc[part["role"] == "test", "roi_id"].to_numpy(dtype=str)}


def check_plan(plan: pd.DataFrame, df: pd.DataFrame, scheme: str | None = None) -> None:
    """Check a plan against its manifest; raise :class:`InputError` on any breach.

    Parameters
    ----------
    plan : a table as made by :func:`make_split_plan` (or read from
        ``splits.csv``).
    df : the manifest (``roi_id``; ``patient_id`` for ``scheme="grouped"``).
    scheme : ``"grouped"`` checks everything below; ``"contiguous"`` checks
        only the structural items (the seed scheme shares patients and leaves
        rows untested by design). ``None`` (default) infers it from the plan:
        a plan that selects on its test rows (``used_for_selection`` true on a
        test row, or, without that column, no ``'val'`` row at all) is the
        seed's and gets the structural checks; any other plan gets the full
        ones. Pass the scheme explicitly to rule out a plan that selects on
        its test fold.

    Notes
    -----
    Structural (both schemes): the columns exist; roles are train/val/test;
    every (repeat, fold) holds each manifest ROI exactly once and no other;
    the test folds of one repeat are disjoint; every fold has train and test
    rows.

    Grouped only: every ROI is tested exactly once per repeat (coverage);
    every fold has val rows; no patient sits in two of train, val, test of one
    (repeat, fold); no test row is used for selection.

    Examples
    --------
    >>> df = pd.DataFrame({"roi_id": ["a", "b", "c", "d"], "patient_id": ["p", "p", "q", "r"]})
    >>> bad = pd.DataFrame({"repeat": 0, "fold": 0, "roi_id": ["a", "b", "c", "d"],
    ...                     "role": ["train", "test", "val", "test"]})
    >>> check_plan(bad, df)
    Traceback (most recent call last):
    ...
    mammodecomp.errors.InputError: repeat 0 fold 0: patient 'p' is in both train and test (1 patient(s) shared)
    """
    need = ["repeat", "fold", "roi_id", "role"]
    missing = [c for c in need if c not in plan.columns]
    if missing:
        raise InputError(f"plan lacks column(s) {missing}; expected {need}")
    if scheme is None:
        if "used_for_selection" in plan.columns:
            seed_like = bool((plan["used_for_selection"].astype(bool) & (plan["role"] == "test")).any())
        else:
            seed_like = not bool((plan["role"] == "val").any())
        scheme = "contiguous" if seed_like else "grouped"
    if scheme not in SCHEMES:
        raise InputError(f"scheme={scheme!r}; expected one of {list(SCHEMES)}")
    bad_role = ~plan["role"].isin(ROLES)
    if bad_role.any():
        raise InputError(f"role '{plan['role'][bad_role].iloc[0]}' is not one of {list(ROLES)}", field="role")
    ids = df["roi_id"].astype(str)
    universe = set(ids)
    grouped = scheme == "grouped"
    if grouped and "patient_id" not in df.columns:
        raise InputError("check_plan(scheme='grouped') needs the manifest's patient_id column")
    patient = dict(zip(ids, df["patient_id"].astype(str))) if "patient_id" in df.columns else {}
    plan = plan.assign(roi_id=plan["roi_id"].astype(str))
    for r, prep in plan.groupby("repeat", sort=True):
        tested: dict[str, int] = {}
        for f, part in prep.groupby("fold", sort=True):
            where = f"repeat {r} fold {f}"
            dup = part["roi_id"].duplicated()
            if dup.any():
                raise InputError(f"{where}: roi '{part['roi_id'][dup].iloc[0]}' has more than one row")
            got = set(part["roi_id"])
            if got != universe:
                extra, lack = sorted(got - universe), sorted(universe - got)
                what = f"roi '{extra[0]}' is not in the manifest" if extra else f"roi '{lack[0]}' has no row"
                raise InputError(f"{where}: {what} ({len(extra)} extra, {len(lack)} missing)")
            sets = {role: part.loc[part["role"] == role, "roi_id"].to_numpy() for role in ROLES}
            for role in ("train", "test"):
                if sets[role].size == 0:
                    raise InputError(f"{where}: no {role} rows")
            for rid in sets["test"]:
                if rid in tested:
                    raise InputError(f"{where}: roi '{rid}' is also tested in fold {tested[rid]}; "
                                     "test folds of a repeat must be disjoint")
                tested[rid] = f
            if grouped:
                pats = {role: {patient[i] for i in sets[role]} for role in ROLES}
                for a, b in (("train", "test"), ("val", "test"), ("train", "val")):
                    shared = sorted(pats[a] & pats[b])
                    if shared:
                        raise InputError(f"{where}: patient '{shared[0]}' is in both {a} and {b} "
                                         f"({len(shared)} patient(s) shared)")
                if "used_for_selection" in part.columns and \
                        (part["used_for_selection"].astype(bool) & (part["role"] == "test")).any():
                    raise InputError(f"{where}: test rows are used for model selection")
                if sets["val"].size == 0:
                    raise InputError(f"{where}: no val rows (model selection would fall on the test fold)")
        if grouped and len(tested) != len(universe):
            lack = sorted(universe - set(tested))
            raise InputError(f"repeat {r}: roi '{lack[0]}' is never tested ({len(lack)} untested); "
                             "test folds must cover the manifest")


def describe_plan(plan: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """Per (repeat, fold) sizes, class balance and patient sharing.

    Returns
    -------
    DataFrame with ``repeat, fold, n_train, n_val, n_test, pos_train,
    pos_val, pos_test`` (malignant share), ``patients_test`` and
    ``shared_patients`` (patients with ROIs both in test and in train or
    val: 0 for an honest plan; the seed's contiguous plan usually has some).

    Examples
    --------
    >>> df = pd.DataFrame({"roi_id": list("abcd"), "patient_id": ["p", "p", "q", "q"],
    ...                    "label": [0, 0, 1, 1]})
    >>> d = describe_plan(make_split_plan(df, n_folds=2, scheme="contiguous"), df)
    >>> d["shared_patients"].tolist()
    [0, 0]
    >>> df2 = df.assign(patient_id=["p", "q", "p", "q"])
    >>> describe_plan(make_split_plan(df2, n_folds=2, scheme="contiguous"), df2)["shared_patients"].tolist()
    [2, 2]
    """
    info = df.assign(roi_id=df["roi_id"].astype(str))[["roi_id", "patient_id", "label"]]
    m = plan.assign(roi_id=plan["roi_id"].astype(str)).merge(info, on="roi_id", how="left")
    out = []
    for (r, f), part in m.groupby(["repeat", "fold"], sort=True):
        rec = {"repeat": int(r), "fold": int(f)}
        for role in ROLES:
            sub = part[part["role"] == role]
            rec[f"n_{role}"] = int(len(sub))
            rec[f"pos_{role}"] = float(sub["label"].mean()) if len(sub) else float("nan")
        test_p = set(part.loc[part["role"] == "test", "patient_id"].astype(str))
        fit_p = set(part.loc[part["role"] != "test", "patient_id"].astype(str))
        rec["patients_test"] = len(test_p)
        rec["shared_patients"] = len(test_p & fit_p)
        out.append(rec)
    return pd.DataFrame(out)
