"""The main job: recipes, checkpoints, training, exact resume, eval, bad input, torchrun, demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from multispike.cli import main
from multispike.engine import (
    TrainConfig,
    TrainingDiverged,
    evaluate_model,
    list_recipes,
    load_checkpoint,
    load_model,
    load_recipe,
    resolve_config,
    save_checkpoint,
    train_model,
)
from multispike.engine.checkpoint import FORMAT
from multispike.errors import CheckpointError, ConfigError
from tests.torchrun import torchrun

#: every test that trains or evaluates names its device: here the CPU, also where a GPU is seen
QUICK = dict(dataset="digits", epochs=1, batch_size=128, progress=False, num_workers=0,
             device="cpu")


def _cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "multispike", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


# -- recipes -----------------------------------------------------------------------------------
def test_every_recipe_resolves_and_names_a_known_model():
    from multispike.data import names
    from multispike.models import list_models

    recipes = list_recipes()
    assert "mt-vgg9-cifar10" in recipes and "ternary-resnet20m-cifar10" in recipes
    assert "trainable-ternary-resnet34-imagenet" in recipes and "mt-vgg12-cifar10-dvs" in recipes
    for name in recipes:
        cfg = resolve_config(name)
        assert cfg.model in list_models() and cfg.dataset in names(), name


@pytest.mark.parametrize("name, firing, rule", [
    ("ilif-resnet20m-cifar10", "integer", ("integer", 4, "soft", False)),
    ("mt-learnable-vgg9-cifar10", "mt", ("mt", None, "main", True)),
])
def test_the_issue_15_recipes_load_and_build(name, firing, rule):
    """ilif-resnet20m-cifar10 (I-LIF: integer D=4, T=1, soft reset, LIF decay 0.25) and
    mt-learnable-vgg9-cifar10 (mt-vgg9-cifar10 with learned thresholds) build their model,
    which runs forward and backward on a CIFAR-sized image."""
    import torch

    from multispike import data
    from multispike.engine.train import model_args_for
    from multispike.models import create
    from multispike.neurons import LIFNode, Neuron, PLIFNode

    cfg = resolve_config(name)
    assert cfg.firing == firing and cfg.dataset == "cifar10"
    model = create(**model_args_for(cfg, data.get_spec(cfg.dataset)))
    neurons = [m for m in model.modules() if isinstance(m, Neuron)]
    conv = model.stem_act
    assert (conv.rule.name, getattr(conv.rule, "levels", None), conv.reset,
            conv.learn_thresholds) == rule
    assert all(n.learn_thresholds == rule[3] for n in neurons)
    if firing == "integer":
        assert cfg.timesteps == 1 and all(isinstance(n, LIFNode) for n in neurons)
        assert {(n.decay, n.v_threshold, n.rule.levels) for n in neurons} == {(0.25, 1.0, 4)}
    else:
        base = resolve_config("mt-vgg9-cifar10")
        same = {k: v for k, v in cfg.to_dict().items() if k not in ("recipe", "model_options")}
        assert same == {k: v for k, v in base.to_dict().items()
                        if k not in ("recipe", "model_options")}
        assert cfg.model_options == {**base.model_options, "learn_thresholds": True}
        assert all(isinstance(n, PLIFNode) for n in neurons)
    out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (cfg.timesteps, 2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_recipe_hyperparameters_follow_the_papers():
    mt = resolve_config("mt-vgg9-cifar10")
    assert (mt.lr, mt.momentum, mt.schedule, mt.milestones, mt.gamma) == (0.1, 0.9, "step",
                                                                          [100], 0.1)
    assert mt.firing == "mt" and mt.neuron == "plif"
    tern = load_recipe("trainable-ternary-resnet34-imagenet")
    assert tern["schedule"] == "cosine" and tern["weight_decay"] == 1e-4
    assert tern["model_options"]["learn_amplitude"] is True


def test_flags_override_recipe_key_by_key():
    cfg = resolve_config("mt-vgg9-cifar10",
                         {"epochs": 3, "timesteps": 1, "model_options": {"mt_on_fc": True}})
    assert cfg.epochs == 3 and cfg.timesteps == 1
    assert cfg.model_options == {"deltas": [-0.5, 0.5], "mt_on_fc": True}


@pytest.mark.parametrize("bad, match", [({"timesteps": 0}, "timesteps must be"),
                                        ({"schedule": "linear"}, "unknown schedule"),
                                        ({"compile": "fast"}, "unknown compile mode"),
                                        ({"compile": True}, "unknown compile mode")])
def test_bad_config(bad, match):
    with pytest.raises(ConfigError, match=match):
        resolve_config(None, bad)


def test_recipe_may_set_compile_and_a_flag_overrides_it(tmp_path):
    recipe = tmp_path / "fast.toml"
    recipe.write_text('dataset = "digits"\ncompile = "max-autotune"\n')
    assert TrainConfig().compile == "off"
    assert resolve_config(str(recipe)).compile == "max-autotune"
    assert resolve_config(str(recipe), {"compile": "off"}).compile == "off"


# -- checkpoints -------------------------------------------------------------------------------
def test_checkpoint_is_atomic_and_safe(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model_args": {"name": "digits_net"}, "model": {}})
    assert load_checkpoint(path)["format"] == FORMAT == 2
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt") as e:
        load_checkpoint(tmp_path / "bad.pt")
    assert "\n" not in str(e.value)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"model_args": {}, "model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):  # weights_only refuses to run pickled code
        load_checkpoint(tmp_path / "evil.pt")


def test_checkpoint_config_is_plain_and_compares_again_on_resume(tmp_path):
    """What train stores as ``ckpt["config"]`` (``plain(cfg.to_dict(), keep_inf=True)``):
    tuples become lists and NaN None, so that weights_only loads it, while ±inf stay, so that a
    resumed run with the same settings is not refused for a setting the saving changed."""
    from multispike.checks import plain
    from multispike.engine.config import differing_settings

    cfg = TrainConfig(milestones=(3, 5), model_options={
        "deltas": (-0.5, 0.5), "v_max": float("inf"), "tau": float("nan"), 2: "two"})
    stored = plain(cfg.to_dict(), keep_inf=True)
    assert stored["milestones"] == [3, 5]
    assert stored["model_options"] == {"deltas": [-0.5, 0.5], "v_max": float("inf"),
                                       "tau": None, "2": "two"}
    torch.save(stored, tmp_path / "config.pt")
    saved = torch.load(tmp_path / "config.pt", weights_only=True)
    assert saved == stored
    asked = {**cfg.to_dict(), "model_options": {"v_max": float("inf"), "deltas": [-0.5, 0.5]}}
    assert differing_settings(saved, asked) == []
    # JSON writers (analysis) turn every non-finite number into null
    assert plain({"v_max": float("-inf")}) == {"v_max": None}


# -- training ----------------------------------------------------------------------------------
def test_train_writes_checkpoints_that_rebuild_the_model(tmp_path):
    out = tmp_path / "run"
    result = train_model(TrainConfig(**{**QUICK, "epochs": 2}, firing="mt", out=str(out)))
    assert {"last.pt", "best.pt", "metrics.csv", "config.json"} <= {p.name for p in out.iterdir()}
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    assert json.loads((out / "config.json").read_text())["model_args"]["firing"] == "mt"
    model, ckpt = load_model(out / "last.pt")
    assert ckpt["epoch"] == 2
    x = torch.rand(4, 1, 8, 8)
    result["model"].eval()
    model.eval()
    assert torch.equal(model(x), result["model"](x))
    assert result["best_accuracy"] > 0.3  # ten classes: far above chance after two epochs


def test_no_weight_decay_on_bn_tau_and_amplitude():
    from multispike.engine.train import param_groups
    from multispike.models import create

    model = create("digits_net", num_classes=10, firing="ternary", learn_amplitude=True)
    decay, no_decay = param_groups(model, 5e-4)
    assert all(p.ndim > 1 for p in decay["params"])
    names = {n for n, p in model.named_parameters() if any(p is q for q in no_decay["params"])}
    assert any("amplitude" in n for n in names) and any("bias" in n for n in names)


def test_diverging_loss_stops_with_the_step_and_keeps_last_good(tmp_path, monkeypatch):
    """The 15th training step (epoch 2, step 3 at 12 steps per epoch) gets a NaN loss."""
    calls = {"n": 0}

    class NaNAtStep15(torch.nn.CrossEntropyLoss):
        def forward(self, logits, target):
            loss = super().forward(logits, target)
            if self.reduction == "mean":
                calls["n"] += 1
                if calls["n"] == 15:
                    return loss * float("nan")
            return loss

    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", NaNAtStep15)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"nan at epoch 2, step 3") as e:
        train_model(TrainConfig(**{**QUICK, "epochs": 3}, out=str(out)))
    assert "\n" not in str(e.value)
    assert f"the last good checkpoint {out / 'last.pt'} (epoch 1) is kept" in str(e.value)
    assert load_checkpoint(out / "last.pt")["epoch"] == 1  # the last good checkpoint stays


@pytest.mark.parametrize("out, said", [
    (True, "no checkpoint exists yet (the first is written at the end of epoch 1)"),
    (False, "no checkpoint is written without --out"),
])
def test_divergence_before_any_checkpoint_says_so(tmp_path, monkeypatch, out, said):
    """A NaN loss in the first epoch: the message does not claim a checkpoint it has not got."""
    class NaNLoss(torch.nn.CrossEntropyLoss):
        def forward(self, logits, target):
            loss = super().forward(logits, target)
            return loss * float("nan") if self.reduction == "mean" else loss

    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", NaNLoss)
    where = str(tmp_path / "run") if out else None
    with pytest.raises(TrainingDiverged, match=r"nan at epoch 1, step 1") as e:
        train_model(TrainConfig(**QUICK, out=where))
    assert "\n" not in str(e.value) and said in str(e.value)
    assert "is kept" not in str(e.value)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_kernel_input_flags_are_read_with_the_loss_and_name_the_layer(monkeypatch):
    """The neuron layers' NaN/inf flags (set on the device by the CUDA kernels; simulated here
    at the 5th training step) are counted on the device with the loss and read with it:
    ``raise_on_nonfinite`` runs only when a read finds a set flag, and its
    ``InputError`` names the layer of the plain model (not the compile wrapper's name)."""
    from multispike.engine import evaluate as evaluate_mod
    from multispike.engine import train as train_mod
    from multispike.errors import InputError
    from multispike.models import create

    model = create("digits_net", num_classes=10)
    assert evaluate_mod.flagged_layers(torch.compile(model)) == \
        evaluate_mod.flagged_layers(model)

    real, named = train_mod.raise_on_nonfinite, []
    for mod in (train_mod, evaluate_mod):  # the training step's reads and the test pass's
        monkeypatch.setattr(mod, "raise_on_nonfinite",
                            lambda m: named.append(type(m).__name__) or real(m))
    steps = {"n": 0}

    def set_flag(layer, _inputs, _output):
        if layer.training:
            steps["n"] += 1
            if steps["n"] == 5:  # what the CUDA kernel does on NaN input
                layer.nonfinite = torch.ones((), dtype=torch.int32)

    real_create = train_mod.build_model

    def build(args):
        net = real_create(args)
        net.fc1_act.register_forward_hook(set_flag)
        return net

    from multispike.engine import checkpoint as ckpt_mod

    monkeypatch.setattr(ckpt_mod, "build_model", build)  # train builds through it
    with pytest.raises(InputError, match="NaN or inf reached neuron layer fc1_act;") as e:
        train_model(TrainConfig(**QUICK))
    assert named == ["VGG"] and "\n" not in str(e.value)
    assert steps["n"] == 12  # raised at the end-of-epoch read (12 steps), not at step 5

    # evaluation reads them once, after its last batch
    from multispike import data
    from multispike.engine.evaluate import evaluate

    named.clear()
    model.stem_act.nonfinite = torch.ones((), dtype=torch.int32)
    test = data.make_loader(data.build("digits", train=False), 128, shuffle=False,
                            num_workers=0)
    with pytest.raises(InputError, match="stem_act"):
        evaluate(model, test, spec=data.get_spec("digits"), transform=None,
                 device=torch.device("cpu"))
    assert named == ["VGG"] and int(model.stem_act.nonfinite) == 0  # read and cleared


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    """A run killed with SIGKILL mid-training and resumed ends with the same weights."""
    args = ["train", "--dataset", "digits", "--epochs", "4", "--batch-size", "64",
            "--firing", "ternary", "--learn-amplitude", "--seed", "3", "--no-progress",
            "--workers", "0", "--device", "cpu"]
    ref = tmp_path / "ref"
    assert _cli(*args, "--out", str(ref)).returncode == 0
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "multispike", *args, "--out", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:  # kill once the second epoch's checkpoint is there
        metrics = run / "metrics.csv"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert load_checkpoint(run / "last.pt")["epoch"] < 4  # really interrupted
    r = _cli(*args, "--out", str(run), "--resume")
    assert r.returncode == 0, r.stderr
    a, b = load_checkpoint(ref / "last.pt"), load_checkpoint(run / "last.pt")
    assert b["epoch"] == 4
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


# -- evaluation --------------------------------------------------------------------------------
def test_eval_at_several_timesteps(tmp_path):
    out = tmp_path / "run"
    result = train_model(TrainConfig(**QUICK, firing="ternary", out=str(out)))
    rows = evaluate_model(result["model"], "digits", [1, 2, 4], device="cpu")
    assert [r["timesteps"] for r in rows] == [1, 2, 4]
    assert all(0 <= r["accuracy"] <= 1 and r["firing_rates"] for r in rows)
    assert result["model"].timesteps == 2  # restored
    r = _cli("eval", "--checkpoint", str(out / "best.pt"), "--timesteps", "1,2", "--json",
             "--device", "cpu")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["timesteps"] for row in rows] == [1, 2] and "mean_firing_rate" in rows[0]


