"""The one argument of every diagnosis check.

:class:`Context` holds what the checks share: the study (its primary run and
siblings), the headline AUC with its CI, the settings, and inputs computed
once on first use (texture features, the feature baseline's out-of-fold
probabilities). Checks read it; none writes into it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

from ..rundir import Run, Study
from .attribution import MAX_ATTR_ROIS

#: the inputs of the feature baseline, in the order they are fitted
BASELINE_INPUTS = ("components", "raw")


@dataclass
class Context:
    """Everything a check may read.

    Attributes
    ----------
    study : the diagnosed directory (``study.primary`` is the run).
    head : the pooled OOF AUC of the run with its CI (``features.headline``).
    n_permutations : label permutations for the null (0 skips it).
    seed : seed of the permutations and subsamples.
    max_model_rois : at most this many OOF ROIs for channel occlusion.
    load_model : ``(run_dir, repeat, fold) -> nn.Module`` or None for
        ``train.load_fold_model``.
    """

    study: Study
    head: dict
    n_permutations: int = 100
    seed: int = 0
    max_model_rois: int = MAX_ATTR_ROIS
    load_model: Callable | None = None

    @property
    def run(self) -> Run:
        """The diagnosed run."""
        return self.study.primary

    @cached_property
    def feats(self):
        """Texture features of the run's inputs (:class:`~.features.FeatureCache`)."""
        from .features import FeatureCache
        return FeatureCache(self.run)

    @cached_property
    def baseline_probs(self) -> dict:
        """input kind -> the feature baseline's OOF probabilities per manifest row,
        for the kinds of :data:`BASELINE_INPUTS` that have features."""
        from . import _baseline_api as api
        out = {}
        for kind in BASELINE_INPUTS:
            X = self.feats.get(kind)
            if X is not None:
                out[kind] = api.oof_probs(X, self.run)
        return out
