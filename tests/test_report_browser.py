"""The report's case browser in a real browser: headless Chromium (Debian's) driven by selenium.

A tiny demo is made through the CLI from a temporary working directory; the page is opened,
filters are applied and the visible rows are compared with counts computed from the run's
oof.csv; a case is opened and its images must be decoded (naturalWidth > 0); a screenshot
is saved. Skips, saying why, when selenium, chromium or chromedriver is missing
(.ci/run installs chromium and chromium-driver; selenium is in the test extra).
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from mammodecomp.cli import main

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [pytest.mark.xdist_group("report_browser"),
              pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromedriver not found on PATH "
                                 "(apt-get install chromium chromium-driver; .ci/run does)")]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,2000"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`mammodecomp demo` at its smallest, from a temporary cwd with a relative --out."""
    root = tmp_path_factory.mktemp("browser")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        main(["-q", "demo", "--out", "runs/demo", "--patients", "12", "--epochs-small", "1", "--epochs-seed", "1",
              "--permutations", "0", "--ablation"])
    return root / "runs" / "demo"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service
    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    for a in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        o.add_argument(a)
    d = webdriver.Chrome(service=Service(DRIVER), options=o)
    yield d
    d.quit()


def _expected(demo) -> pd.DataFrame:
    """Per ROI of the report's run, from oof.csv: mean probability and threshold, outcome, fold."""
    primary = json.loads((demo / "diagnosis.json").read_text())["primary"]
    oof = pd.read_csv(demo / primary / "oof.csv", dtype={"roi_id": str})
    g = oof.groupby("roi_id").agg(label=("label", "first"), prob=("prob", "mean"), thr=("threshold", "mean"),
                                   fold=("fold", "first"))
    pred = g["prob"] >= g["thr"]
    g["outcome"] = np.where(pred, np.where(g["label"] == 1, "TP", "FP"), np.where(g["label"] == 1, "FN", "TN"))
    return g


def _state(d):
    from selenium.webdriver.common.by import By
    n = int(d.find_element(By.ID, "mdb-count").get_attribute("data-n"))
    rows = [r.get_attribute("data-roi") for r in d.find_elements(By.CSS_SELECTOR, "#mdb-rows tr")]
    return n, rows


def _choose(d, select_id, value):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    Select(d.find_element(By.ID, select_id)).select_by_value(value)


def test_browser_filters_and_opens_a_case(demo, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    exp = _expected(demo)
    browser.get((demo / "report.html").as_uri())
    data = json.loads(browser.execute_script("return document.getElementById('mdb-data').textContent"))
    page, k = data["page"], len(data["channels"])
    n, rows = _state(browser)
    assert n == len(exp) and len(rows) == min(page, len(exp)) and set(rows) <= set(exp.index)

    def check(want: pd.Index):
        n, rows = _state(browser)
        assert n == len(want)
        assert len(rows) == min(page, len(want)) and set(rows) <= set(want)
        if len(want) <= page:
            assert set(rows) == set(want)

    for outcome in ("FP", "FN", "TP", "TN"):
        _choose(browser, "mdb-outcome", outcome)
        check(exp.index[exp["outcome"] == outcome])
    _choose(browser, "mdb-outcome", "err")
    errors = exp.index[exp["outcome"].isin(["FP", "FN"])]
    check(errors)
    _choose(browser, "mdb-label", "1")
    check(exp.index[exp["outcome"].isin(["FP", "FN"]) & (exp["label"] == 1)])
    _choose(browser, "mdb-label", "")
    _choose(browser, "mdb-outcome", "")
    fold = str(int(exp["fold"].iloc[0]))
    _choose(browser, "mdb-fold", fold)
    check(exp.index[exp["fold"].astype(int).astype(str) == fold])
    _choose(browser, "mdb-sub-view", "CC")       # the demo's two views: a subgroup filter
    check(exp.index[(exp["fold"].astype(int).astype(str) == fold) & exp.index.str.contains("CC")])
    _choose(browser, "mdb-fold", "")
    _choose(browser, "mdb-sub-view", "")
    # sorted by probability, high to low
    _choose(browser, "mdb-sort", "prob-desc")
    _, rows = _state(browser)
    shown = exp.loc[rows, "prob"].round(6).to_numpy()     # the page holds 6 decimals
    assert (np.diff(shown) <= 0).all()

    # open a case: the large ROI and components (and CAMs, where kept) are decoded images
    _choose(browser, "mdb-outcome", "err" if len(errors) else "")
    first = browser.find_elements(By.CSS_SELECTOR, "#mdb-rows tr")[0]
    roi = first.get_attribute("data-roi")
    first.click()
    detail = browser.find_element(By.ID, "mdb-detail")
    assert detail.is_displayed() and detail.get_attribute("data-roi") == roi
    assert f"ROI {roi}" in detail.text and f"outcome {exp.loc[roi, 'outcome']}" in detail.text
    imgs = detail.find_elements(By.TAG_NAME, "img")
    assert len(imgs) in (k + 1, 2 * (k + 1))
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "return Array.from(document.querySelectorAll('#mdb-detail img')).every(i => i.complete && i.naturalWidth > 0)"))
    shot = tmp_path / "report_browser.png"
    browser.find_element(By.ID, "mdb").screenshot(str(shot))
    from PIL import Image
    im = Image.open(shot)
    assert im.size[0] > 600 and im.size[1] > 300
    assert np.asarray(im.convert("L")).std() > 10      # not a blank page


def test_readme_runs_commands_on_the_demo(demo, capsys, monkeypatch):
    """The README's `runs` and `runs compare` lines, run as written in the demo's parent cwd."""
    import re
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```console\n(.*?)```", readme.split("## See the cases, compare the runs", 1)[1], re.S).group(1)
    lines = [ln[2:].split() for ln in block.splitlines() if ln.startswith("$ mammodecomp ")]
    assert [ln[1] for ln in lines] == ["runs", "runs"] and lines[1][2] == "compare"
    monkeypatch.chdir(demo.parent.parent)
    s = {n: json.loads((demo / n / "summary.json").read_text()) for n in ("seed", "small", "raw")}
    main(lines[0][1:])
    out = capsys.readouterr().out
    for n, recipe, variant in (("seed", "seed", "components"), ("small", "small", "components"),
                               ("raw", "small", "raw")):
        assert re.search(rf"^demo/{n}\s+{recipe}\s+synthetic 24 ROIs/12 patients\s+starlet K=5 {variant}\s+"
                         rf"{s[n]['auc']:.3f} \[", out, flags=re.M)
    main(lines[1][1:])
    out = capsys.readouterr().out
    assert re.search(r"^decomposition\.variant\s+components\s+raw\s*$", out, flags=re.M)
    assert re.search(rf"^auc\s+{s['small']['auc']:.3f}\s+{s['raw']['auc']:.3f} \(", out, flags=re.M)
    assert re.search(r"runs/demo/raw vs runs/demo/small on 24 shared ROIs: AUC", out)
    page = (demo.parent.parent / "compare.html").read_text()
    assert "<th>decomposition.variant</th><td>components</td><td>raw</td>" in page
