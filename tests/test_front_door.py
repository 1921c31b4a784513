"""The front door: the package's top-level names, a command line that answers ``--help`` and
``--version`` without loading PyTorch, the help of every training flag, and the one line that
announces a kernel build."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import multispike
from multispike.cli import build_parser


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_import_multispike_does_not_load_torch():
    r = _python("import sys, multispike; print(sorted(m for m in ('torch', 'numpy') "
                "if m in sys.modules))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_the_names_a_user_expects_are_at_the_top():
    from multispike import IFNode, LIFNode, PLIFNode, create, functional, neurons, record_activity
    from multispike.models.registry import create as registry_create
    from multispike.monitor import record_activity as monitor_record_activity

    assert (PLIFNode, LIFNode, IFNode) == (neurons.PLIFNode, neurons.LIFNode, neurons.IFNode)
    assert create is registry_create and record_activity is monitor_record_activity
    assert functional.__name__ == "multispike.functional"
    assert multispike.models.__name__ == "multispike.models"
    for name in multispike.__all__:
        assert hasattr(multispike, name), name
    assert set(multispike.__all__) <= set(dir(multispike))
    assert {"PLIFNode", "create", "functional", "data"} <= set(dir(multispike))
    with pytest.raises(AttributeError, match="no attribute 'PLIFnode'"):
        multispike.PLIFnode  # noqa: B018


def test_star_import_gives_the_neurons():
    namespace: dict = {}
    exec("from multispike import *", namespace)
    assert {"PLIFNode", "LIFNode", "IFNode", "create", "ConfigError"} <= set(namespace)


def _subcommands() -> list[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


#: runs ``python -m multispike ARGS`` in this interpreter, then says whether torch was loaded
_RUN = ("import runpy, sys\n"
        "sys.argv = ['multispike', *{args!r}]\n"
        "try:\n"
        "    runpy.run_module('multispike', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "print('exit', code, 'torch', 'torch' in sys.modules)\n")


@pytest.mark.parametrize("args", [["--help"], ["--version"]]
                         + [[c, "--help"] for c in _subcommands()],
                         ids=" ".join)
def test_help_and_version_do_not_load_torch(args):
    r = _python(_RUN.format(args=args))
    assert r.returncode == 0, r.stderr
    *shown, last = r.stdout.strip().splitlines()
    assert last == "exit 0 torch False"
    assert shown and ("usage: multispike" in shown[0] or shown[0].startswith("multispike "))


def test_every_training_flag_has_a_help_text():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    train = sub.choices["train"]
    helps = {opt: a.help for a in train._actions for opt in a.option_strings}
    for flag in ("--epochs", "--batch-size", "--lr", "--weight-decay", "--seed"):
        assert helps[flag], flag
    assert "(default: the recipe's, else 10)" in helps["--epochs"]


def test_a_kernel_build_says_so_once_with_its_path(tmp_path, monkeypatch, capsys):
    from multispike.kernels import cpu

    calls = []

    def fake_compile(cxx: str, tmp_dir: str, out: str) -> None:
        calls.append(out)
        open(out, "wb").close()

    monkeypatch.setenv("MULTISPIKE_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu, "_compile", fake_compile)
    # any program that answers --version stands in for the compiler: nothing is compiled
    lib = cpu._build(sys.executable)
    err = capsys.readouterr().err
    assert len(calls) == 1 and lib.exists() and lib.parent == tmp_path / "kernels"
    assert err.count("\n") == 1 and err.startswith("multispike: building the CPU kernel")
    assert str(lib) in err
    assert cpu._build(sys.executable) == lib  # cached: no build, no line
    assert len(calls) == 1 and capsys.readouterr().err == ""
