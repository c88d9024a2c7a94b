"""Checkpoints are tensors, never code: a pickle that would run code is refused."""
import os
import pickle

import pytest

from mammodecomp.errors import InputError
from mammodecomp.train import safe_torch_load


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
