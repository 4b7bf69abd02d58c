"""RunSpec and TrainSpec check their fields with the config's validators: a bad value in a config
file is one line naming the field, a boolean must be a real bool and a number neither a bool nor a string."""

from dataclasses import fields

import pytest

from pdesim import config
from pdesim.app import cli
from pdesim.app.spec import RunSpec
from pdesim.config import ConfigError, PDEConfig
from pdesim.train import TrainSpec


def _one_line_exit_2(capsys, argv: list[str], message: str) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pdesim: error: ") and message in err, err


@pytest.mark.parametrize(
    ("table", "key", "value", "message"),
    [
        ("pde", "residual", '"yes"', "residual='yes' must be true or false"),
        ("pde", "dim", "16.0", "dim=16.0 must be an integer >= 1"),
        ("run", "baseline", '"no"', "baseline='no' must be true or false"),
        ("run", "t_end", '"8"', "t_end='8' must be a finite number > 0"),
        ("run", "layers", "true", "layers=True must be an integer >= 1"),
        ("run", "blowup", "inf", "blowup=inf must be a finite number > 0"),
        ("run", "solver", '"rk5"', "solver='rk5' is not one of"),
        ("run", "dt", "0", "dt=0 must be a finite number > 0"),
        ("run", "rtol", "-1e-3", "rtol=-0.001 must be a finite number > 0"),
    ],
)
def test_a_bad_run_config_value_is_one_line(tmp_path, capsys, table, key, value, message):
    path = tmp_path / "config.toml"
    path.write_text(f"[{table}]\n{key} = {value}\n")
    _one_line_exit_2(capsys, ["run", "--config", str(path), "--quiet", "--out", str(tmp_path / "x")], message)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("residual", '"yes"', "residual='yes' must be true or false"),
        ("adjoint", "1", "adjoint=1 must be true or false"),
        ("lr", '"1e-3"', "lr='1e-3' must be a finite number > 0"),
        ("steps", "true", "steps=True must be an integer >= 1"),
        ("norm", '"layer"', "norm='layer' is not one of"),
        ("pooling", '"max"', "pooling='max' is not one of"),
        ("diffusion", "-0.1", "diffusion=-0.1 must be a finite number >= 0"),
        ("diffusion_positions", '"after_embedding"', "diffusion_positions='after_embedding' must be a list"),
        ("diffusion_positions", '["inside"]', "diffusion position='inside' is not one of"),
        ("diffusion_scales", "[1, 0]", "diffusion scale=0 must be an integer >= 1"),
        ("clip", "0", "clip=0 must be a finite number > 0"),
        ("solver", '"scipy-BDF"', "solver='scipy-BDF' cannot run inside training"),
    ],
)
def test_a_bad_train_config_value_is_one_line(tmp_path, capsys, key, value, message):
    path = tmp_path / "config.toml"
    path.write_text(f"[train]\n{key} = {value}\n")
    _one_line_exit_2(capsys, ["train", "--config", str(path), "--quiet", "--out", str(tmp_path / "x")], message)


@pytest.mark.parametrize("spec", [PDEConfig, RunSpec, TrainSpec])
def test_every_spec_accepts_its_defaults_and_keeps_their_types(spec):
    made = spec()
    assert made == spec(**{f.name: getattr(made, f.name) for f in fields(made)})


def test_the_validators_are_one_set_in_the_config():
    assert config.check_int("n", 3, 1) == 3
    assert config.check_positive("x", 2) == 2.0 and isinstance(config.check_positive("x", 2), float)
    assert config.check_choice("c", "a", ("a", "b")) == "a"
    assert config.check_bool("b", False) is False
    for call, match in [
        (lambda: config.check_int("n", True, 0), "n=True must be an integer >= 0"),
        (lambda: config.check_number("x", "1", minimum=0.0), "x='1' must be a finite number >= 0"),
        (lambda: config.check_positive("x", float("nan")), "x=nan must be a finite number > 0"),
        (lambda: config.check_choice("c", ["a"], ("a", "b")), "c=\\['a'\\] is not one of 'a', 'b'"),
        (lambda: config.check_bool("b", "true"), "b='true' must be true or false"),
    ]:
        with pytest.raises(ConfigError, match=match):
            call()
