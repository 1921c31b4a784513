"""``multispike reproduce``: every recipe carries the paper's claim (checked against the
papers' tables, transcribed once into tests/fixtures/paper_tables.json), and a real run on the
digits writes a report whose numbers are those of train / eval / energy, and continues after an
interruption without training finished seeds again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from multispike.cli import main
from multispike.engine import list_recipes, load_checkpoint
from multispike.errors import ConfigError
from multispike.workflows import reproduce as rp

FIXTURE = Path(__file__).with_name("fixtures") / "paper_tables.json"
TABLES = {k: v for k, v in json.loads(FIXTURE.read_text()).items() if not k.startswith("_")}


def _rows(source: str) -> list[list]:
    return TABLES.get(source, [])


def _row(source, method, arch, dataset, t):
    hits = [r for r in _rows(source) if r[:4] == [method, arch, dataset, t]]
    assert len(hits) == 1, (source, method, arch, dataset, t)
    return hits[0]


#: recipes beyond both papers: no published number exists for exactly their setting, so they
#: carry no [paper] table (and `multispike reproduce` refuses them in one line)
BEYOND = ("ilif-resnet20m-cifar10", "mt-learnable-vgg9-cifar10")


@pytest.mark.parametrize("name", [n for n in list_recipes() if n not in BEYOND])
def test_every_recipe_carries_the_papers_claim(name):
    claim = rp.paper_claim(name)
    for key in ("source", "method", "architecture", "dataset", "timesteps"):
        assert key in claim, (name, key)
    from multispike.engine import resolve_config

    cfg = resolve_config(name)
    assert claim["dataset"] == cfg.dataset and claim["timesteps"] == cfg.timesteps
    if claim["source"].startswith("multispike demo"):  # the digits rows: the demo's numbers
        assert claim["accuracy"] > 90
        return
    if "accuracy" not in claim:  # a figure without printed numbers: the claim is words
        assert claim["source"].endswith(("Fig 3", "Fig 4")) and claim["claim"]
        return
    row = _row(claim["source"], claim["method"], claim["architecture"], claim["dataset"],
               claim["timesteps"])
    assert claim["accuracy"] == pytest.approx(row[4], abs=1e-9)
    assert claim.get("std") == row[5]
    for t, acc in zip(claim.get("sweep_timesteps", []), claim.get("sweep_accuracy", []),
                      strict=True):
        assert acc == pytest.approx(_row(claim["source"], claim["method"],
                                         claim["architecture"], claim["dataset"], t)[4])
    comp = claim.get("comparison")
    if comp and comp.get("accuracy") is not None:
        other = _row(comp["source"], comp["against"], claim["architecture"], claim["dataset"],
                     comp["timesteps"])
        assert comp["accuracy"] == pytest.approx(other[4])


@pytest.mark.parametrize("name", BEYOND)
def test_the_recipes_beyond_the_papers_claim_nothing(name, tmp_path, capsys):
    """No [paper] table (no number to invent), a comment that says so, and reproduce refuses
    them in one line before it trains."""
    from multispike.engine.config import recipe_dir

    assert name in list_recipes()
    text = (recipe_dir() / f"{name}.toml").read_text()
    assert "\n[paper]" not in text and "No [paper] table" in text
    with pytest.raises(ConfigError, match="no \\[paper\\] table"):
        rp.paper_claim(name)
    assert main(["reproduce", name, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no [paper] table" in err
    assert not (tmp_path / "r" / "seed0").exists()


def test_the_fixture_holds_what_the_papers_print():
    """Spot checks of the transcription against the papers' text."""
    papers = Path(__file__).resolve().parents[2] / "shared" / "papers"
    if not papers.is_dir():
        pytest.skip(f"the papers are not beside this checkout ({papers})")
    mt = (papers / "mt-snn-multiple-thresholds.md").read_text()
    tern = (papers / "ternary-spike.md").read_text()
    assert "VGG-9 model can reach 94.71% and 74.79% accuracy when step is 2" in mt
    assert _row("MT-SNN Table 3", "MT", "MT-VGG-9", "cifar10", 2)[4] == 94.71
    assert "MT-ResNet-20 can achieve 94.71% accuracy at  $time\\_step = 4$" in mt
    assert _row("MT-SNN Table 3", "MT", "MT-ResNet-20", "cifar10", 4)[4] == 94.71
    for _, _, _, _, acc, _ in _rows("Ternary Spike Table 1"):
        assert f"{acc:.2f}%" in tern
    for _, _, _, _, acc, std in _rows("Ternary Spike Table 4"):
        assert f"{acc:.2f}" in tern and f"{std:.2f}" in tern


