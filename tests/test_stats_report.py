"""The headline defined once (summary.json == diagnosis), and the report's statistics section."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
from scipy.special import expit
from diagnose_support import make_run

from mammodecomp import stats as S
from mammodecomp.metrics import pooled_oof_summary
from mammodecomp.report import stats_section


def _oof_two_repeats(P=60, seed=0):
    rng = np.random.default_rng(seed)
    lab = rng.permutation(np.arange(P) % 2)
    rows = []
    for r in range(2):
        for i in range(P):
            for v in ("CC", "MLO"):
                z = 1.2 * (2 * lab[i] - 1) + rng.normal(0, 1.2)
                rows.append({"roi_id": f"p{i}-{v}", "patient_id": f"p{i}", "label": int(lab[i]), "repeat": r,
                             "fold": i % 3, "logit": z, "prob": float(expit(z))})
    return pd.DataFrame(rows)


def test_diagnosis_headline_is_the_summary_headline(tmp_path):
    from mammodecomp.rundir import read_run as load_run_files
    from mammodecomp.diagnose.features import headline
    run = make_run(tmp_path / "run", signal=1.5)["path"]
    oof = _oof_two_repeats(15)
    man = pd.read_parquet(run / "manifest.parquet")
    ids = man["roi_id"].tolist()
    oof["roi_id"] = [ids[(int(p[1:]) * 2 + (v == "MLO")) % len(ids)] for p, v in
                     zip(oof["patient_id"], oof["roi_id"].str.split("-").str[1])]
    oof["patient_id"] = oof["roi_id"].map(dict(zip(man["roi_id"], man["patient_id"])))
    oof["label"] = oof["roi_id"].map(dict(zip(man["roi_id"], man["label"])))
    oof.to_csv(run / "oof.csv", index=False)
    s = pooled_oof_summary(oof, n_boot=200, seed=0, manifest=man)
    (run / "summary.json").write_text(json.dumps(s))
    h = headline(load_run_files(run))
    assert (h["auc"], [h["ci_low"], h["ci_high"]]) == (s["auc"], s["auc_ci"])
    assert h["auc_definition"] == s["auc_definition"] and h["ensemble_auc"] == s["ensemble_auc"]
    # a summary written before the definition: recomputed from oof.csv the same way
    old = {k: v for k, v in s.items() if k not in ("auc_definition",)}
    old["auc"] = 0.123
    (run / "summary.json").write_text(json.dumps(old))
    h2 = headline(load_run_files(run))
    ref = S.headline_auc(load_run_files(run).oof, n_boot=200, seed=0)
    assert h2["auc"] == ref["auc"] and [h2["ci_low"], h2["ci_high"]] == ref["auc_ci"]


def test_stats_section_renders_summary_numbers_only():
    oof = _oof_two_repeats()
    man = pd.DataFrame({"roi_id": oof["roi_id"].unique()})
    man["view"] = man["roi_id"].str.split("-").str[1]
    man["lesion_type"] = np.where(np.arange(len(man)) < 8, "calc<script>", "mass")
    s = pooled_oof_summary(oof, n_boot=100, seed=0, manifest=man)
    page = stats_section.render(SimpleNamespace(summary=s))
    assert page.startswith("<section>") and page.endswith("</section>")
    assert "<script>" not in page and "calc&lt;script&gt;" in page
    assert "too small (fewer than 10 ROIs of a class)" in page
    assert f"{s['operating_points']['sens_at_90_spec']['estimate']:.3f}" in page
    assert f"{s['calibration']['slope']['estimate']:.3f}" in page
    assert 'src="data:image/png;base64,' in page and "ensemble" in page
    assert "http" not in page
    old = stats_section.render(SimpleNamespace(summary={"auc": 0.7, "auc_ci": [0.6, 0.8]}))
    assert "older mammodecomp" in old and "<table>" not in old
