"""The worked examples of the README run as written (few epochs here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_snntorch_upgrade_imports_the_peer_s_network_as_it_is(tmp_path, capsys):
    """snnTorch trains, exports; multispike imports (the binary import classifies the test
    images exactly as snnTorch's own simulation does), upgrades and fine-tunes."""
    pytest.importorskip("snntorch", reason="snnTorch is not installed (make test does)")
    pytest.importorskip("nir", reason="the NIR extra is not installed (make test does)")
    _load("snntorch_upgrade").main(["--epochs", "2", "--tune-epochs", "1", "--out",
                                    str(tmp_path / "run")])
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip()
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    assert rows["imported into multispike as it is, binary"] == \
        rows["snnTorch, binary (its own simulation)"]
    for label in ("MT, fine-tuned 1 epoch (`train --init`)",
                  "integer D = 3, fine-tuned 1 epoch (`train --init`)"):
        assert float(rows[label].rstrip(" %")) > 50  # ten classes: far above chance
    assert (tmp_path / "run" / "mt-tuned" / "best.pt").is_file()
