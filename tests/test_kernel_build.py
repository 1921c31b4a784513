"""``python -m multispike.kernels.build``: the C++ kernel built into its cache at install time
(the first neuron call's build stays the fallback)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from multispike.kernels import build, cpu


@pytest.fixture
def built() -> Path:
    """The library the tests already use (conftest builds it); skip where it cannot be."""
    if cpu.library() is None:
        pytest.skip(f"no CPU kernel here: {cpu.failure()}")
    return cpu._build(cpu._compiler())


def test_build_prints_the_cached_library(built, capsys):
    assert build.main([]) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n") and Path(out.strip()) == built
    assert built.parent == cpu.cache_dir() / "kernels" and built.is_file()


def test_build_fills_an_empty_cache_once(built, tmp_path, monkeypatch, capsys):
    """Into an empty cache it compiles (announced on stderr, with the path), where the first
    neuron call will look; a second run finds it and compiles nothing."""
    compiled = []

    def compile_(cxx, tmp_dir, out):  # the real compile takes ~30 s: copy the built library
        compiled.append(out)
        shutil.copy(built, out)

    monkeypatch.setenv("MULTISPIKE_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu, "_compile", compile_)
    assert build.main([]) == 0
    cap = capsys.readouterr()
    path = Path(cap.out.strip())
    assert path.parent == tmp_path / "kernels" and path.name == built.name and path.is_file()
    assert len(compiled) == 1 and "building the CPU kernel" in cap.err and str(path) in cap.err
    assert build.main([]) == 0
    cap = capsys.readouterr()
    assert Path(cap.out.strip()) == path and len(compiled) == 1 and cap.err == ""


def test_no_compiler_is_one_line_and_exit_1(monkeypatch, capsys):
    monkeypatch.setattr(cpu, "_compiler", lambda: None)
    assert build.main([]) == 1
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.count("\n") == 1
    assert "no C++ compiler found (set CXX or install g++)" in cap.err
    assert "eager path" in cap.err


def test_a_failed_compile_names_the_compiler_line(tmp_path, monkeypatch, capsys):
    def fail(cxx, tmp_dir, out):
        raise RuntimeError(["multistep.cpp:1: error: boom"])

    monkeypatch.setenv("MULTISPIKE_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu, "_compiler", lambda: "g++")
    monkeypatch.setattr(cpu, "_compile", fail)
    monkeypatch.setattr(cpu.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 0, stdout="g++ (fake) 1.0\n", stderr=""))
    assert build.main([]) == 1
    err = capsys.readouterr().err
    assert "(multistep.cpp:1: error: boom)" in err and err.count("\n") == 2  # + the announce


def test_disabled_builds_nothing(monkeypatch, capsys):
    monkeypatch.setenv("MULTISPIKE_NO_CPU_KERNEL", "1")
    monkeypatch.setattr(cpu, "_build", lambda cxx: pytest.fail("built although disabled"))
    assert build.main([]) == 0
    assert "disabled by MULTISPIKE_NO_CPU_KERNEL" in capsys.readouterr().out


def test_python_dash_m(built):
    r = subprocess.run([sys.executable, "-m", "multispike.kernels.build"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == built