def test_a_recipe_without_a_claim_is_one_line(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('dataset = "digits"\ntimesteps = 1\n')
    with pytest.raises(ConfigError, match="no \\[paper\\] table"):
        rp.paper_claim(str(p))


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro") / "mt-digits"
    rp.reproduce("mt-digits", seeds=[0, 1], epochs=1, out=out, device="cpu", progress=False)
    return out


def test_report_numbers_are_those_of_train_eval_and_energy(report_dir, capsys):
    rep = json.loads((report_dir / "report.json").read_text())
    assert (report_dir / "report.md").read_text().startswith("# Reproduction of `mt-digits`")
    assert (report_dir / "accuracy_vs_T.png").stat().st_size > 1000
    assert rep["claim"]["accuracy"] == 99.81 and rep["accuracy"]["timesteps"] == 2
    for seed in ("0", "1"):
        ckpt = report_dir / f"seed{seed}" / "best.pt"
        s = rep["seeds"][seed]
        assert s["best_accuracy"] == load_checkpoint(ckpt)["best_accuracy"]  # what train says
        capsys.readouterr()
        # each T of the sweep is its own model, trained at that T (OUT/T1/seedN at T = 1)
        for t, run in (("2", s), ("1", rep["sweep_seeds"]["1"][seed])):
            path = Path(run["checkpoint"])
            assert path == (ckpt if t == "2" else report_dir / "T1" / f"seed{seed}" / "best.pt")
            assert load_checkpoint(path)["model_args"]["timesteps"] == int(t)
            assert main(["eval", "--checkpoint", str(path), "--timesteps", t, "--device", "cpu",
                         "--json"]) == 0
            (row,) = json.loads(capsys.readouterr().out)
            assert run["accuracy"] == {t: pytest.approx(100 * row["accuracy"])}
        # what the report's accuracy at the paper's T is: train's best epoch, as eval measures it
        assert s["accuracy"]["2"] == pytest.approx(100 * s["best_accuracy"])
        assert main(["energy", "--checkpoint", str(ckpt), "--dataset", "digits",
                     "--timesteps", "2", "--device", "cpu", "--json"]) == 0
        energy = json.loads(capsys.readouterr().out)
        assert s["energy"]["energy_uj"] == pytest.approx(energy["energy_uj"])
        assert s["deploy"]["ok"]
    accs = [rep["seeds"][s]["accuracy"]["2"] for s in ("0", "1")]
    assert rep["accuracy"]["ours_mean"] == pytest.approx(sum(accs) / 2)
    env = rep["environment"]  # the device the run used (the CPU here, even beside a GPU)
    assert env["torch"] and env["wall_s"] > 0
    assert (env["device"], env["gpu"]) == ("cpu", False) and "cores" in env["device_name"]
    assert f"- device: cpu ({env['device_name']})" in (report_dir / "report.md").read_text()


def test_the_environment_names_the_device_the_run_used(monkeypatch):
    """``device`` is where the run trained, not whether a GPU is visible; a GPU is named."""
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    env = rp.environment(1.0, "cuda:0")
    assert (env["device"], env["device_name"], env["gpu"]) == ("cuda:0", "NVIDIA H200", True)
    env = rp.environment(1.0, "cpu")
    assert (env["device"], env["gpu"]) == ("cpu", False) and env["device_name"].endswith("cores")


def test_an_interrupted_run_continues_without_retraining_finished_seeds(tmp_path, monkeypatch):
    out = tmp_path / "r"
    from multispike.engine import train as train_mod

    real = train_mod.train_model
    calls = []

    def interrupted(cfg):
        calls.append(cfg.seed)
        if cfg.seed == 1 and calls.count(1) == 1:
            raise KeyboardInterrupt  # killed while training the second seed
        return real(cfg)

    monkeypatch.setattr("multispike.engine.train_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rp.reproduce("ternary-digits", seeds=[0, 1], epochs=1, out=out, device="cpu",
                     progress=False)
    first = (out / "seed0" / "last.pt").read_bytes()
    assert not (out / "report.json").exists()
    rep = rp.reproduce("ternary-digits", seeds=[0, 1], epochs=1, out=out, device="cpu",
                       progress=False)
    assert (out / "seed0" / "last.pt").read_bytes() == first  # seed 0 was not trained again
    assert rep["seeds"]["0"]["epochs"] == 1 and rep["seeds"]["1"]["epochs"] == 1
    assert (out / "report.json").exists()
    cached = json.loads((out / "seed0" / "reproduce.json").read_text())
    assert cached["checkpoint_sha256"] == rep["seeds"]["0"]["checkpoint_sha256"]


def test_the_command_reuses_the_finished_run_and_prints_one_line(report_dir, capsys):
    before = (report_dir / "seed0" / "last.pt").read_bytes()
    assert main(["reproduce", "mt-digits", "--seeds", "0,1", "--epochs", "1", "--out",
                 str(report_dir), "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("mt-digits: ours ") and "our demo's claim 99.81" in out[-1]
    assert (report_dir / "seed0" / "last.pt").read_bytes() == before


@pytest.mark.parametrize("argv, text", [
    (["reproduce", "no-such-recipe"], "unknown recipe"),
    (["reproduce", "mt-digits", "--seeds", "0,0"], "distinct integers"),
    (["reproduce", "mt-digits", "--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
])
def test_bad_input_is_one_line(argv, text, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and text in err and "Traceback" not in err


def test_reproduce_under_torchrun_trains_on_every_process_and_reports_once(tmp_path):
    """Two gloo processes train each seed together (DistributedDataParallel); rank 0 alone
    evaluates and writes the report, and prints the one summary line."""
    from tests.torchrun import torchrun

    out = tmp_path / "r"
    r = torchrun("reproduce", "ternary-digits", "--seeds", "0", "--epochs", "1", "--device",
                 "cpu", "--no-progress", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("ternary-digits: ours ") == 1
    config = json.loads((out / "seed0" / "config.json").read_text())
    assert config["world_size"] == 2
    rep = json.loads((out / "report.json").read_text())
    assert rep["seeds"]["0"]["epochs"] == 1


# -- issue 23: a report that compares like with like and says what it is ----------------------
def test_every_T_row_is_a_model_trained_at_that_T_and_says_so(report_dir):
    rep = json.loads((report_dir / "report.json").read_text())
    assert rep["sweep"] == "train"
    rows = rep["accuracy_vs_T"]
    assert {t: (r["trained_T"], r["eval_T"]) for t, r in rows.items()} == {"1": (1, 1),
                                                                         "2": (2, 2)}
    accs = [rep["sweep_seeds"]["1"][s]["accuracy"]["1"] for s in ("0", "1")]
    assert rows["1"]["ours"] == accs and rows["1"]["paper"] == 99.44
    md = (report_dir / "report.md").read_text()
    assert "| 1 | trained at T = 1 | 99.44 |" in md and "evaluated at" not in md


def test_the_cheap_sweep_keeps_one_model_and_labels_its_rows(report_dir, tmp_path):
    import shutil

    out = tmp_path / "eval"
    for seed in ("seed0", "seed1"):  # the finished T = 2 runs: nothing is trained again
        shutil.copytree(report_dir / seed, out / seed)
    rep = rp.reproduce("mt-digits", seeds=[0, 1], epochs=1, out=out, device="cpu",
                       progress=False, sweep="eval")
    assert not (out / "T1").exists() and rep["sweep_seeds"] == {}
    assert (rep["accuracy_vs_T"]["1"]["trained_T"], rep["accuracy_vs_T"]["1"]["eval_T"]) == (2, 1)
    md = (out / "report.md").read_text()
    assert "| 1 | evaluated at T = 1, trained at T = 2 |" in md
    assert "`--sweep eval` (instead of train: one model per T)" in md
    with pytest.raises(ConfigError, match="unknown sweep 'both'"):
        rp.reproduce("mt-digits", out=tmp_path / "x", sweep="both")


def test_the_report_header_names_every_command_line_override(report_dir):
    rep = json.loads((report_dir / "report.json").read_text())
    assert rep["overrides"] == {"--epochs": {"value": 1, "instead_of": "the recipe's 12"},
                                "--seeds": {"value": "0,1", "instead_of": "0,1,2"},
                                "--device": {"value": "cpu", "instead_of": "auto"}}
    header = (report_dir / "report.md").read_text().split("\n## ")[0]
    assert ("Settings overridden on the command line: `--epochs 1` (instead of the recipe's "
            "12), `--seeds 0,1` (instead of 0,1,2), `--device cpu` (instead of auto).") in header
    assert rp.settings_line({}).startswith("Settings: the recipe's")


def test_a_claim_of_ours_is_labelled_as_ours(report_dir):
    md = (report_dir / "report.md").read_text()
    assert "This claim is our own number" in md
    assert "| | claim (ours) | ours (mean ± std, 2 seeds) |" in md
    assert "| | paper |" not in md
    assert rp.own_claim(rp.paper_claim("ternary-digits"))
    assert not rp.own_claim(rp.paper_claim("mt-vgg9-cifar10"))
    from multispike.cli.info import claim_text

    assert "(ours: multispike demo (README))" in claim_text(rp.paper_claim("mt-digits"))


def _fake_seed(acc: float, ts: list[int]) -> dict:
    return {"accuracy": {str(t): acc for t in ts}, "mean_firing_rate": {str(ts[0]): 0.1},
            "best_epoch": 1,
            "energy": {"energy_uj": 1.0, "convention": "events"},
            "deploy": {"ok": True, "max_abs_diff_float64": 0.0}}


@pytest.mark.parametrize("recipe, paper", [("mt-vgg9-cifar10", "94.71 ± n/a"),
                                           ("ternary-resnet20m-cifar10", "94.46 ± 0.0")])
def test_a_missing_standard_deviation_is_n_a_not_zero(recipe, paper):
    """MT-SNN prints no ±, and one seed has no spread: both are n/a; Ternary Table 2's ±0.0
    is printed as the paper prints it."""
    claim = rp.paper_claim(recipe)
    seed = _fake_seed(90.0, rp.sweep_timesteps(claim))
    rep = rp.summarize(recipe, claim, {0: seed}, 1.0, sweep="eval")
    md = rp.report_markdown(rep)
    assert f"| {paper} | 90.00 ± n/a |" in md
    assert "± 0.00" not in md and rep["accuracy"]["ours_std"] is None
    assert rep["accuracy"]["paper_within_our_spread"] is None


def test_the_report_names_the_thread_count_and_the_batches_it_measured(report_dir):
    """digits' 360 test images are 6 batches of 64, not the 8 the energy asks for."""
    rep = json.loads((report_dir / "report.json").read_text())
    threads = rep["environment"]["threads"]
    counts = threads if isinstance(threads, list) else [threads]  # a list if the runs differed
    assert all(isinstance(n, int) and n >= 1 for n in counts)
    text = (report_dir / "report.md").read_text()
    header = text.split("\n## ")[0]
    assert f"CPU threads: {threads} (the same seed and the same thread count" in header
    e = rep["energy_uj_per_image"]
    assert (e["batches"], e["images"]) == (6, 360)
    assert "rates measured on 6 test batches of up to 64: 360 images)." in text
    assert "8 test batches" not in text
    assert rp.threads_line(None).startswith("CPU threads: –")


def test_deploy_check_of_a_silent_model_is_not_ok():
    """A model whose neurons never fire gives equal outputs folded or not: that proves
    nothing, so the report's deploy check is not "ok" and says why."""
    from multispike.engine.checkpoint import RunData
    from multispike.models import create
    from multispike.workflows.reproduce import _deploy

    run = RunData("digits", None, {})
    silent = create("digits_net", firing="binary", timesteps=2, v_threshold=1e6)
    res = _deploy(silent, run)
    assert res["ok"] is False and "no neuron fired" in res["note"]
    firing = create("digits_net", firing="binary", timesteps=2, v_threshold=0.01)
    res = _deploy(firing, run)
    assert res["ok"] is True and res["note"] is None, res
