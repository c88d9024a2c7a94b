import torch

from mammodecomp.augment import Augment


def test_components_still_add_up_after_augmentation():
    x = torch.rand(6, 5, 24, 24, generator=torch.Generator().manual_seed(1))
    a1, a2 = Augment(seed=3), Augment(seed=3)
    y = a1(x).sum(1)
    z = a2(x.sum(1, keepdim=True))[:, 0]
    torch.testing.assert_close(y, z, atol=1e-5, rtol=1e-5)


def test_same_seed_same_draws_and_state_roundtrip():
    x = torch.rand(4, 2, 16, 16)
    a = Augment(seed=7)
    s = a.state()
    y1 = a(x)
    a.set_state(s)
    torch.testing.assert_close(a(x), y1)
    assert not torch.allclose(Augment(seed=8)(x), y1)


def test_dihedral_only_is_exact_permutation_of_pixels():
    x = torch.rand(8, 3, 10, 10)
    a = Augment(seed=0, max_rotate_deg=0, max_scale=0, max_shift=0, max_gain=0)
    y = a(x)
    # every sample's pixels are a permutation of the input's (no resampling)
    torch.testing.assert_close(y.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