def test_eval_rates_are_the_analysis_rates_of_the_same_batches():
    """``multispike eval``'s firing-rate columns come from
    :func:`multispike.analysis.stats.firing_rates`, the measurement ``measure_rates`` makes:
    the numbers of the monitor over the first ``max_batches`` batches, as both computed them
    before they shared it; an ANN twin gets no rates from eval and a refusal from analysis."""
    from multispike.analysis.stats import measure_rates
    from multispike.data import get_spec
    from multispike.deploy.testing import exercise
    from multispike.engine.evaluate import _rates
    from multispike.models import create
    from multispike.monitor import record_activity

    spec = get_spec("digits")
    gen = torch.Generator().manual_seed(3)
    loader = [(torch.rand(5, 1, 8, 8, generator=gen), torch.zeros(5, dtype=torch.long))
              for _ in range(4)]
    for firing in ("mt", "ternary", "binary"):
        model = exercise(create("digits_net", firing=firing, timesteps=2), loader[0][0])
        with torch.no_grad(), record_activity(model) as mon:  # the reference: two batches
            for x, _ in loader[:2]:
                model(x)
        rows = mon.summary()
        want = {r["layer"]: r["rate"] for r in rows}
        want_mean = sum(r["spikes"] for r in rows) / sum(r["neuron_steps"] for r in rows)
        model.train()
        got = _rates(model, loader, spec, None, torch.device("cpu"), 2)
        assert got == {"firing_rates": want, "mean_firing_rate": want_mean}, firing
        assert model.training  # the measurement leaves the model's mode as it was
        assert want_mean > 0 and len(want) == 3
        measured = measure_rates(model, loader, batches=2)  # no events= : rates alone
        assert (measured.rates, measured.mean_rate, measured.batches) == (want, want_mean, 2)
    ann = create("digits_net", firing="ann", timesteps=2)
    assert _rates(ann, loader, spec, None, torch.device("cpu"), 2) == {
        "firing_rates": {}, "mean_firing_rate": 0.0}
    with pytest.raises(ConfigError, match="no spiking neuron layer"):
        measure_rates(ann, loader, batches=2)
    with pytest.raises(ConfigError, match="batches must be an integer >= 1, got 0"):
        measure_rates(model, loader, batches=0)
    with pytest.raises(ConfigError, match="max_batches_for_rates must be an integer >= 1"):
        evaluate_model(model, "digits", [1], max_batches_for_rates=0, device="cpu")


