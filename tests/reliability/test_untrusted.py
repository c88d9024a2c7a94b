"""Checkpoints are tensors, never code: a pickle that would run code is refused."""
import os
import pickle

import pytest

from mammodecomp.errors import InputError
from mammodecomp.fit import safe_torch_load


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_malicious_pickle_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "state.pt"
    with open(ckpt, "wb") as f:
        pickle.dump({"model": _Exploit(marker)}, f)
    with pytest.raises(InputError, match="refusing to load checkpoint"):
        safe_torch_load(ckpt)
    assert not marker.exists()


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    import torch
    ckpt = tmp_path / "state.pt"
    torch.save({"w": torch.ones(100)}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:50])
    with pytest.raises(InputError, match="state.pt: refusing to load checkpoint"):
        safe_torch_load(ckpt)


def test_pickle_weights_file_is_refused_by_create_model(tmp_path):
    """A crafted pickle ``.pt`` given as ``weights=`` runs no code and is a one-line InputError."""
    from mammodecomp.models import create_model
    marker = tmp_path / "pwned"
    weights = tmp_path / "weights.pt"
    with open(weights, "wb") as f:
        pickle.dump({"state_dict": {"features.0.weight": _Exploit(marker)}}, f)
    for name in ("small", "seed-vgg"):
        with pytest.raises(InputError, match="cannot read weights") as e:
            create_model(name, in_chans=3, input_size=32, weights=weights)
        assert "weights.pt" in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()


def test_pickle_weights_refused_through_the_cli(tmp_path, capsys):
    """The same file named in a config (``model.weights``) stops ``cv`` with exit 2, no code run."""
    from relhelp import run_cli
    marker = tmp_path / "pwned"
    weights = tmp_path / "weights.pt"
    with open(weights, "wb") as f:
        pickle.dump(_Exploit(marker), f)
    code, _, err = run_cli(["-q", "cv", "--recipe", "small", "--set", "data.synth.n_patients=8", "--set", "cv.inner_fraction=0.34",
                            "--set", "data.synth.size=64", "--set", "data.roi_size=16",
                            "--set", "decomposition.method=identity", "--set", "decomposition.k=1",
                            "--set", f"decomposition.store={tmp_path / 'store'}",
                            "--set", f"model.weights={weights}", "--set", "cv.n_folds=2",
                            "--out", tmp_path / "run"], capsys)
    assert code == 2 and err.startswith("error: ") and "weights.pt" in err, err
    assert not marker.exists()


def _calls(tree, name):
    import ast
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            full = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            base = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None
            if full == name[1] and (name[0] is None or base == name[0]):
                yield node


def _kw(node, key):
    import ast
    for k in node.keywords:
        if k.arg == key:
            return ast.literal_eval(k.value) if isinstance(k.value, ast.Constant) else "non-literal"
    return None


TRUSTED = "# trusted-pickle:"


def unsafe_loads(source: str) -> list[str]:
    """``torch.load`` without ``weights_only=True``, any ``pickle.load(s)``, ``np.load(allow_pickle=True)``.

    A line that carries ``# trusted-pickle: <reason>`` (bytes this process made itself, never a
    file a user can hand in) is reviewed and not reported.
    """
    import ast
    tree = ast.parse(source)
    lines = source.splitlines()
    bad = []
    for node in _calls(tree, ("torch", "load")):
        if _kw(node, "weights_only") is not True:
            bad.append(f"line {node.lineno}: torch.load without weights_only=True")
    for name in (("pickle", "load"), ("pickle", "loads"), ("cPickle", "load"), ("dill", "load"),
                 ("joblib", "load")):
        bad += [f"line {n.lineno}: {name[0]}.{name[1]}" for n in _calls(tree, name)]
    for base in ("np", "numpy"):
        for node in _calls(tree, (base, "load")):
            if _kw(node, "allow_pickle") not in (None, False):
                bad.append(f"line {node.lineno}: np.load with allow_pickle")
    return [b for b in bad if TRUSTED not in lines[int(b.split()[1].rstrip(":")) - 1]]


def test_scanner_finds_unsafe_loads():
    """The scanner can fail: each unsafe form is reported, the safe forms are not."""
    src = ("import torch, pickle, numpy as np\n"
           "torch.load(p)\ntorch.load(p, weights_only=False)\npickle.load(f)\npickle.loads(b)\n"
           "np.load(p, allow_pickle=True)\n"
           "torch.load(p, weights_only=True)\nnp.load(p)\nnp.load(p, mmap_mode='r')\n"
           "pickle.loads(b)  # trusted-pickle: made by this process\n")
    assert [b.split(":")[0] for b in unsafe_loads(src)] == ["line 2", "line 3", "line 4", "line 5", "line 6"]


def test_no_unsafe_load_in_the_package():
    from pathlib import Path
    import mammodecomp
    src = Path(mammodecomp.__file__).parent
    bad = [f"{p.relative_to(src)} {b}" for p in sorted(src.rglob("*.py")) for b in unsafe_loads(p.read_text())]
    assert not bad, bad
    assert any("torch.load(" in p.read_text() for p in src.rglob("*.py"))  # the scan sees real code
