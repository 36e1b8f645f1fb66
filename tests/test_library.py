"""iwshift as a library beyond the paper's two data sets: any input width and class count through the one
trainer (and refusals where an engine cannot train what it is given), metrics and estimators that never
answer silently wrong, the example, installability and fast --help."""

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from iwshift import metrics, models
from iwshift.kernels import sgd2d
from helpers import load_script
from reference_sgd import reference_sgd
from iwshift import weights as W
from iwshift.train import StackedRuns, StackedSGD, Trainer

ROOT = Path(__file__).resolve().parent.parent


def tabular(n=60, d=64, n_classes=10, seed=0):
    """Random float32 features whose class depends on them (so training moves every weight)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (np.abs(x[:, :n_classes]).argmax(1) if n_classes > 2 else (x.sum(1) > 0)).astype(np.int64)
    return x, y


def stack_trainer(model_name, seeds, x, y, class_w, lr, p, batch, normalization, hidden, n_classes, engine):
    K, n = len(seeds), len(y)
    index = np.tile(np.arange(n), (K, 1))
    runs = StackedRuns(seeds, index, np.asarray(class_w, np.float32)[y][None].repeat(K, 0), [0.0] * K, [p] * K)
    model = models.Stacked2D(model_name, seeds, hidden=hidden, dropout=p, in_features=x.shape[1], n_classes=n_classes)
    return Trainer(model, runs, torch.from_numpy(x), torch.from_numpy(y), lr=lr, momentum=0.0, batch_size=batch,
                   normalization=normalization, batch_order="counter", engine=engine)


@pytest.mark.parametrize("model_name,p,n_classes,engine,normalization", [
    ("mlp", 0.3, 10, "auto", "mean"),         # auto picks torch: the fused engine trains binary models only
    ("lr", 0.0, 10, "auto", "weight_sum"),
    ("mlp", 0.3, 2, "auto", "weight_sum"),     # binary: the fused engine, at 64 inputs
    ("lr", 0.0, 2, "fused", "mean"),
])
def test_a_64_feature_stack_trains_as_plain_torch_sgd_step_for_step(model_name, p, n_classes, engine, normalization):
    x, y = tabular(n=30, d=64, n_classes=n_classes)
    class_w = np.linspace(0.5, 3.0, n_classes)
    seeds, lr, batch, hidden, epochs = [3, 11], 0.1, 8, 16, 2
    trainer = stack_trainer(model_name, seeds, x, y, class_w, lr, p, batch, normalization, hidden, n_classes, engine)
    assert trainer.engine == ("torch" if n_classes > 2 else "fused")
    expected = [reference_sgd(model_name, s, x, y, class_w, lr, p, epochs, batch, normalization, hidden=hidden,
                              n_classes=n_classes) for s in seeds]
    if trainer.engine == "torch":
        seen = []
        trainer.train_epochs(epochs, on_step=lambda: seen.append(
            {k: v.numpy().copy() for k, v in trainer.model.stacked_params().items()}))
        assert len(seen) == len(expected[0]) == epochs * 4
    else:  # the fused engine runs whole epochs: compare at each epoch's end
        seen = []
        for _ in range(epochs):
            trainer.train_epochs(1)
            seen.append({k: v.numpy().copy() for k, v in trainer.model.stacked_params().items()})
        expected = [history[3::4] for history in expected]
    for step, params in enumerate(seen):
        for k in range(len(seeds)):
            for name, value in expected[k][step].items():
                np.testing.assert_allclose(params[name][k], value, rtol=1e-4, atol=1e-5,
                                           err_msg=f"run {k}, step {step}, {name}")
    assert not np.allclose(seen[-1]["w2"], models.init_stacked(model_name, seeds, hidden, 64, n_classes)["w2"])


def test_the_fused_engine_refuses_inputs_it_cannot_train():
    x64, y = tabular(n=20, d=64, n_classes=2)
    K = 2
    index, weights = np.tile(np.arange(20), (K, 1)), np.ones((K, 20), np.float32)
    common = dict(lr=[0.1] * K, l2=[0.0] * K, dropout=[0.0] * K, seeds=[0, 1], epoch_start=0, epoch_end=1,
                  batch_size=8)
    two_feature = models.init_stacked("mlp", [0, 1], 8)  # a model of 2 inputs fed 64 features
    with pytest.raises(ValueError, match=r"needs inputs \(N, 2\).*shape \(20, 64\)"):
        sgd2d.train_stacked(two_feature, x64, y, index, weights, **common)
    ten_class = models.init_stacked("mlp", [0, 1], 8, in_features=64, n_classes=10)
    with pytest.raises(ValueError, match="binary models"):
        sgd2d.train_stacked(ten_class, x64, y, index, weights, **common)
    binary = models.init_stacked("lr", [0, 1], in_features=64)
    with pytest.raises(ValueError, match=r"training labels must be in 0..1 for a model of n_classes=2 \(got 0..2\)"):
        sgd2d.train_stacked(binary, x64, np.arange(20) % 3, index, weights, **common)
    with pytest.raises(ValueError, match="train_index"):
        sgd2d.train_stacked(binary, x64, y, index + 5, weights, **common)
    # the trainer: engine="fused" where it cannot apply is refused, with the reason
    x10, y10 = tabular(n=20, d=64, n_classes=10)
    with pytest.raises(ValueError, match="more than 2 classes"):
        stack_trainer("mlp", [0], x10, y10, np.ones(10), 0.1, 0.0, 8, "mean", 8, 10, "fused")
    runs = StackedRuns([0], np.arange(20)[None], np.ones((1, 20)), [0.0], [0.0])
    with pytest.raises(ValueError, match="in_features=2"):
        Trainer(models.Stacked2D("mlp", [0]), runs, torch.from_numpy(x64), torch.from_numpy(y))
    with pytest.raises(ValueError, match="labels must be in 0..1"):
        Trainer(models.Stacked2D("lr", [0], in_features=64), runs, torch.from_numpy(x10), torch.from_numpy(y10))


def test_models_take_in_features_and_n_classes_and_round_trip():
    x = torch.randn(5, 64)
    for name in models.MODELS_2D:
        for n_classes in (2, 10):
            module = models.make_2d_model(name, 8, seed=4, in_features=64, n_classes=n_classes)
            back = models.stacked_to_module(models.module_to_stacked(module))
            torch.testing.assert_close(back(x), module(x))
            stack = models.Stacked2D(name, [4], hidden=8, in_features=64, n_classes=n_classes).eval()
            out = stack(x[None])
            assert out.shape == (1, 5, n_classes)
            torch.testing.assert_close(out[0, :, 1] if n_classes == 2 else out[0], module(x))
    assert models.module_to_stacked(models.make_2d_model("lr"))["w2"].shape == (2,)  # defaults: today's


def test_images_need_an_explicit_normalisation():
    images = torch.randint(0, 256, (8, 1, 4, 4), dtype=torch.uint8)  # 1-channel images (e.g. digits)
    labels = torch.arange(8) % 2
    runs = StackedRuns([0], np.arange(8)[None], np.ones((1, 8)), [0.0], [0.0])
    model = models.StackedCNN(1, 0.0625)
    with pytest.raises(ValueError, match="pass image_normalization"):
        Trainer(model, runs, images, labels)
    with pytest.raises(ValueError, match="3 channels but the images have 1"):
        Trainer(model, runs, images, labels, image_normalization="cifar10")
    with pytest.raises(ValueError, match="applies to uint8 images"):
        Trainer(models.Stacked2D("lr", [0]), runs, torch.zeros(8, 2), labels, image_normalization="unit")
    # what the model sees: x / 255 standardised by the given per-channel statistics
    from iwshift.train import normalization_constants, normalize

    scale, shift = normalization_constants("cpu", ([0.5], [0.25]), channels=1)
    torch.testing.assert_close(normalize(images, scale, shift), (images.float() / 255 - 0.5) / 0.25)
    scale, shift = normalization_constants("cpu", "unit")
    torch.testing.assert_close(normalize(images, scale, shift), images.float() / 255)


def test_balanced_accuracy_counts_every_class_in_the_labels():
    labels = torch.arange(100) % 10
    predictions = torch.where(labels < 2, labels, (labels + 1) % 10)[None]  # right on classes 0 and 1 only
    assert metrics.balanced_accuracy(predictions, labels).item() == pytest.approx(0.2)
    assert metrics.balanced_accuracy(predictions, labels, n_classes=10).item() == pytest.approx(0.2)
    with pytest.raises(ValueError, match="labels must be in 0..1"):
        metrics.balanced_accuracy(predictions, labels, n_classes=2)


def test_kliep_warns_when_it_stops_before_converging():
    rng = np.random.default_rng(0)
    source, target = rng.standard_normal((100, 2)), rng.standard_normal((100, 2)) + 1.0
    with pytest.warns(UserWarning, match="KLIEP did not converge in max_iter=2"):
        kliep = W.KLIEPWeights(n_centers=20, max_iter=2).fit(source, target)
    assert not kliep.converged_
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert W.KLIEPWeights(n_centers=20).fit(source, target).converged_


def test_kliep_cross_validates_its_kernel_width():
    """Likelihood cross-validation picks the grid's best held-out likelihood: not the absurd widths."""
    rng = np.random.default_rng(1)
    source, target = rng.standard_normal((200, 1)), 0.5 * rng.standard_normal((200, 1)) + 0.5
    kliep = W.KLIEPWeights(n_centers=50, gamma="cv", tol=1e-6).fit(source, target)
    grid = sorted(kliep.cv_scores_)  # the median heuristic times 10^-2 .. 10^2
    assert len(grid) == 9 and grid[-1] / grid[0] == pytest.approx(1e4)
    assert kliep.gamma_ == max(kliep.cv_scores_, key=kliep.cv_scores_.get)
    assert kliep.gamma_ not in (grid[0], grid[-1])
    assert kliep.cv_scores_[kliep.gamma_] > kliep.cv_scores_[grid[0]] + 0.1
    # Gaussians: the true ratio is known; the cross-validated fit ranks points as it does
    fresh = np.linspace(-2, 2, 50)[:, None]
    true = np.exp(-((fresh[:, 0] - 0.5) ** 2) / 0.5 + fresh[:, 0] ** 2 / 2) / 0.5
    assert W.weight_error(kliep.weights(fresh), true)["spearman"] > 0.9
    with pytest.raises(W.ConfigError, match="--gamma"):
        W.KLIEPWeights(gamma="median")