# -- torch.compile -----------------------------------------------------------------------------
@pytest.fixture
def fresh_dynamo():
    """No compiled graphs from other tests in this process (nor left for them)."""
    import torch._dynamo

    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_train_and_eval_compiled_match_eager(tmp_path, capsys, monkeypatch, fresh_dynamo):
    """``train --compile`` writes the checkpoint an eager run would (plain keys, config with
    ``compile``); ``eval --compile`` gives the accuracy of eager eval and eager firing rates.

    Training compiles with the ``aot_eager`` backend (dynamo's capture and AOT autograd's
    forward/backward graphs, no generated C++): inductor's C++ build of a training graph takes
    about a minute on two cores. Evaluation compiles with inductor itself.
    """
    compiled: list[tuple[str, str | None]] = []
    real_compile = torch.compile

    def spy(model, *, mode=None, **kwargs):
        compiled.append((type(model).__name__, mode))
        return real_compile(model, mode=mode, **kwargs)

    def spy_aot_eager(model, *, mode=None, **kwargs):
        compiled.append((type(model).__name__, mode))
        return real_compile(model, backend="aot_eager", **kwargs)

    from multispike.engine import evaluate as evaluate_mod
    from multispike.engine import train as train_mod

    checked = []  # no flag is set: the one read per test pass finds none, nothing is named
    for mod in (train_mod, evaluate_mod):
        monkeypatch.setattr(mod, "raise_on_nonfinite",
                            lambda m: checked.append(type(m).__name__))
    monkeypatch.setattr(torch, "compile", spy_aot_eager)
    out = tmp_path / "run"
    # --device cpu: the eval below runs on the CPU in float32 (a GPU run would train in bf16)
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--batch-size", "128",
                 "--no-progress", "--workers", "0", "--compile", "--device", "cpu",
                 "--out", str(out)]) == 0
    assert compiled == [("VGG", "default")]
    assert checked == []
    assert json.loads((out / "config.json").read_text())["compile"] == "default"
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["config"]["compile"] == "default"
    assert not any("_orig_mod" in key for key in ckpt["model"])  # the plain model's state
    assert ckpt["history"][-1]["test_accuracy"] > 0.2  # it learned (ten classes)

    torch._dynamo.reset()  # evaluation compiles anew, with inductor
    monkeypatch.setattr(torch, "compile", spy)

    def eval_rows(*flags: str) -> list[dict]:
        capsys.readouterr()
        assert main(["eval", "--checkpoint", str(out / "last.pt"), "--timesteps", "2",
                     "--batch-size", "360", "--device", "cpu", "--json", *flags]) == 0
        return json.loads(capsys.readouterr().out)

    (fast,), (eager,) = eval_rows("--compile"), eval_rows()
    assert compiled == [("VGG", "default")] * 2
    assert abs(fast["accuracy"] - eager["accuracy"]) <= 1e-6
    assert abs(fast["loss"] - eager["loss"]) <= 1e-5
    assert abs(fast["accuracy"] - ckpt["history"][-1]["test_accuracy"]) <= 1e-6
    assert fast["firing_rates"] == eager["firing_rates"]  # the eager model records them


