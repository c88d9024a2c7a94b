"""Training throughput of ``seed-vgg`` (the seed question's MyNet) on this machine.

Measures training images/s (forward + BCE-with-logits + Keras L2 penalty +
backward + Adam step) at 320x320x5, batch 32, for

* ``fp32``: float32, NCHW;
* ``fp32-cl``: float32, channels_last;
* ``bf16``: ``torch.autocast("cpu", dtype=torch.bfloat16)`` + channels_last;
* ``bf16-loss-l2``: as ``bf16`` but with the literal port's step: the Keras
  L2 as a loss term and torch's default (unfused) Adam. The other torch modes
  step the way the trainer does (``train._optimizer``: fused Adam, the L2 folded
  into the dense kernels' coupled weight decay, which is the same update);
* ``keras`` and ``keras-bf16`` (optional, ``--keras-python PATH``): the
  question's Keras code run by a TensorFlow interpreter from a separate venv
  (never a project dependency), ``model.train_on_batch`` on the same shapes;
  ``keras`` in float32, ``keras-bf16`` under Keras's own ``mixed_bfloat16``
  policy (bf16 compute, float32 variables, the sigmoid output in float32), i.e.
  Keras at its best precision on a CPU with AMX.

Comparisons are made like for like and printed under the table: torch float32
against Keras float32, torch bf16 against Keras ``mixed_bfloat16``, and the
bf16-vs-float32 gain of each framework on its own.

Each mode runs in its own subprocess (fresh memory; peak RSS is per mode),
with ``--warmup`` untimed steps then ``--steps`` timed ones. Prints a table and
replaces the "Training throughput" section of BENCHMARKS.md (``--no-write``
to skip).

Usage::

    .venv/bin/python bench/train.py                       # 1 warm-up + 3 timed steps per mode
    .venv/bin/python bench/train.py --steps 1 --no-write  # quicker look
    .venv/bin/python bench/train.py --keras-python /tmp/tfvenv/bin/python
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Training throughput"  # one section per model: "## Training throughput: <model>"

KERAS_WORKER = r'''
import json, os, sys, time, resource
args = json.loads(sys.argv[1])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(args["threads"])
tf.config.threading.set_inter_op_parallelism_threads(1)
from tensorflow.keras import Sequential
from tensorflow.keras.layers import Conv2D, BatchNormalization, MaxPooling2D, Flatten, Dense, Input
from tensorflow.keras.regularizers import l2

def MyNet(size, k):
    r = 0.01
    m = Sequential()
    m.add(Input(shape=(size, size, k)))
    for block in ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)):
        for c in block:
            m.add(Conv2D(c, (3, 3), activation="relu", padding="same"))
            m.add(BatchNormalization())
        m.add(MaxPooling2D((2, 2), strides=(2, 2)))
    m.add(Flatten())
    m.add(Dense(4096, activation="relu", kernel_regularizer=l2(r)))
    m.add(BatchNormalization())
    m.add(Dense(4096, activation="relu", kernel_regularizer=l2(r)))
    m.add(BatchNormalization())
    m.add(Dense(1, activation="sigmoid", dtype="float32"))   # float32 output under a mixed policy
    m.compile(optimizer="adam", loss="binary_crossentropy")
    return m

if args.get("policy"):
    tf.keras.mixed_precision.set_global_policy(args["policy"])
tf.random.set_seed(0)
model = MyNet(args["size"], args["in_chans"])
rng = np.random.default_rng(0)
x = rng.random((args["batch"], args["size"], args["size"], args["in_chans"]), dtype=np.float32)
y = (rng.random(args["batch"]) > 0.5).astype(np.float32)
for _ in range(args["warmup"]):
    model.train_on_batch(x, y)
times = []
for _ in range(args["steps"]):
    t0 = time.perf_counter()
    loss = model.train_on_batch(x, y)
    times.append(time.perf_counter() - t0)
loss = float(np.ravel(loss)[0])
print(json.dumps({"mode": args["mode"], "step_s": times, "loss": loss, "params": int(model.count_params()),
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "version": "tensorflow " + tf.__version__}))
'''


def torch_worker(mode: str, args: argparse.Namespace) -> dict:
    """One training-throughput measurement in this process."""
    import torch
    import torch.nn.functional as F

    from mammodecomp.models import count_parameters, create_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    extra = {"width": args.width} if args.model == "seed-vgg" else {}
    model = create_model(args.model, in_chans=args.in_chans, input_size=args.size, **extra)
    model.train()
    x = torch.rand(args.batch, args.in_chans, args.size, args.size)
    y = (torch.rand(args.batch) > 0.5).float()
    if mode in ("bf16", "bf16-loss-l2", "fp32-cl"):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    literal = mode == "bf16-loss-l2"
    if literal:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)  # Keras Adam defaults
    else:  # the trainer's optimiser: Adam (eps 1e-7, lr 1e-3), fused, Keras L2 as coupled weight decay
        from mammodecomp.config import resolve_config
        from mammodecomp.fit import _optimizer, keras_l2_folded
        cfg = resolve_config(recipe="seed")
        opt = _optimizer(cfg, model)
        literal = not keras_l2_folded(cfg, model)
    amp = mode.startswith("bf16")

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        if hasattr(model, "l2_penalty"):
            if literal:
                loss = loss + model.l2_penalty()
            else:  # logged value only; the optimiser adds the gradient
                with torch.no_grad():
                    pen = model.l2_penalty()
                loss = loss + pen
        loss.backward()
        opt.step()
        return float(loss.detach())

    for _ in range(args.warmup):
        step()
    times = []
    loss = float("nan")
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    return {"mode": mode, "step_s": times, "loss": loss, "params": count_parameters(model),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "version": "torch " + torch.__version__}


def run_mode(mode: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               HF_HUB_OFFLINE="1")
    if mode.startswith("keras"):
        payload = json.dumps({"mode": mode, "policy": "mixed_bfloat16" if mode == "keras-bf16" else None,
                              "size": args.size, "in_chans": args.in_chans, "batch": args.batch,
                              "steps": args.steps, "warmup": args.warmup, "threads": args.threads})
        cmd = [args.keras_python, "-c", KERAS_WORKER, payload]
    else:
        cmd = [sys.executable, __file__, "--worker", mode, *args.passthrough]
    load0 = os.getloadavg()[0]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    load1 = os.getloadavg()[0]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"mode": mode, "error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    out = json.loads(lines[-1])
    out["load"] = (load0, load1)
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} CPU cores, {mem:.0f} GiB RAM, {platform.system()} {platform.machine()}"


LABEL = {"fp32": "torch fp32 (NCHW)", "fp32-cl": "torch fp32 + channels_last",
         "bf16": "torch bf16 autocast + channels_last",
         "bf16-loss-l2": "torch bf16 + channels_last, literal step (L2 in the loss, unfused Adam)",
         "keras": "Keras (TensorFlow) fp32, the question's code",
         "keras-bf16": "Keras (TensorFlow) mixed_bfloat16 policy, the question's code"}


def table(results: list[dict], batch: int) -> str:
    rows = ["| mode | images/s | s/step (timed steps) | peak RSS GiB | parameters | last loss | software "
            "| load avg before/after |",
            "| --- | ---: | --- | ---: | ---: | ---: | --- | --- |"]
    for r in results:
        if "error" in r:
            rows.append(f"| {LABEL.get(r['mode'], r['mode'])} | failed | {r['error']} | | | | | |")
            continue
        ips = batch * len(r["step_s"]) / sum(r["step_s"])
        steps = ", ".join(f"{s:.1f}" for s in r["step_s"])
        rows.append(f"| {LABEL.get(r['mode'], r['mode'])} | {ips:.2f} | {steps} | {r['peak_rss_gb']:.1f} "
                    f"| {r['params']:,} | {r['loss']:.3f} | {r['version']} "
                    f"| {r['load'][0]:.1f} / {r['load'][1]:.1f} |")
    return "\n".join(rows)


def comparisons(results: list[dict], batch: int) -> str:
    """Like-for-like ratios: each precision against the same precision, and each framework's
    bf16-vs-float32 gain on its own."""
    ips = {r["mode"]: batch * len(r["step_s"]) / sum(r["step_s"]) for r in results if "error" not in r}
    fp32 = max((m for m in ("fp32", "fp32-cl") if m in ips), key=ips.get, default=None)
    lines = []

    def ratio(a, b, what):
        if a in ips and b in ips:
            lines.append(f"- {what}: {ips[a]:.2f} vs {ips[b]:.2f} images/s ({ips[a] / ips[b]:.2f}x)")
    if fp32:
        ratio(fp32, "keras", f"float32, torch ({LABEL[fp32]}) vs Keras")
        ratio("bf16", "keras-bf16", "bf16, torch (bf16 autocast + channels_last) vs Keras (mixed_bfloat16)")
        ratio("bf16", fp32, "torch bf16 vs torch float32 (the precision gain, not a framework gain)")
    ratio("keras-bf16", "keras", "Keras mixed_bfloat16 vs Keras float32")
    return ("Like for like:\n\n" + "\n".join(lines) + "\n") if lines else ""


def write_section(text: str, heading: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import write_section as _write
    _write(text, heading.removeprefix("## ").strip())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="seed-vgg")
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--in-chans", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--modes", default="fp32,fp32-cl,bf16,bf16-loss-l2")
    p.add_argument("--keras-python", default=None, help="python of a venv with TensorFlow (optional)")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.passthrough = [f"--model={args.model}", f"--size={args.size}", f"--in-chans={args.in_chans}",
                        f"--batch={args.batch}", f"--width={args.width}", f"--steps={args.steps}",
                        f"--warmup={args.warmup}", f"--threads={args.threads}"]
    if args.worker:
        print(json.dumps(torch_worker(args.worker, args)))
        return
    modes = [m for m in args.modes.split(",") if m]
    if args.keras_python:
        modes += [m for m in ("keras", "keras-bf16") if m not in modes]
    results = []
    for mode in modes:
        print(f"running {mode} ...", file=sys.stderr, flush=True)
        results.append(run_mode(mode, args))
    tab = table(results, args.batch)
    print(tab)
    cmd = "python bench/train.py " + " ".join(a for a in sys.argv[1:] if a != "--no-write")
    measured = any(r["mode"].startswith("keras") and "error" not in r for r in results)
    keras_note = ""
    if args.model == "seed-vgg":
        keras_note = ("\nThe Keras row is the question's code run by TensorFlow from a separate venv "
                      "(`/tmp/tfvenv`, never a project dependency), measured here in the same run. "
                      if measured else "\nKeras baseline: not measured here (no TensorFlow run in this "
                      "measurement). ")
        keras_note += ("The issue's reference figure of 0.39 images/s for the Keras model on a CPU is "
                       "quoted, *not measured by us*.\n")
    heading = f"{SECTION}: {args.model}"
    wtxt = f", width {args.width}" if args.model == "seed-vgg" else ""
    what = "the question's MyNet" if args.model == "seed-vgg" else "registry model"
    text = (f"{heading}\n\n`{args.model}` ({what}, {results[0].get('params', 0):,} parameters) "
            f"at {args.size}x{args.size}x{args.in_chans}, batch {args.batch}{wtxt}: "
            f"training images/s (forward, BCE (+ Keras L2 for seed-vgg), backward, Adam step; the torch modes "
            f"step like the trainer, fused Adam with the L2 as coupled weight decay, except the literal row), "
            f"{args.warmup} warm-up "
            f"+ {args.steps} timed steps per mode, {args.threads} threads, each mode in its own process. The machine is shared: the 1-minute load average before/after each mode "
            f"says how much other work ran alongside (2 cores; load > 2 means contention).\n\n"
            f"Command: `{cmd.strip()}`  \nMachine: {machine()}; measured {time.strftime('%Y-%m-%d')}.\n\n"
            f"{tab}\n{keras_note}\n{comparisons(results, args.batch)}\n")
    if not args.no_write:
        write_section(text, heading)


if __name__ == "__main__":
    main()
