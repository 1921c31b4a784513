"""NIR import against the real peers: a network built in snnTorch 1.0 or SpikingJelly 2.0,
exported by the peer's own NIR exporter and imported by :func:`from_nir`, fires the same
spikes as the peer running the original network on the same input, in every layer.

Tolerance: both peers write time constants for ``dt = 1e-4`` s and compute in float32. The
import reads them back exactly where the arithmetic allows (SpikingJelly's ``τ·dt`` with
``r = 1`` → PLIF ``τ``; snnTorch's ``τ = dt/(1 − β)``, ``r = τ/dt`` → LIF ``decay = 1 − dt/τ``,
which differs from ``β`` by float32 rounding of ``τ``, about 1e-7 relative). Membranes then
agree to about 1e-6, so spikes can differ only where a membrane lies within that of its
threshold; the seeds below have none, and the tests compare every spike exactly (a spike that
flipped would fail them). ``make test`` installs both peers; each test skips, naming the
reason, only where its peer is not importable.
"""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
from torch import nn

from multispike.deploy.nir_import import from_nir
from multispike.neurons import IFNode, LIFNode, Neuron, PLIFNode

pytest.importorskip("nir", reason="NIR import needs the nir package (pip install nir)")
T = 6


def _spikes_by_layer(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every neuron layer's output ``[T, B, ...]`` of our imported model on ``x``."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, a, out, n=name: seen.__setitem__(n, out))
             for name, m in model.named_modules() if isinstance(m, Neuron)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


# -- snnTorch ----------------------------------------------------------------------------------
def _snntorch_net(conv: bool) -> nn.Module:
    snn = pytest.importorskip("snntorch", reason="snnTorch is not installed (make test does)")

    def leaky(shape: tuple[int, ...], beta: float, thr: float, **kw) -> nn.Module:
        # per-neuron tensors: snnTorch 1.0's exporter writes 0-d arrays for scalars, which
        # nir 1.0's type check refuses; "zero" is the hard reset NIR's LIF describes
        return snn.Leaky(beta=torch.full(shape, beta), threshold=torch.full(shape, thr),
                         init_hidden=True, reset_mechanism="zero", **kw)

    torch.manual_seed(0)
    if conv:
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), leaky((4, 8, 8), 0.8, 0.3),
                             nn.AvgPool2d(2), nn.Flatten(), nn.Linear(64, 10),
                             leaky((10,), 0.9, 0.2, output=True))
    return nn.Sequential(nn.Linear(64, 32), leaky((32,), 0.8, 0.3),
                         nn.Linear(32, 10), leaky((10,), 0.5, 0.2, output=True))


def _run_snntorch(net: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The peer's own simulation: T steps of the same input, spikes of every Leaky."""
    import snntorch as snn
    from snntorch import utils

    seen: dict[str, list[torch.Tensor]] = {}

    def keep(name):
        def hook(mod, args, out):
            seen.setdefault(name, []).append(out[0] if isinstance(out, tuple) else out)
        return hook

    hooks = [m.register_forward_hook(keep(n)) for n, m in net.named_modules()
             if isinstance(m, snn.Leaky)]
    utils.reset(net)
    with torch.no_grad():
        for _ in range(T):
            net(x)
    for h in hooks:
        h.remove()
    return {k: torch.stack(v) for k, v in seen.items()}


@pytest.mark.parametrize("conv", [False, True], ids=["linear", "conv"])
def test_snntorch_export_imports_with_the_same_spikes(conv):
    net = _snntorch_net(conv)
    from snntorch.export_nir import export_to_nir

    shape = (1, 1, 8, 8) if conv else (1, 64)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints
        graph = export_to_nir(net, torch.rand(shape), ignore_dims=[0])
    model = from_nir(graph, timesteps=T).eval()  # no metadata: dt = 1e-4, snnTorch's
    assert all(isinstance(m, LIFNode) for m in model.modules() if isinstance(m, Neuron))
    x = torch.rand(5, *shape[1:], generator=torch.Generator().manual_seed(1)) * 2
    ours, theirs = _spikes_by_layer(model, x), _run_snntorch(net, x)
    assert set(ours) == set(theirs)  # node names are the peer's module names
    for name, spikes in theirs.items():
        assert 0 < float(spikes.mean()) < 1, name  # the layer fires: the check means something
        assert torch.equal(ours[name], spikes), name
    lif = model.get_submodule("1")
    assert abs(lif.decay - 0.8) < 1e-6 and lif.v_threshold == pytest.approx(0.3)
    # the check can fail: read with another dt, the same file leaks otherwise
    wrong = _spikes_by_layer(from_nir(graph, timesteps=T, dt=1.5e-4).eval(), x)
    assert any(not torch.equal(wrong[n], s) for n, s in theirs.items())


# -- SpikingJelly ------------------------------------------------------------------------------
def _sj_net(kind: str) -> nn.Module:
    sj = pytest.importorskip("spikingjelly.activation_based",
                             reason="SpikingJelly is not installed (make test does)")
    from spikingjelly.activation_based import functional, layer, neuron

    assert sj is not None
    make = {"lif": lambda: neuron.LIFNode(tau=2.0, v_threshold=0.5),
            "plif": lambda: neuron.ParametricLIFNode(init_tau=3.0, v_threshold=0.5),
            "if": lambda: neuron.IFNode(v_threshold=0.5),
            # an instantaneous synapse (c_decay = 0, tau_syn = dt) reduces to a LIF exactly
            "cuba": lambda: neuron.CUBALIFNode(c_decay=0.0, v_decay=0.75, v_threshold=0.5)}[kind]
    torch.manual_seed(0)
    net = nn.Sequential(layer.Conv2d(1, 4, 3, padding=1), make(), layer.AvgPool2d(2),
                        layer.Flatten(), layer.Linear(64, 10), make())
    with torch.no_grad():
        net[4].weight.mul_(5)  # so that the output layer fires
    functional.set_step_mode(net, "m")
    return net


@pytest.mark.parametrize("kind", ["lif", "plif", "if", "cuba"])
def test_spikingjelly_export_imports_with_the_same_spikes(kind):
    net = _sj_net(kind)
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.nir_exchange import export_to_nir

    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 3
    seq = x.unsqueeze(0).expand(T, *x.shape)
    graph = export_to_nir(net, seq)
    model = from_nir(graph, timesteps=T).eval()
    # SJ's LIF charges as our PLIF; its CUBALIF with c_decay = 0 as our LIF (decay = v_decay)
    want = {"lif": PLIFNode, "plif": PLIFNode, "if": IFNode, "cuba": LIFNode}[kind]
    assert all(isinstance(m, want) for m in model.modules() if isinstance(m, Neuron))
    theirs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, a, out, n=name: theirs.__setitem__(n, out))
             for name, m in net.named_modules() if name in ("1", "5")]
    functional.reset_net(net)
    with torch.no_grad():
        net(seq)
    for h in hooks:
        h.remove()
    ours = _spikes_by_layer(model, x)
    assert set(ours) == {"_1", "_5"}  # nirtorch names the peer's modules "_<index>"
    for name, spikes in theirs.items():
        assert 0 < float(spikes.mean()) < 1, name
        assert torch.equal(ours[f"_{name}"], spikes), name
