"""The Triton launcher (kernels/direct.py: the path neuron layers take on CUDA) against the
reference loop, with every learnable number read in the kernels: PLIF's w, the amplitude and
learned thresholds' ρ (every rule and reset, moved thresholds, float64/float32/bfloat16).
Without a GPU the kernels run in Triton's interpreter, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

CASES = [
    ("plif", "mt", {"learn_amplitude": True}),
    ("plif", "ternary", {"v_reset": 0.2, "init_tau": 3.0}),
    ("lif", "ternary", {"learn_amplitude": True}),
    ("lif", "mt", {"learn_thresholds": True}),
    ("lif", "mt", {"learn_thresholds": True, "reset": "any", "deltas": (-0.3, 0.25)}),
    ("lif", "ternary-mt", {"learn_thresholds": True, "reset": "any"}),
    ("if", "integer", {"learn_thresholds": True, "reset": "any"}),
    ("if", "signed-integer", {"learn_thresholds": True, "levels": 2}),
    ("plif", "integer", {"learn_thresholds": True, "learn_amplitude": True}),
    ("lif", "binary", {"learn_thresholds": True, "reset": "soft"}),
]


def triton_launcher_errors(device: str = "cpu") -> list[str]:
    """What differs between the reference loop and the Triton launcher, per case and dtype."""
    from multispike import kernels
    from multispike.kernels.direct import TritonLauncher
    from multispike.neurons import NEURONS

    native = kernels.native_impl
    kernels.native_impl = lambda record, x: "triton" if native(record, x) else None
    errors = []
    try:
        for dtype in (torch.float64, torch.float32, torch.bfloat16):
            for i, (dyn, firing, opts) in enumerate(CASES):
                node = NEURONS[dyn](firing=firing, **opts).to(device)
                if dtype == torch.float64:
                    node = node.double()
                g = torch.Generator().manual_seed(i)
                with torch.no_grad():
                    for name, p in node.named_parameters():
                        if name == "threshold_rho":
                            p.copy_(0.4 * torch.randn(p.shape, generator=g))
                        elif name == "w":
                            p.fill_(0.4)
                        else:
                            p.fill_(0.3)  # a bfloat16 amplitude rounds visibly
                x = (1.5 * torch.randn(3, 2, 300, generator=g, dtype=torch.float64)).to(dtype)
                weight = torch.randn(x.shape, generator=g, dtype=torch.float64).to(dtype)
                results = []
                for backend in ("torch", "auto"):
                    node.backend = backend
                    node.zero_grad(set_to_none=True)
                    xi = x.to(device).requires_grad_(True)
                    out = node(xi)
                    (out * weight.to(device)).sum().backward()
                    results.append((out.detach(), [xi.grad] + [p.grad for p in node.parameters()]))
                assert type(node._routes[(x.device.type, dtype)]) is TritonLauncher
                (ref, ref_g), (got, got_g) = results
                tag = f"{dyn}/{firing}/{opts}/{dtype}"
                if not torch.equal(ref, got):
                    errors.append(f"{tag}: spikes differ")
                tol = {torch.float64: 1e-9, torch.float32: 1e-4, torch.bfloat16: 0.1}[dtype]
                for a, b in zip(ref_g, got_g, strict=True):
                    if b is None or not torch.allclose(a.double(), b.double(), rtol=tol, atol=tol):
                        errors.append(f"{tag}: gradient differs")
    finally:
        kernels.native_impl = native
    return errors


@pytest.mark.skipif(__import__("importlib").util.find_spec("triton") is None,
                    reason="triton not installed")
def test_triton_launcher_equals_reference():
    if torch.cuda.is_available():
        assert triton_launcher_errors("cuda") == []
        return
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    code = ("import json; from tests.test_triton_direct import triton_launcher_errors as f; "
            "print(json.dumps(f()))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
