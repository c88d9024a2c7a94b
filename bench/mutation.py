"""A small mutation run (cosmic-ray) over the code whose promises the README leans on.

Targets, each with the tests that guard it (a targeted selection, so a mutant
costs one short pytest run):

* ``metrics``: ``src/mammodecomp/metrics.py`` <- tests/test_metrics.py and its doctests;
* ``cv``: ``src/mammodecomp/cv.py`` <- tests/test_cv.py and its doctests;
* ``export``: ``src/mammodecomp/export.py`` <- tests/test_export.py;
* ``resume``: the resume code of ``src/mammodecomp/train.py`` (``_save_state`` and
  the block of ``_fit_fold`` that reads ``state.pt``, found by their text, not by
  line numbers) <- tests/test_resume.py.

The operators are a meaningful subset of cosmic-ray's core set (:data:`OPERATORS`:
comparisons turned into their neighbours, + - * / swapped, numbers changed, a
``not`` added, booleans flipped, ``and``/``or`` swapped, loops run zero times,
``break``/``continue`` swapped); replacements that only raise a TypeError (``<`` for
``is``, ``+`` for ``<<``) are left out, they would inflate the kill rate. Where a
target has more mutants than ``--max-per-target``, a seeded sample is run and the
count says so.

The work happens in a copy of ``src/`` and ``tests/`` (cosmic-ray edits the file on
disk), one cosmic-ray session per target under ``--work``. Prints the counts and
the survivors; writes the "Mutation testing" section of BENCHMARKS.md unless
``--no-write``.

Usage (from the repository root; needs ``pip install -e '.[mutation]'``)::

    .venv/bin/python bench/mutation.py                       # all four targets
    .venv/bin/python bench/mutation.py --targets export,resume --no-write
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, write_section

TARGETS = {
    "metrics": {"module": "src/mammodecomp/metrics.py",
                "tests": ["tests/test_metrics.py", "src/mammodecomp/metrics.py"]},
    "cv": {"module": "src/mammodecomp/cv.py", "tests": ["tests/test_cv.py", "src/mammodecomp/cv.py"]},
    "export": {"module": "src/mammodecomp/export.py", "tests": ["tests/test_export.py"]},
    "resume": {"module": "src/mammodecomp/train.py", "tests": ["tests/test_resume.py"],
               # (first line, line after the last) of each mutated region, found by their text
               "regions": [("def _save_state(", "def _save_weights("),
                           ("    if state_path.is_file():", "    l2 = getattr(")]},
}

OPERATORS = re.compile(r"^core/(" + "|".join([
    r"ReplaceComparisonOperator_(Eq_NotEq|NotEq_Eq|Lt_LtE|LtE_Lt|Gt_GtE|GtE_Gt|Lt_Gt|Gt_Lt|LtE_GtE|GtE_LtE"
    r"|Is_IsNot|IsNot_Is)",
    r"ReplaceBinaryOperator_(Add_Sub|Sub_Add|Mul_Div|Div_Mul)",
    r"ReplaceUnaryOperator_USub_UAdd",
    r"NumberReplacer", r"AddNot", r"ReplaceTrueWithFalse", r"ReplaceFalseWithTrue",
    r"ReplaceAndWithOr", r"ReplaceOrWithAnd", r"ZeroIterationForLoop",
    r"ReplaceBreakWithContinue", r"ReplaceContinueWithBreak"]) + r")$")


#: surviving mutants that no test should kill, and why: (target, original text, mutated text) -> reason.
#: Matched on the changed line's text (whitespace ignored), so line shifts do not matter.
EQUIVALENT = {
    ("metrics", "chunk = max(1, int(2_000_000 // max(y.size, 1)))",
     "chunk = max(1, int(2_000_000 // max(y.size, 0)))"):
        "equivalent: `y.size` is never 0 here (`_check_yp` refuses an empty input first)",
    ("export", "x = torch.rand(4, C, S, S, generator=torch.Generator().manual_seed(0))",
     "x = torch.rand( 3, C, S, S, generator=torch.Generator().manual_seed(0))"):
        "equivalent: the tracing input's batch size (the batch axis is dynamic; tests/test_export.py runs "
        "batches of 1, 7 and all ROIs)",
    ("export", "x = torch.rand(4, C, S, S, generator=torch.Generator().manual_seed(0))",
     "x = torch.rand(4, C, S, S, generator=torch.Generator().manual_seed( 1))"):
        "equivalent: another random tracing/parity input; the exported graph is the same",
    ("export", "x = torch.rand(4, C, S, S, generator=torch.Generator().manual_seed(0))",
     "x = torch.rand(4, C, S, S, generator=torch.Generator().manual_seed( -1))"):
        "equivalent: as seed 1 (torch takes -1 as 2**64 - 1)",
    ("export", 'dynamic_axes={"components": {0: "batch"}, "logit": {0: "batch"}}, opset_version=17)',
     'dynamic_axes={"components": {0: "batch"}, "logit": {0: "batch"}}, opset_version= 16)'):
        "not a promise: opset 16 exports the same graph and gives the same logits; the opset is not "
        "documented (a deployment that needs one would make it a tested option)",
    ("export", 'dynamic_axes={"components": {0: "batch"}, "logit": {0: "batch"}}, opset_version=17)',
     'dynamic_axes={"components": {0: "batch"}, "logit": {0: "batch"}}, opset_version= 18)'):
        "not a promise: as opset 16",
    ("export", "if max_err > atol:", "if max_err >= atol:"):
        "equivalent in practice: differs only when the error equals 1e-4 exactly",
    ("export", 'got = sess.run(None, {"components": x.numpy()})[0].reshape(-1)',
     'got = sess.run(None, {"components": x.numpy()})[ -1].reshape(-1)'):
        "equivalent: the graph has one output, so the first is the last",
}


def _explain(name: str, diff: str) -> str | None:
    minus = [" ".join(ln[1:].split()) for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    plus = [" ".join(ln[1:].split()) for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    for (t, a, b), why in EQUIVALENT.items():
        if t == name and minus and plus and minus[0] == " ".join(a.split()) and plus[0] == " ".join(b.split()):
            return why
    return None


def _regions(path: Path, regions) -> list[tuple[int, int]]:
    lines = path.read_text().splitlines()
    out = []
    for first, after in regions:
        a = next(i for i, ln in enumerate(lines, 1) if ln.startswith(first))
        b = next(i for i, ln in enumerate(lines, 1) if i > a and ln.startswith(after))
        out.append((a, b - 1))
    return out


def _config(work: Path, name: str, t: dict, timeout: float) -> Path:
    tests = " ".join(t["tests"])
    cmd = f"{sys.executable} -m pytest -x -q -p no:cacheprovider -o addopts= --doctest-modules {tests}"
    text = (f'[cosmic-ray]\nmodule-path = "{t["module"]}"\ntimeout = {timeout}\nexcluded-modules = []\n'
            f'test-command = "{cmd}"\n\n[cosmic-ray.distributor]\nname = "local"\n')
    p = work / f"{name}.toml"
    p.write_text(text)
    return p


def _select(session: Path, keep_lines, max_n: int, seed: int) -> dict:
    """Skip mutants of other operators or outside the regions; sample the rest down to max_n."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult
    skipped = WorkResult(worker_outcome=WorkerOutcome.SKIPPED)
    with use_db(str(session), WorkDB.Mode.open) as db:
        items = list(db.pending_work_items)
        keep, drop = [], []
        for it in items:
            m = it.mutations[0]
            ok = bool(OPERATORS.match(m.operator_name))
            if ok and keep_lines is not None:
                ok = any(a <= m.start_pos[0] <= b for a, b in keep_lines)
            (keep if ok else drop).append(it.job_id)
        eligible = len(keep)
        if len(keep) > max_n:
            rng = random.Random(seed)
            chosen = set(rng.sample(sorted(keep), max_n))
            drop += [j for j in keep if j not in chosen]
            keep = sorted(chosen)
        if drop:
            db.set_multiple_results(drop, skipped)
    return {"generated": len(items), "eligible": eligible, "run": len(keep)}


