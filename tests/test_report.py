"""report.html: self-contained, every figure embedded, findings listed; the CLI."""
from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import pytest

from mammodecomp.cli import main
from mammodecomp.diagnose import DIAGNOSIS_FILE, diagnose
from mammodecomp.report import REPORT_FILE, write_report
from diagnose_support import make_run

pytestmark = pytest.mark.xdist_group("report")

PNG = b"\x89PNG\r\n\x1a\n"


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


@pytest.fixture(scope="module")
def leaky_run(tmp_path_factory):
    """A seed-recipe run on a label-sorted manifest with a patient in two folds
    and a duplicated ROI, diagnosed (19 permutations) and reported."""
    root = tmp_path_factory.mktemp("report")
    info = make_run(root / "run", recipe="seed", label_ordered=True, share_patient=True, duplicate=True, seed=3)
    diagnose(root / "run", n_permutations=19, max_model_rois=30)
    out = write_report(root / "run")
    return out, info


def test_report_is_self_contained(leaky_run):
    out, _ = leaky_run
    assert out.name == REPORT_FILE and out.is_file()
    text = out.read_text()
    p = _Tags()
    p.feed(text)
    tags = p.tags
    assert not [t for t, _ in tags if t in ("link", "iframe", "object", "embed")]
    # the case browser's scripts are inline: no src, and exactly its data block and its code
    scripts = [a for t, a in tags if t == "script"]
    assert [a.get("type") for a in scripts] == ["application/json", None]
    assert not [a for a in scripts if "src" in a]
    for tag, attrs in tags:
        for key in ("src", "href"):
            v = attrs.get(key)
            assert v is None or not re.match(r"^\s*(https?:)?//", v), (tag, key, v[:60])
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*https?://", text, flags=re.I)
    assert "url(" not in text.lower()          # no CSS fetches either
    imgs = [a["src"] for t, a in tags if t == "img"]
    assert len(imgs) >= 8                     # roc, calibration, balance, curves, null, forest, ...
    for src in imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG


def test_report_shows_verdict_and_flags_the_fabricated_leaks(leaky_run):
    out, info = leaky_run
    text = out.read_text()
    assert text.index("Verdict") < text.index("Split hygiene")
    for sev in ("high", "medium"):
        assert f'class="badge sev-{sev}"' in text
    assert "Leakage between training and test folds" in text
    assert "Contiguous, unshuffled folds" in text
    a, b = sorted(info["duplicate_pair"])
    assert re.search(rf"<td>{re.escape(info['shared_patient'])}</td>", text)
    assert re.search(rf"<td>({a}|{b})</td><td>({a}|{b})</td>", text)
    assert "What to do:" in text and "What this means:" in text


def test_report_escapes_text(tmp_path):
    from mammodecomp.report import render_html
    d = {"path": str(tmp_path), "primary": "<b>x</b>", "is_study": False, "created": "now",
         "headline": {"auc": 0.5, "ci_low": 0.4, "ci_high": 0.6, "recipe": "seed", "n_rois": 3},
         "verdict": [{"id": "x", "rank": 1, "title": "<script>alert(1)</script>", "severity": "high",
                      "summary": "a & b", "fix": "f", "evidence": [], "figures": [], "measured_fix": None}],
         "findings": [], "errors": [], "timings": {}}
    html = render_html(d, {})
    assert "<script>" not in html and "&lt;script&gt;" in html and "a &amp; b" in html


def test_cli_diagnose_and_report(tmp_path, capsys):
    make_run(tmp_path / "run", recipe="seed", seed=4)
    main(["diagnose", str(tmp_path / "run"), "--permutations", "0", "--model-rois", "12"])
    out = capsys.readouterr().out
    assert "out-of-fold AUC" in out and (tmp_path / "run" / DIAGNOSIS_FILE).is_file()
    main(["report", str(tmp_path / "run")])
    assert "report written" in capsys.readouterr().out
    # what the user reads: the report shows the diagnosis's headline and every cause it ranked
    import html
    import json
    d = json.loads((tmp_path / "run" / DIAGNOSIS_FILE).read_text())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert d["headline"]["auc"] == pytest.approx(summary["auc"], abs=1e-12)
    assert "capacity" in {c["id"] for c in d["verdict"]}      # the seed network on 60 ROIs
    text = (tmp_path / "run" / REPORT_FILE).read_text()
    assert f"<b>{d['headline']['auc']:.3f}</b>" in text
    for c in d["verdict"]:
        assert f"<b>{html.escape(c['title'])}</b>" in text, c["id"]


def test_cli_bad_input_is_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["diagnose", str(tmp_path / "nope")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    (tmp_path / "run").mkdir()
    with pytest.raises(SystemExit) as e:
        main(["diagnose", str(tmp_path / "run"), "--permutations", "-1"])
    assert e.value.code == 2


def test_case_browser_holds_every_oof_roi_with_its_outcome(leaky_run):
    """The browser's JSON: one case per OOF ROI, mean probability, the outcome at the fold threshold,
    subgroup columns from the manifest, one JPEG strip of 1 + K tiles each, CAM strips where the
    diagnosis kept maps."""
    import io
    import json

    import numpy as np
    import pandas as pd
    from PIL import Image

    out, info = leaky_run
    text = out.read_text()
    m = re.search(r'<script type="application/json" id="mdb-data">(.*?)</script>', text, flags=re.S)
    data = json.loads(m.group(1))
    F = {f: i for i, f in enumerate(data["fields"])}
    oof = pd.read_csv(out.parent / "oof.csv", dtype={"roi_id": str})
    cases = {c[F["roi"]]: c for c in data["cases"]}
    assert set(cases) == set(oof["roi_id"])
    for r in oof.itertuples():
        c = cases[r.roi_id]
        assert c[F["label"]] == r.label and c[F["fold"]] == r.fold
        assert abs(c[F["prob"]] - r.prob) < 1e-4
        want = ("TP" if r.label else "FP") if r.prob >= r.threshold else ("FN" if r.label else "TN")
        assert c[F["outcome"]] == want
    assert data["subgroups"] == ["view", "source"]
    assert {c[F["sub"]][0] for c in data["cases"]} == {"CC", "MLO"}
    k = len(data["channels"])
    for uri in data["strips"][:3]:
        assert uri.startswith("data:image/jpeg;base64,")
        im = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        assert im.size == ((k + 1) * data["tile"], data["tile"]) and im.mode == "L"
    z = np.load(out.parent / "diagnosis_cams.npz")
    ids = pd.read_parquet(out.parent / "manifest.parquet")["roi_id"].to_numpy()
    with_cam = {c[F["roi"]] for c in data["cases"] if c[F["cam"]] >= 0}
    assert with_cam == {ids[r] for r in z["rows"]} and len(data["cams"]) == len(with_cam)
