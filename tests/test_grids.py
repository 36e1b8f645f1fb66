"""Duplicate values in list flags are a one-line error before anything trains (iwshift.cli, every script)."""

import pytest

from helpers import load_script
from iwshift import cli
from iwshift.checks import ConfigError
from iwshift.config import BinaryConfig, SyntheticConfig


def test_override_from_argv_refuses_a_repeated_value_in_any_list_flag(capsys):
    constants = {"WEIGHTS": [1.0, 8.0], "SEEDS": [0, 1], "REGIMES": ["none"], "COUNTS": [5, 5]}
    for args, flag in ((["--weights", "0.125", "1/8"], "--weights"), (["--seeds", "0", "0"], "--seeds"),
                       (["--regimes", "none", "none"], "--regimes")):
        with pytest.raises(SystemExit) as info:
            cli.override_from_argv(constants, argv=args, repeats_allowed=["COUNTS"])
        assert info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert f"{flag}: repeated value" in err and len(err.splitlines()) == 1, err
    values = cli.override_from_argv(constants, argv=["--counts", "5", "50", "5"], repeats_allowed=["COUNTS"])
    assert values["COUNTS"] == [5, 50, 5]  # positions that mean something may repeat


def test_configs_refuse_repeated_grid_values():
    with pytest.raises(ConfigError, match="--weights: repeated value 1/8"):
        BinaryConfig(weights=[0.125, 1 / 8])
    with pytest.raises(ConfigError, match="--ratios: repeated value 2"):
        BinaryConfig(ratios=[2.0, 2.0])
    with pytest.raises(ConfigError, match="--extreme-weights: repeated value"):
        SyntheticConfig(epochs=1, extreme_weights=[10.0, 10.0])


@pytest.mark.parametrize("script, args, flag", [
    ("CIFAR10_binary_classifier.py", ["--weights", "0.125", "1/8"], "--weights"),
    ("CIFAR10_binary_classifier.py", ["--weights", "1", "1"], "--weights"),
    ("CIFAR10_binary_classifier.py", ["--ratios", "2", "2"], "--ratios"),
    ("CIFAR10_binary_classifier.py", ["--seeds", "1", "1"], "--seeds"),
    ("CIFAR10_extension.py", ["--covariate-weights", "true", "true"], "--covariate-weights"),
    ("synthetic_study.py", ["--extreme-weights", "10", "1e1"], "--extreme-weights"),
    ("synthetic_study.py", ["--remedies", "plain", "plain"], "--remedies"),
])
def test_scripts_stop_on_a_repeated_value_before_training(script, args, flag, tmp_path, capsys):
    module = load_script(script)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        raise SystemExit(module.main([*args, "--out", str(out), "--figures", str(tmp_path / "fig")]))
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert f"{flag}: repeated value" in err and len(err.splitlines()) == 1, err
    assert not out.exists()  # nothing trained, nothing written


def test_the_extension_accepts_equal_source_counts(tmp_path, capsys):
    module = load_script("CIFAR10_extension.py")
    with pytest.raises(SystemExit) as info:  # stops later, at the epochs, not at the repeated counts
        raise SystemExit(module.main(["--source-counts", "5", "50", "5", "50", "--epochs", "0", "--device", "cpu",
                                      "--out", str(tmp_path / "o"), "--figures", str(tmp_path / "f")]))
    assert info.value.code == 2
    assert "--epochs" in capsys.readouterr().err