def _results(session: Path) -> list[dict]:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome
    out = []
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item, res in db.completed_work_items:
            if res.worker_outcome == WorkerOutcome.SKIPPED:
                continue
            m = item.mutations[0]
            out.append({"job": item.job_id, "operator": m.operator_name.removeprefix("core/"),
                        "occurrence": m.occurrence, "line": m.start_pos[0],
                        "outcome": getattr(res.test_outcome, "value", res.test_outcome),   # killed/survived/...
                        "worker": getattr(res.worker_outcome, "value", res.worker_outcome), "diff": res.diff or ""})
    return out


def _test_command(t: dict) -> list[str]:
    return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
            "--doctest-modules", *t["tests"]]


def _recheck(work: Path, t: dict, survivors: list[dict], env: dict, timeout: float) -> None:
    """Apply each survivor again (``cosmic-ray apply``) and run the target's tests as they are
    in the repository now; ``r["recheck"]`` is ``killed`` or ``survived``."""
    shutil.copytree(ROOT / "tests", work / "tests", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
    mod = work / t["module"]
    orig = mod.read_bytes()
    # results kept per (mutant, content of its tests): a rerun skips what it already knows
    import hashlib
    cache_path = work / "recheck.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    tests_hash = hashlib.sha256(b"".join((work / x).read_bytes() for x in t["tests"]) + orig).hexdigest()[:16]
    for r in survivors:
        key = f"{r['job']}:{tests_hash}"
        if key in cache:
            r["recheck"] = cache[key]
            continue
        try:
            subprocess.run([sys.executable, "-m", "cosmic_ray.cli", "apply", t["module"], "core/" + r["operator"],
                            str(r["occurrence"])], cwd=work, env=env, check=True, capture_output=True)
            try:
                rc = subprocess.run(_test_command(t), cwd=work, env=env, capture_output=True,
                                    timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = -1
            r["recheck"] = "survived" if rc == 0 else "killed"
        finally:
            mod.write_bytes(orig)
        cache[key] = r["recheck"]
        cache_path.write_text(json.dumps(cache, indent=1))
        print(f"recheck {t['module']}:{r['line']} {r['operator']}: {r['recheck']}", file=sys.stderr, flush=True)


def _changed_line(diff: str) -> str:
    minus = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    plus = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    return f"`{minus[0] if minus else ''}` -> `{plus[0] if plus else ''}`"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--max-per-target", type=int, default=20, help="seeded sample above this many mutants")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant's test run")
    ap.add_argument("--work", type=Path, default=Path("/tmp/mammodecomp-mutation"))
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--report-only", action="store_true",
                    help="summarise the sessions already in --work (after an interrupted or earlier run)")
    ap.add_argument("--recheck", action="store_true",
                    help="with --report-only: rerun each surviving mutant against the repository's current tests")
    a = ap.parse_args(argv)
    names = [n for n in a.targets.split(",") if n]
    t0 = time.time()
    previous = json.loads((a.work / "mutation.json").read_text()) if a.report_only and \
        (a.work / "mutation.json").is_file() else {}
    if a.report_only:
        names = [n for n in names if (a.work / f"{n}.sqlite").is_file()]
        t0 = min((a.work / f"{n}.toml").stat().st_mtime for n in names)
    else:
        if a.work.exists():
            shutil.rmtree(a.work)
        a.work.mkdir(parents=True)
        for d in ("src", "tests"):
            shutil.copytree(ROOT / d, a.work / d, ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
        shutil.copy(ROOT / "pyproject.toml", a.work / "pyproject.toml")
    env = dict(os.environ, PYTHONPATH=str(a.work / "src"), MAMMODECOMP_QUIET="1", HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="1")
    summary = {}
    for name in names:
        t = TARGETS[name]
        session = a.work / f"{name}.sqlite"
        keep = _regions(a.work / t["module"], t["regions"]) if "regions" in t else None
        ts = time.time()
        old: dict = {}
        if a.report_only:
            old = previous.get(name, {})
            counts = {k: old.get(k) for k in ("generated", "eligible", "run")}
        else:
            cfg = _config(a.work, name, t, a.timeout)
            subprocess.run([sys.executable, "-m", "cosmic_ray.cli", "init", str(cfg), str(session)], cwd=a.work,
                           env=env, check=True, capture_output=True)
            counts = _select(session, keep, a.max_per_target, a.seed)
            print(f"{name}: {counts}", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, "-m", "cosmic_ray.cli", "exec", str(cfg), str(session)], cwd=a.work,
                           env=env, check=True, capture_output=True)
        res = _results(session)
        if a.recheck:
            _recheck(a.work, t, [r for r in res if r["outcome"] == "survived"], env, a.timeout)
        killed = [r for r in res if r["outcome"] != "survived"]
        survived = [r for r in res if r["outcome"] == "survived"]
        summary[name] = {**counts, "module": t["module"], "tests": t["tests"], "lines": keep,
                         "killed": len(killed), "survived": survived,
                         # the mutant runs' time (a --recheck's own time is not counted)
                         "seconds": old.get("seconds", 0) if a.report_only else round(time.time() - ts)}
        print(f"{name}: {len(killed)} killed, {len(survived)} survived of {len(res)} "
              f"({summary[name]['seconds']} s)", file=sys.stderr, flush=True)
    if not a.report_only:
        (a.work / "mutation.json").write_text(json.dumps(summary, indent=1))
    tot_run = sum(len(s["survived"]) + s["killed"] for s in summary.values())
    tot_killed = sum(s["killed"] for s in summary.values())
    rows = ["| target | mutated | tests | mutants (eligible / run) | killed | survived | kill rate | time |",
            "|---|---|---|---:|---:|---:|---:|---:|"]
    for name, s in summary.items():
        n = s["killed"] + len(s["survived"])
        where = s["module"] + (f" lines {', '.join(f'{x}-{y}' for x, y in s['lines'])}" if s["lines"] else "")
        rows.append(f"| {name} | `{where}` | {', '.join(f'`{x}`' for x in s['tests'])} | {s['eligible']} / {n} "
                    f"| {s['killed']} | {len(s['survived'])} | {s['killed'] / max(n, 1):.0%} | {s['seconds']} s |")
    surv = ["| target | line | operator | change | with the tests now | why it may survive |",
            "|---|---:|---|---|---|---|"]
    for name, s in summary.items():
        for r in s["survived"]:
            surv.append(f"| {name} | {r['line']} | {r['operator']} | {_changed_line(r['diff'])} "
                        f"| {r.get('recheck', 'not rechecked')} | {_explain(name, r['diff']) or ''} |")
    rechecked = [r for s in summary.values() for r in s["survived"] if "recheck" in r]
    now_killed = tot_killed + sum(r["recheck"] == "killed" for r in rechecked)
    args_s = "".join(f" {x}" for x in (argv if argv is not None else sys.argv[1:]) if x != "--no-write")
    cmd = "python bench/mutation.py" + args_s
    if a.report_only:   # the sessions were made by the plain command; this run only summarised them
        plain = " ".join(x for x in args_s.split() if x not in ("--report-only", "--recheck"))
        cmd = f"python bench/mutation.py {plain}".strip() + f"`, then `.venv/bin/{cmd}"
    text = "\n".join([
        "## Mutation testing", "",
        f"Command: `.venv/bin/{cmd.strip()}` (cosmic-ray, operators and targets in the script's docstring); "
        f"machine: cpu2 ({platform.machine()}, 2 cores shared with other jobs); "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t0))}, "
        f"{sum(s['seconds'] for s in summary.values()):.0f} s of mutant runs in all. "
        f"Kill rate **{tot_killed}/{tot_run} = {tot_killed / max(tot_run, 1):.0%}**; targets above "
        f"{a.max_per_target} eligible mutants are a seeded sample (seed {a.seed})."
        + (f" Survivors rerun against the tests as they are now (`--recheck`): **{now_killed}/{tot_run} = "
           f"{now_killed / max(tot_run, 1):.0%}** killed." if rechecked else ""), "",
        *rows, "", "Surviving mutants: each is killed by a test added since (rechecked against the current tests) or "
        "explained (`EQUIVALENT` in bench/mutation.py):", "",
        *(surv if len(surv) > 2 else ["none"]), ""])
    print(text)
    if not a.no_write:
        write_section(text, "Mutation testing")


if __name__ == "__main__":
    main()
