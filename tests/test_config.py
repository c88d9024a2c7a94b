import pytest

from mammodecomp.config import RECIPES, dump_config, load_config, resolve_config
from mammodecomp.errors import InputError


def test_recipes_resolve_and_roundtrip(tmp_path):
    for name in RECIPES:
        cfg = resolve_config(recipe=name)
        p = tmp_path / f"{name}.yaml"
        p.write_text(dump_config(cfg))
        assert load_config(p) == cfg


def test_seed_recipe_is_the_question_protocol():
    cfg = resolve_config(recipe="seed")
    assert cfg.model.name == "seed-vgg"
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.batch_size, cfg.train.epochs) == ("adam", 1e-3, 32, 50)
    assert cfg.cv.scheme == "contiguous" and cfg.train.early_stopping is None and cfg.train.keras_l2


def test_file_then_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("recipe: small\ntrain:\n  epochs: 4\ncv:\n  n_folds: 3\n")
    cfg = resolve_config(p, overrides=["train.epochs=7"])
    assert (cfg.train.epochs, cfg.cv.n_folds) == (7, 3)


@pytest.mark.parametrize("overrides, message", [
    (["train.epoch=3"], "config field 'train.epoch': unknown key (did you mean 'train.epochs'?); expected one of: epochs"),
    (["train.epochs=abc"], "config field 'train.epochs': Input should be a valid integer"),
    (["cv.n_folds=1"], "config field 'cv.n_folds': Input should be greater than or equal to 2"),
    (["train.epochs"], "override 'train.epochs' is not key=value"),
])
def test_bad_values_are_one_line_errors(overrides, message):
    with pytest.raises(InputError) as e:
        resolve_config(overrides=overrides)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


def test_unknown_recipe_and_bad_yaml(tmp_path):
    with pytest.raises(InputError, match="unknown recipe 'vgg'"):
        resolve_config(recipe="vgg")
    p = tmp_path / "bad.yaml"
    p.write_text("train: [1, 2\n")
    with pytest.raises(InputError, match="bad.yaml: not valid YAML"):
        resolve_config(p)


def test_public_api_names_are_callable_and_their_modules_reachable():
    """``from mammodecomp import diagnose`` calls; ``mammodecomp.diagnose.load_study`` is the module's."""
    import importlib

    import numpy as np

    import mammodecomp
    from mammodecomp import cross_validate, decompose, diagnose, load_manifest, predict
    for f in (decompose, diagnose, predict, cross_validate, load_manifest):
        assert callable(f), f
    for sub in ("decompose", "diagnose", "predict"):     # import order does not matter
        mod = importlib.import_module(f"mammodecomp.{sub}")
        assert getattr(mammodecomp, sub) is mod and callable(mod)
    assert mammodecomp.diagnose.load_study is importlib.import_module("mammodecomp.rundir").load_study
    from mammodecomp.decompose import METHODS
    assert "vmd" in METHODS
    x = np.random.default_rng(0).random((2, 16, 16)).astype(np.float32)
    c = decompose(x, method="starlet", k=3)
    np.testing.assert_allclose(c.sum(1), x, atol=1e-5)
    with __import__("pytest").raises(AttributeError, match="no attribute 'nope'"):
        mammodecomp.nope
