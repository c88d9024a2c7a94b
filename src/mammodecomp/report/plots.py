"""The report's figures, each returned as a ``data:image/png;base64,...`` URI.

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot,
no global backend switch), so the report can be written from any thread or
process without a display.
"""
from __future__ import annotations

import base64
import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

#: one colour per fold (tab10)
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf"]
SEV_COLORS = {"high": "#c0392b", "medium": "#e67e22", "low": "#f1c40f", "info": "#7f8c8d", "ok": "#27ae60"}
DPI = 90


def _fig(w: float, h: float, ncols: int = 1, nrows: int = 1):
    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def to_data_uri(fig) -> str:
    """Render *fig* as PNG and return it as a base64 data URI."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def roc_figure(pooled, fold_frames, n_boot: int = 200, seed: int = 0) -> str:
    """ROC per fold (thin), pooled (thick) with a patient-bootstrap 95% band.

    Parameters
    ----------
    pooled : DataFrame ``label, prob, patient_id`` (one row per ROI).
    fold_frames : ``{label: DataFrame(label, prob)}`` per fold.
    """
    fig, ax = _fig(5.2, 4.6)
    ax = ax[0, 0]
    grid = np.linspace(0, 1, 101)
    many = len(fold_frames) > 8      # one legend entry per fold stops being readable
    for i, (name, g) in enumerate(fold_frames.items()):
        if g["label"].nunique() < 2:
            continue
        fpr, tpr, _ = roc_curve(g["label"], g["prob"])
        if many:
            ax.plot(fpr, tpr, color="#4a6fa5", lw=0.8, alpha=0.35,
                    label=f"each of {len(fold_frames)} folds" if i == 0 else None)
        else:
            ax.plot(fpr, tpr, color=COLORS[i % 10], lw=1, alpha=0.7, label=f"fold {name}")
    y, p = pooled["label"].to_numpy(), pooled["prob"].to_numpy()
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, p)
        pats, inv = np.unique(pooled["patient_id"].astype(str).to_numpy(), return_inverse=True)
        rng = np.random.default_rng(seed)
        curves = []
        members = [np.flatnonzero(inv == j) for j in range(len(pats))]
        for _ in range(n_boot):
            idx = np.concatenate([members[j] for j in rng.integers(0, len(pats), len(pats))])
            if len(np.unique(y[idx])) < 2:
                continue
            f, t, _ = roc_curve(y[idx], p[idx])
            curves.append(np.interp(grid, f, t))
        if curves:
            lo, hi = np.quantile(np.array(curves), [0.025, 0.975], axis=0)
            ax.fill_between(grid, lo, hi, color="k", alpha=0.15, label="95% bootstrap band")
        ens = sum(len(g) for g in fold_frames.values()) > len(pooled)   # several repeats, averaged per ROI
        ax.plot(fpr, tpr, color="k", lw=2.5, label="pooled OOF, repeats averaged (ensemble)" if ens else "pooled OOF")
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    single = [name for name, g in fold_frames.items() if g["label"].nunique() < 2]
    if single:
        ax.text(0.98, 0.35, f"no ROC (one class only): {', '.join(single)}", ha="right", fontsize=7,
                color="#c0392b", transform=ax.transAxes)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01),
           title="ROC: out-of-fold, per fold and pooled")
    ax.legend(fontsize=7, loc="lower right")
    return to_data_uri(fig)


def learning_curves_figure(histories: dict) -> str:
    """Train (dashed) and validation (solid) loss and AUC per fold."""
    fig, axes = _fig(9.5, 3.6, ncols=2)
    for i, ((r, f), h) in enumerate(sorted(histories.items())):
        c = COLORS[i % 10]
        ep = h["epoch"] if "epoch" in h.columns else np.arange(1, len(h) + 1)
        for j, m in enumerate(("loss", "auc")):
            ax = axes[0, j]
            if f"train_{m}" in h.columns:
                ax.plot(ep, h[f"train_{m}"], ls="--", color=c, lw=1)
            if f"val_{m}" in h.columns:
                ax.plot(ep, h[f"val_{m}"], ls="-", color=c, lw=1.5, label=f"r{r}f{f}")
    axes[0, 0].set(xlabel="epoch", ylabel="loss", title="loss (dashed: train, solid: validation)")
    axes[0, 1].set(xlabel="epoch", ylabel="AUC", title="AUC (dashed: train, solid: validation)")
    axes[0, 1].axhline(0.5, ls=":", color="grey")
    axes[0, 1].legend(fontsize=7)
    return to_data_uri(fig)


def fold_balance_figure(run_folds: list[dict], contiguous: list[dict], overall: float) -> str:
    """Malignant fraction per test fold: this run's folds vs contiguous folds."""
    fig, ax = _fig(6, 3.4)
    ax = ax[0, 0]
    n = max(len(run_folds), len(contiguous), 1)
    x = np.arange(n)
    for off, folds, label, color in ((-0.2, run_folds, "this run's folds", "#3498db"),
                                     (0.2, contiguous, "contiguous kfold_indices", "#e67e22")):
        if not folds:
            continue
        vals = [d["frac_test"] for d in folds]
        ax.bar(x[:len(folds)] + off, vals, 0.4, label=label, color=color)
        for xi, v in zip(x[:len(folds)] + off, vals):
            ax.text(xi, v + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    ax.axhline(overall, ls="--", color="k", lw=1, label=f"data set ({overall:.2f})")
    ax.set(xticks=x, xticklabels=[f"fold {i}" for i in x], ylim=(0, 1.05), ylabel="malignant fraction",
           title="Class balance of each test fold")
    ax.legend(fontsize=7)
    return to_data_uri(fig)


def permutation_figure(null: list, observed: float, p: float) -> str:
    """Histogram of the permutation null with the observed AUC."""
    fig, ax = _fig(5.4, 3.2)
    ax = ax[0, 0]
    ax.hist(null, bins=min(30, max(5, len(null) // 4)), color="#95a5a6", edgecolor="white",
            label="AUC with permuted labels")
    ax.axvline(observed, color="#c0392b", lw=2, label=f"observed {observed:.3f} (p = {p:.3f})")
    ax.axvline(0.5, color="k", ls=":", lw=1)
    ax.set(xlabel="OOF AUC of the feature baseline", ylabel="count", title="Label-permutation null")
    ax.legend(fontsize=7)
    return to_data_uri(fig)


def forest_figure(rows: list[dict]) -> str:
    """Paired AUC differences with 95% CIs (label, diff, ci, p)."""
    n = len(rows)
    fig, ax = _fig(7, 0.45 * n + 1.3)
    ax = ax[0, 0]
    yy = np.arange(n)[::-1]
    for yv, r in zip(yy, rows):
        c = "#27ae60" if r["ci"][0] > 0 else "#c0392b" if r["ci"][1] < 0 else "#34495e"
        ax.errorbar(r["diff"], yv, xerr=[[r["diff"] - r["ci"][0]], [r["ci"][1] - r["diff"]]], fmt="o",
                    color=c, capsize=3)
        ax.text(1.02, yv, f"p={r['p']:.3g}" + (f" ({r['test']})" if r.get("test") else ""), transform=ax.get_yaxis_transform(), va="center", fontsize=7)
    ax.axvline(0, color="k", lw=1)
    ax.set(yticks=yy, yticklabels=[r["label"] for r in rows], xlabel="AUC difference (A - B), 95% CI",
           title="Paired comparisons on the same ROIs (test named beside each p)")
    ax.tick_params(axis="y", labelsize=7)
    return to_data_uri(fig)


def bars_figure(values: dict, title: str, xlabel: str, ref: dict | None = None, xlim=None) -> str:
    """Horizontal bars of *values* with optional reference lines ``{label: x}``."""
    items = list(values.items())
    fig, ax = _fig(6, 0.35 * len(items) + 1.4)
    ax = ax[0, 0]
    yy = np.arange(len(items))[::-1]
    ax.barh(yy, [v if v is not None else 0 for _, v in items], color="#5d8aa8")
    for (label, x), c in zip((ref or {}).items(), ("#c0392b", "#2c3e50", "#8e44ad")):
        ax.axvline(x, color=c, ls="--", lw=1.2, label=label)
    ax.set(yticks=yy, yticklabels=[k for k, _ in items], xlabel=xlabel, title=title)
    if xlim:
        ax.set_xlim(*xlim)
    if ref:
        ax.legend(fontsize=7)
    return to_data_uri(fig)


def metric_figure(folds: list[dict]) -> str:
    """Whole-fold F1 vs batch-averaged f1_m per fold."""
    fig, ax = _fig(6, 3.2)
    ax = ax[0, 0]
    x = np.arange(len(folds))
    ax.bar(x - 0.2, [d["f1_whole"] for d in folds], 0.4, label="F1 on the whole fold", color="#3498db")
    ax.bar(x + 0.2, [d["f1_batch"] for d in folds], 0.4, label="batch-averaged f1_m", color="#e67e22")
    ax.set(xticks=x, xticklabels=[f"r{d['repeat']}f{d['fold']}" for d in folds], ylim=(0, 1.05), ylabel="F1",
           title="Same predictions, two F1s")
    ax.legend(fontsize=7)
    return to_data_uri(fig)


def calibration_figure(y, p, bins: int = 10) -> str:
    """Reliability curve (quantile bins) with the histogram of probabilities."""
    fig, axes = _fig(5.2, 4.4, nrows=2)
    y, p = np.asarray(y, float), np.asarray(p, float)
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    mp = [p[idx == b].mean() for b in range(len(edges) - 1) if (idx == b).any()]
    my = [y[idx == b].mean() for b in range(len(edges) - 1) if (idx == b).any()]
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.plot(mp, my, "o-", color="#2c3e50")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability", ylabel="observed malignant fraction",
           title="Calibration (pooled OOF)")
    axes[1, 0].hist(p, bins=20, range=(0, 1), color="#95a5a6")
    axes[1, 0].set(xlabel="predicted probability", ylabel="ROIs")
    return to_data_uri(fig)


def cam_strip_figure(rois, comps, cams, labels: list[str], channels: list[str]) -> str:
    """One row per example: ROI, its components, the ROI with its Grad-CAM."""
    n, k = len(rois), comps.shape[1]
    fig, axes = _fig(1.3 * (k + 2), 1.35 * n + 0.3, ncols=k + 2, nrows=n)
    for i in range(n):
        axes[i, 0].imshow(rois[i], cmap="gray")
        axes[i, 0].set_ylabel(labels[i], fontsize=7)
        for c in range(k):
            axes[i, c + 1].imshow(comps[i, c], cmap="gray")
        axes[i, k + 1].imshow(rois[i], cmap="gray")
        axes[i, k + 1].imshow(cams[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        for j in range(k + 2):
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
    for j, t in enumerate(["ROI", *channels, "Grad-CAM"]):
        axes[0, j].set_title(t, fontsize=8)
    return to_data_uri(fig)