def test_the_digits_example_runs(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "digits_label_shift.py"), "--quick"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for part in ("binary 3 vs 8", "BBSE", "MLLS", "domain classifier", "KLIEP"):
        assert part in proc.stdout, proc.stdout


HEAVY = ("torch", "pandas", "numba")


@pytest.mark.parametrize("script, flags, listed_choices", [
    ("CIFAR10_binary_classifier.py", ("--epochs", "--regimes", "--normalization", "--no-figures"), "none | l2 | dropout"),
    ("CIFAR10_extension.py", ("--epochs", "--regimes", "--normalization", "--no-figures"), "none | l2 | dropout"),
    ("synthetic_study.py", ("--engine", "--regimes", "--normalization", "--no-figures"), "none | l2 | dropout"),
    ("replicate_wang2022.py", ("--epochs", "--losses", "--normalization", "--dry-run"), "ce | poly_wang"),
])
def test_help_describes_every_flag_without_heavy_imports(script, flags, listed_choices):
    probe = (f"import runpy, sys; sys.argv = [{script!r}, '--help']\n"
             f"try:\n    runpy.run_path({str(ROOT / script)!r}, run_name='__main__')\n"
             f"except SystemExit:\n    pass\n"
             f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
    lines = proc.stdout.split("options:", 1)[1]
    for flag in flags:
        assert f"{flag} " in lines or f"{flag}\n" in lines or f"{flag}," in lines, flag
    assert "--no-figures-on" not in lines
    assert listed_choices in lines  # a list flag's choices


def test_help_shows_the_presets_values():
    proc = subprocess.run([sys.executable, str(ROOT / "CIFAR10_binary_classifier.py"), "--preset", "cpu", "--help"],
                          capture_output=True, text=True, timeout=120)
    help_text = " ".join(proc.stdout.split())
    assert "preset cpu: 150" in help_text  # EPOCHS under the cpu preset


def test_bad_choice_is_refused_without_heavy_imports():
    probe = (f"import runpy, sys; sys.argv = ['CIFAR10_binary_classifier.py', '--regimes', 'huge']\n"
             f"try:\n    runpy.run_path({str(ROOT / 'CIFAR10_binary_classifier.py')!r}, run_name='__main__')\n"
             f"except SystemExit as exit:\n    print('EXIT', exit.code)\n"
             f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "EXIT 2" in proc.stdout and "HEAVY []" in proc.stdout
    assert proc.stderr.strip().endswith("--regimes: unknown value 'huge'; choose from none, l2, dropout, batchnorm")


def test_pyproject_declares_what_the_package_imports():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {d.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower()
                for d in project["dependencies"]}
    assert {"torch", "numpy", "scipy", "pandas", "matplotlib", "scikit-learn", "numba", "pillow"} <= declared
    pins = {line.split("==")[0].lower() for line in (ROOT / "constraints.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    assert declared <= pins


@pytest.mark.parametrize("l2", [(0.0, 0.0, 0.0), (0.0, 1e-2, 0.5)])
def test_stacked_sgd_updates_each_run_as_torch_sgd(l2):
    """StackedSGD is torch.optim.SGD (momentum, each run's own weight decay) on each run's block of every
    parameter; with no decay at all it skips the decay pass and stays exact."""
    K, momentum, lr = len(l2), 0.9, 0.05
    torch.manual_seed(0)
    stacked = [torch.randn(K * 4, 3), torch.randn(K, 1, 5)]  # leading dimensions split into K blocks
    runs = [[p.detach().view(K, -1, *p.shape[1:])[k].clone().requires_grad_() for p in stacked] for k in range(K)]
    optimizer = StackedSGD(stacked, K, lr, momentum, l2)
    assert optimizer.has_decay == any(l2)
    references = [torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=l2[k]) for k, params in enumerate(runs)]
    for _ in range(4):
        grads = [torch.randn_like(p) for p in stacked]
        for p, g in zip(stacked, grads):
            p.grad = g.clone()
        optimizer.step()
        for k, (params, reference) in enumerate(zip(runs, references)):
            for p, g in zip(params, grads):
                p.grad = g.view(K, -1, *g.shape[1:])[k].clone()
            reference.step()
    for k, params in enumerate(runs):
        for p, q in zip(stacked, params):
            exact = l2[k] == 0
            torch.testing.assert_close(p.view(K, -1, *p.shape[1:])[k], q.detach(),
                                       rtol=0 if exact else 1e-6, atol=0 if exact else 1e-7)


@pytest.mark.parametrize("script, config_name", [("CIFAR10_binary_classifier.py", "BinaryConfig"),
                                                  ("CIFAR10_extension.py", "ExtensionConfig"),
                                                  ("replicate_wang2022.py", "Wang2022Config"),
                                                  ("synthetic_study.py", "SyntheticConfig")])
def test_each_knobs_constant_in_a_script_is_its_fields_default(script, config_name):
    """A script's constant and its config field are one knob: a constant that drifted from the field's default
    would read as the user's change and silently override every preset."""
    from iwshift import cli, config
    from iwshift.config import defaults

    module, cls = load_script(script), getattr(config, config_name)
    fields = defaults(cls)
    pairs = {const: name for const, name in cli.knob_constants(cls).items()
             if hasattr(module, const) and const != "PRESET"}  # (the script's PRESET picks one; "auto" is no preset)
    assert len(pairs) >= 10
    drifted = {const: (getattr(module, const), fields[name]) for const, name in pairs.items()
               if not cli._equal(getattr(module, const), fields[name])}
    assert drifted == {}