def test_reduce_overhead_off_cuda_warns_once_in_one_line(tmp_path, monkeypatch):
    """No CUDA graphs on the CPU: one line of warning, then ``default`` (compiled lazily, so
    nothing is compiled here)."""
    from multispike.engine import device as train_mod
    from multispike.models import create

    modes = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: modes.append(kw["mode"]) or model)
    monkeypatch.setattr(train_mod, "_warned_cuda_graphs", False)
    model = create("digits_net", num_classes=10)
    cpu = torch.device("cpu")
    with pytest.warns(RuntimeWarning, match="reduce-overhead uses CUDA graphs") as record:
        train_mod.compile_model(model, "reduce-overhead", cpu)
        train_mod.compile_model(model, "reduce-overhead", cpu)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert train_mod.compile_model(model, "off", cpu) is model
    train_mod.compile_model(model, "max-autotune", cpu)
    assert modes == ["default", "default", "max-autotune"]

    from multispike.cli import _warning_line

    line = _warning_line(record[0].message, RuntimeWarning, "train.py", 1)
    assert line.startswith("multispike: warning: ") and line.count("\n") == 1


# -- bad input on the command line: one line, exit 2, nothing overwritten ----------------------
def _fails(r: subprocess.CompletedProcess, text: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and text in r.stderr, r.stderr


def test_cli_bad_input(tmp_path):
    _fails(_cli("train", "--dataset", "digits", "--model", "vgg99"), "unknown model")
    _fails(_cli("train", "--dataset", "mnist"), "unknown dataset")
    _fails(_cli("train", "--recipe", "nope"), "unknown recipe")
    _fails(_cli("train", "--dataset", "digits", "--timesteps", "0"), "timesteps must be")
    _fails(_cli("train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "none")),
           str(tmp_path / "none"))
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"\x00" * 100)
    _fails(_cli("eval", "--checkpoint", str(bad)), "corrupt")
    _fails(_cli("eval", "--checkpoint", str(tmp_path / "missing.pt")), "does not exist")
    _fails(_cli("eval", "--checkpoint", str(bad), "--timesteps", "0,1"), "timesteps")
    _fails(_cli("train", "--dataset", "digits", "--compile", "fast"), "unknown compile mode")
    _fails(_cli("eval", "--checkpoint", str(bad), "--compile", "fast"), "unknown compile mode")


def test_cli_refuses_to_overwrite_and_other_architecture(tmp_path):
    out = tmp_path / "run"
    train_model(TrainConfig(**QUICK, out=str(out)))
    before = (out / "last.pt").read_bytes()
    _fails(_cli("train", "--dataset", "digits", "--epochs", "1", "--out", str(out)),
           "already holds a run")
    _fails(_cli("train", "--dataset", "digits", "--epochs", "2", "--out", str(out), "--resume",
                "--firing", "binary"), "--firing 'binary' (the run has 'mt')")
    assert (out / "last.pt").read_bytes() == before


# -- one run per folder, resume from --out alone, extending a run ----------------------------------
def test_run_lock_refuses_a_second_run_and_takes_over_a_killed_ones(tmp_path):
    out = tmp_path / "run"
    code = ("import sys, time; from multispike.engine import run_lock\n"
            "with run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = _cli("train", "--dataset", "digits", "--epochs", "1", "--no-progress", "--device",
                 "cpu", "--out", str(out))
        _fails(r, f"in use by another training run (process {holder.pid} on")
        assert not (out / "last.pt").exists() and not (out / "config.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: the lock goes with it
        holder.wait()
    train_model(TrainConfig(**QUICK, out=str(out)))  # the stale lock is taken over
    assert (out / "last.pt").exists()


def test_resume_needs_only_out_and_extends_a_constant_schedule_exactly(tmp_path, capsys):
    base = ["train", "--dataset", "digits", "--batch-size", "128", "--schedule", "constant",
            "--lr", "0.05", "--firing", "ternary", "--no-progress", "--workers", "0",
            "--device", "cpu"]
    assert main([*base, "--epochs", "2", "--out", str(tmp_path / "ref")]) == 0
    assert main([*base, "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "--epochs", "2"]) == 0
    said = capsys.readouterr().out
    assert "extending the run" in said and "from 1 to 2 epochs" in said
    a, b = load_checkpoint(tmp_path / "ref" / "last.pt"), load_checkpoint(
        tmp_path / "run" / "last.pt")
    assert b["epoch"] == 2 and [r["lr"] for r in b["history"]] == [0.05, 0.05]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["epochs"] == 2 and saved["firing"] == "ternary" and saved["resume"] is True


def test_resume_refuses_what_would_change_the_run(tmp_path):
    out = tmp_path / "run"
    train_model(TrainConfig(**{**QUICK, "epochs": 2}, out=str(out)))  # cosine, 2 epochs
    before = (out / "last.pt").read_bytes()
    _fails(_cli("train", "--out", str(out), "--resume", "--epochs", "3"),
           "planned for 2 epochs with a cosine schedule")
    _fails(_cli("train", "--out", str(out), "--resume", "--epochs", "1"),
           "already trained 2 epochs")
    _fails(_cli("train", "--out", str(out), "--resume", "--seed", "5"),
           "--seed 5 (the run has 0)")
    _fails(_cli("train", "--out", str(out), "--resume", "--option", "dropout=0.3"),
           "--option dropout=0.3")
    _fails(_cli("train", "--out", str(tmp_path / "none"), "--resume"), "nothing to resume")
    assert (out / "last.pt").read_bytes() == before
    # the engine refuses too, for callers that build the config themselves (the sweeps)
    with pytest.raises(ConfigError, match="--lr 0.2"):
        train_model(TrainConfig(**{**QUICK, "epochs": 2, "lr": 0.2}, out=str(out), resume=True))
    # and with nothing changed, a finished run resumes to the same result without training
    again = train_model(TrainConfig(**{**QUICK, "epochs": 2}, out=str(out), resume=True))
    assert (out / "last.pt").read_bytes() == before and again["best_accuracy"] >= 0


def test_config_json_is_the_resolved_configuration(tmp_path):
    out = tmp_path / "run"
    train_model(TrainConfig(**QUICK, out=str(out)))
    saved = json.loads((out / "config.json").read_text())
    assert (saved["model"], saved["neuron"], saved["firing"], saved["augment"]) == (
        "digits_net", "plif", "mt", "none")
    assert load_checkpoint(out / "last.pt")["config"]["model"] == "digits_net"


def test_out_pointing_at_a_file_is_one_line(tmp_path):
    f = tmp_path / "file"
    f.write_text("keep me")
    _fails(_cli("train", "--dataset", "digits", "--epochs", "1", "--out", str(f)), "is a file")
    assert f.read_text() == "keep me"


# -- distributed -------------------------------------------------------------------------------
def test_torchrun_two_cpu_processes(tmp_path):
    # --device cpu: two gloo processes on the CPU even where a GPU is visible (without it, both
    # ranks of a one-GPU machine would ask NCCL for a GPU of their own)
    out = tmp_path / "ddp"
    r = torchrun("train", "--dataset", "digits", "--epochs", "1", "--batch-size", "64",
                 "--no-progress", "--workers", "0", "--device", "cpu", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 1
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["device"] == "cpu"


def test_torchrun_evaluation_is_sharded_and_matches_one_process(tmp_path):
    """Two gloo ranks each evaluate half of the test set (no image twice) and all-reduce the
    sums: the test accuracy in the checkpoint equals a one-process evaluation of its weights,
    and both ranks report the same best accuracy."""
    from multispike import data
    from multispike.engine.distributed import ShardSampler
    from multispike.engine.evaluate import evaluate

    shards = [list(ShardSampler(7, 3, rank)) for rank in range(3)]
    assert sorted(sum(shards, [])) == list(range(7)) and [len(s) for s in shards] == [3, 2, 2]
    out = tmp_path / "ddp"
    r = torchrun("train", "--dataset", "digits", "--epochs", "1", "--batch-size", "64",
                 "--no-progress", "--workers", "0", "--device", "cpu", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [line for line in r.stdout.splitlines() if "best test accuracy" in line]
    assert lines and len(set(lines)) == 1, lines  # the ranks agree
    model, ckpt = load_model(out / "last.pt")
    sharded = ckpt["history"][-1]
    test = data.build("digits", train=False)
    whole = evaluate(model, data.make_loader(test, 64, shuffle=False, num_workers=0),
                     spec=data.get_spec("digits"), transform=data.batch_transform(
                         "digits", train=False), device=torch.device("cpu"))
    assert sharded["test_accuracy"] == whole["accuracy"]
    assert sharded["test_loss"] == pytest.approx(whole["loss"], rel=1e-5)


# -- the demo ----------------------------------------------------------------------------------
def test_demo_json_rows(tmp_path, capsys):
    assert main(["demo", "--seeds", "0", "--epochs", "1", "--out", str(tmp_path), "--json",
                 "--device", "cpu"]) == 0
    rows = json.loads(capsys.readouterr().out)
    keys = {(r["label"], r["timesteps"]) for r in rows}
    assert keys == {("ann", 1)} | {(f, t) for f in ("binary", "mt", "ternary",
                                                     "ternary + learned a", "integer D=3",
                                                     "mt + learned thresholds")
                                   for t in (1, 2)}
    assert all({"label", "firing", "timesteps", "accuracy", "spike_bits", "rate"} <= set(r)
               for r in rows)
    by = {(r["label"], r["timesteps"]): r for r in rows}
    # integer D=3 takes MT's four values (two bits); a learned-threshold MT row fires mt
    assert (by["integer D=3", 1]["firing"], by["integer D=3", 1]["options"]) == (
        "integer", {"levels": 3})
    assert by["integer D=3", 2]["spike_bits"] == by["mt", 2]["spike_bits"] == 2.0
    assert by["binary", 1]["spike_bits"] == 1.0 and by["ann", 1]["spike_bits"] is None
    assert by["mt + learned thresholds", 1]["firing"] == "mt"
    assert by["mt + learned thresholds", 1]["options"] == {"learn_thresholds": True}
    assert by["ann", 1]["rate"] == 0.0
    assert all(r["rate"] > 0 for r in rows if r["label"] != "ann")  # trained nets fire
    assert (tmp_path / "accuracy_vs_T.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "demo.json").read_text())
    assert [r["label"] for r in saved] == [r["label"] for r in rows]


def test_demo_table_shows_the_new_rows_with_their_cost(tmp_path, capsys, monkeypatch):
    """The printed table and its reading: the integer and learned-threshold rows, each read
    against binary and against MT, with bits per spike and spikes per step."""
    import multispike.workflows.demo as demo

    def fake_run_demo(**kw):
        out = []
        for i, (label, firing, options) in enumerate(demo.DESIGNS):
            for t in ((1,) if firing == "ann" else (1, 2)):
                out.append({"label": label, "firing": firing, "options": options,
                            "timesteps": t, "accuracy": 0.9 + 0.01 * i, "std": 0.001,
                            "threads": 1, "rate": 0.0 if firing == "ann" else 0.1 * i,
                            "spike_bits": demo.spike_bits(firing, levels=options.get("levels"))})
        return out

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    assert main(["demo", "--out", str(tmp_path), "--no-progress", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "integer D=3" in text and "mt + learned thresholds" in text
    assert "bits/spike" in text and "spikes/step" in text
    assert "T=1: integer D=3 vs mt +3.00 points (better, spread 0.10)" in text
    assert "T=2: mt + learned thresholds vs mt +4.00 points (better" in text
    assert "integer D=3 T=1 2.00 / 0.500" in text


def test_val_split_chooses_the_best_epoch_on_held_out_training_images(tmp_path, capsys):
    out = tmp_path / "run"
    result = train_model(TrainConfig(**{**QUICK, "epochs": 3}, out=str(out), val_split=0.2))
    history = result["history"]
    assert all(0 <= r["val_accuracy"] <= 1 for r in history)
    vals = [r["val_accuracy"] for r in history]
    chosen = vals.index(max(vals))  # the first epoch with the best held-out accuracy
    best = load_checkpoint(out / "best.pt")
    assert best["epoch"] == chosen + 1
    assert result["best_accuracy"] == history[chosen]["test_accuracy"] == best["best_accuracy"]
    assert "val_accuracy" in (out / "metrics.csv").read_text().splitlines()[0]
    from multispike import data
    from multispike.engine.train import load_data

    bundle = load_data(TrainConfig(dataset="digits", val_split=0.2), data.get_spec("digits"))
    assert len(bundle.val) == round(1437 * 0.2) and len(bundle.train) + len(bundle.val) == 1437
    assert not set(bundle.val.indices) & set(bundle.train.indices)
    assert main(["train", "--dataset", "digits", "--val-split", "1.5"]) == 2
    assert "--val-split must be a fraction" in capsys.readouterr().err


def test_demo_reports_each_epoch_of_each_run_off_a_terminal(capsys):
    from multispike.workflows.demo import run_demo

    rows = run_demo(timesteps=(1,), seeds=(0,), epochs=2, progress=True, device="cpu")
    err = capsys.readouterr().err.splitlines()
    epochs = [ln for ln in err if ": epoch " in ln]
    assert len(epochs) == 2 * len(rows)  # every epoch of every run, one plain line each
    assert "demo: binary, T=1, seed 0: epoch 2/2 test accuracy" in "\n".join(epochs)
    assert not any("\r" in ln for ln in err)
    assert {r["threads"] for r in rows} == {1}  # the demo pins one thread


def test_a_refused_run_leaves_no_folder_behind(tmp_path):
    from multispike.engine.runlock import LOCK_NAME, run_lock

    out = tmp_path / "new" / "run"
    with pytest.raises(ConfigError), run_lock(out):
        raise ConfigError("bad option")
    assert not (tmp_path / "new").exists()
    # a folder that existed stays, and so does anything a failed run wrote
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(ConfigError), run_lock(kept):
        raise ConfigError("bad option")
    assert kept.is_dir()
    with pytest.raises(RuntimeError), run_lock(tmp_path / "wrote") as lock:
        (lock.parent / "metrics.csv").write_text("epoch\n")
        raise RuntimeError("crash")
    assert {p.name for p in (tmp_path / "wrote").iterdir()} == {"metrics.csv", LOCK_NAME}
