"""An addition-only, event-driven executor with exact synaptic-operation counts.

:class:`AdditionOnlyExecutor` runs a deployed model (after
:func:`~multispike.deploy.fold_amplitudes`, optionally :func:`~multispike.deploy.split_planes`)
the way neuromorphic hardware would: after the encoder, no activation is ever multiplied by a
weight. Spikes are decomposed into unit events (a spike ``b`` is ``|b|`` events of its sign:
the plane spikes of MT-SNN Eq 12), and each event adds (``+1``) or subtracts (``−1``) the
weight column it addresses into the output currents. :class:`ExecutionReport` holds the output
and the exact counts (``sops``, ``events``, ``dense_macs`` per layer, ``encoder_macs``,
``bias_adds``, ``residual_adds``). It runs where the model lives, CPU or GPU, and is slow: it
exists to prove the multiplication-free claim and to measure exact operation counts.

How each layer scatters its events and what each count means: ``docs/deploy.md`` § The
addition-only executor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multispike.deploy.fold import per_step_affine
from multispike.deploy.graph import Node, trace
from multispike.deploy.wrappers import unwrap
from multispike.errors import ConfigError
from multispike.layers import BatchNormPerStep, fold_time
from multispike.models.profile import conv_macs, linear_macs

#: largest number of floats a gathered block of weight columns may hold (memory bound)
CHUNK = 1 << 22


@dataclass
class ExecutionReport:
    """What one :meth:`AdditionOnlyExecutor.run` computed and counted (the fields:
    ``docs/deploy.md`` § The addition-only executor)."""

    output: Tensor
    sops: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    dense_macs: dict[str, int] = field(default_factory=dict)
    encoder_macs: int = 0
    bias_adds: int = 0
    residual_adds: int = 0
    timesteps: int = 0
    batch: int = 0

    @property
    def total_sops(self) -> int:
        return sum(self.sops.values())

    @property
    def total_dense_macs(self) -> int:
        return sum(self.dense_macs.values())

    def summary(self) -> dict[str, Any]:
        """Plain numbers (JSON-friendly), totals and per layer."""
        return {
            "timesteps": self.timesteps,
            "batch": self.batch,
            "total_sops": self.total_sops,
            "total_dense_macs": self.total_dense_macs,
            "encoder_macs": self.encoder_macs,
            "bias_adds": self.bias_adds,
            "residual_adds": self.residual_adds,
            "layers": {
                k: {"sops": v, "events": self.events[k], "dense_macs": self.dense_macs[k]}
                for k, v in self.sops.items()
            },
        }


@dataclass
class _Events:
    """Unit spike events: sample-step row ``n = t·B + b``, position, sign, pooling weight."""

    n: Tensor  # [E] long
    pos: Tensor  # [E, d] long: (c, i, j) or (f,)
    positive: Tensor  # [E] bool
    coef: Tensor  # [E] float64: product of pooling weights 1/n along the way
    shape: tuple[int, ...]  # per-sample shape the positions index


@dataclass
class _Spikes:
    """A spike stream (integer values ``[T, B, ...]``) and pending linear pass-through ops."""

    values: Tensor
    chain: tuple[Node, ...] = ()


@dataclass
class _Analog:
    """The analog input image (only the encoder may read it)."""

    x: Tensor


class AdditionOnlyExecutor:
    """Event-driven, accumulate-only execution of a deployed model.

    A spike ``b`` is ``|b|`` unit events of its sign (an MT spike's events are its plane spikes,
    MT-SNN Eq 12); each event adds its weight column into the output currents.

    Args:
        model: a deployed zoo model: every amplitude folded and every ``fold``/``tdbn`` BN
            folded (:func:`~multispike.deploy.fold_amplitudes`); per-step BN is fused into one
            weight table per step; plane-split models are accepted.

    Raises :class:`~multispike.errors.ConfigError` if the model is not deployed or a layer
    after the encoder reads real values (it would need multiplications).

    Example::

        >>> import torch
        >>> from multispike.deploy import AdditionOnlyExecutor, fold_amplitudes
        >>> from multispike.deploy.testing import exercise
        >>> from multispike.models import create
        >>> images = torch.rand(2, 1, 8, 8, dtype=torch.float64)
        >>> model = exercise(create("digits_net", firing="ternary").double(), images)
        >>> ex = AdditionOnlyExecutor(fold_amplitudes(model))
        >>> report = ex.run(images)
        >>> torch.allclose(report.output, model(images))   # the model's output, up to rounding
        True
        >>> sorted(report.sops), report.total_sops == sum(report.sops.values())
        (['fc1', 'features.0.conv', 'head.fc'], True)
        >>> 0 < report.sops["features.0.conv"] < report.dense_macs["features.0.conv"]
        True
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval()
        self.graph = trace(model)
        self._fused: dict[str, str] = {}  # per-step norm node -> the conv it is fused into
        self._tables: dict[tuple[Any, ...], Tensor] = {}
        #: each neuron node's layer, learned thresholds fixed as constants
        self._neurons: dict[str, nn.Module] = {}
        for node in self.graph:
            if node.op == "neuron":
                neuron = unwrap(node.module)
                if neuron.amplitude is not None:
                    raise ConfigError(
                        f"neuron {node.name} still has an amplitude: its spikes are not ±1, so "
                        "the executor cannot add plain weights; run fold_amplitudes(model) first"
                    )
                self._neurons[node.name] = neuron.fixed() if neuron.learn_thresholds else neuron
            if node.op == "norm":
                self._check_norm(node)

    def _check_norm(self, node: Node) -> None:
        (src,) = node.inputs
        prev = self.graph[src]
        if not isinstance(node.module, BatchNormPerStep):
            raise ConfigError(
                f"BN {node.name} is not folded; run fold_amplitudes(model) (or fold_batchnorm) "
                "before the addition-only executor"
            )
        if prev.op not in ("conv", "linear") or len(self.graph.consumers(src)) != 1:
            raise ConfigError(f"per-step BN {node.name} does not follow one convolution")
        if prev.inputs != ("input",):
            self._fused[node.name] = src

    # -- running ---------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, x: Tensor) -> ExecutionReport:
        """Run on ``x`` (``[B, C, H, W]`` or ``[T, B, C, H, W]``) and count every operation."""
        model = self.model
        model.check_input(x)
        p = next(model.parameters(), None)
        if p is not None and x.device != p.device:
            raise ConfigError(
                f"the input is on {x.device} but the model on {p.device}; move one of them "
                f"(x.to({str(p.device)!r}))"
            )
        steps = model.timesteps
        batch = x.shape[0] if x.dim() == 4 else x.shape[1]
        rep = ExecutionReport(output=x, timesteps=steps, batch=batch)
        values: dict[str, Any] = {}
        for node in self.graph:
            values[node.name] = self._node(node, values, x, rep)
        out = values["output"]
        assert isinstance(out, Tensor)
        rep.output = out
        return rep

    @torch.no_grad()
    def verify(self, x: Tensor) -> tuple[ExecutionReport, float]:
        """:meth:`run` and the largest absolute difference from the dense ``model(x)``."""
        rep = self.run(x)
        dense = self.model(x)
        return rep, float((rep.output - dense).abs().max())

    def _node(self, node: Node, values: dict[str, Any], x: Tensor, rep: ExecutionReport
              ) -> Any:
        op = node.op
        if op == "input":
            return _Analog(x)
        if op in ("conv", "linear"):
            (src,) = node.inputs
            v = values[src]
            if isinstance(v, _Analog):
                return self._encoder(node, v.x, rep)
            if not isinstance(v, _Spikes):
                raise ConfigError(
                    f"{node.name} reads real-valued currents, not spikes: it would need "
                    "multiplications, so the model is not addition-only after its encoder"
                )
            return self._synapses(node, v, rep)
        if op == "norm":
            (src,) = node.inputs
            if node.name in self._fused:
                return values[src]
            return node.module(values[src])  # the encoder's per-step BN (dense, affine)
        if op == "neuron":
            current = self._currents(node, values, rep)
            out = self._neurons[node.name](current)
            if not torch.equal(out, out.round()):
                raise ConfigError(
                    f"neuron {node.name} emits non-integer values; fold its amplitude first"
                )
            return _Spikes(out)
        if op == "maxpool":
            v = self._spikes(node, values)
            if v.chain:
                raise ConfigError(f"{node.name} max-pools averaged spikes; not supported")
            pool = unwrap(node.module)
            return _Spikes(fold_time(pool, v.values))  # comparisons only: still spikes
        if op in ("avgpool", "gap", "flatten"):
            v = self._spikes(node, values)
            return _Spikes(v.values, v.chain + (node,))
        if op == "merge":
            return values[node.inputs[0]]  # spike values already merged (events per plane)
        if op == "sum":
            return self._currents(node, values, rep)
        if op == "vote":
            v = self._spikes(node, values)
            if v.chain:  # pragma: no cover - the zoo votes on raw spikes
                raise ConfigError(f"{node.name} votes on pooled spikes; not supported")
            return unwrap(node.module)(v.values)
        if op == "output":
            (src,) = node.inputs
            v = values[src]
            if isinstance(v, _Spikes):
                raise ConfigError("the model output is a spike stream; not supported")
            return v
        raise RuntimeError(f"unknown op {op}")  # pragma: no cover

    def _spikes(self, node: Node, values: dict[str, Any]) -> _Spikes:
        (src,) = node.inputs
        v = values[src]
        if not isinstance(v, _Spikes):
            raise ConfigError(f"{node.name} reads currents, not spikes; not supported")
        return v

    def _currents(self, node: Node, values: dict[str, Any], rep: ExecutionReport) -> Tensor:
        """The summed input currents of a neuron or sum node; spike inputs via identity."""
        dense = [values[s] for s in node.inputs if isinstance(values[s], Tensor)]
        spikes = [values[s] for s in node.inputs if isinstance(values[s], _Spikes)]
        if not dense:
            raise ConfigError(f"{node.name} receives spikes only; not supported")
        total = dense[0].clone()
        for d in dense[1:]:
            total += d
            rep.residual_adds += d.numel()
        for v in spikes:
            self._identity(f"{node.name}.identity", v, total, rep)
        return total

    # -- encoder ---------------------------------------------------------------------------
    def _encoder(self, node: Node, x: Tensor, rep: ExecutionReport) -> Tensor:
        layer = unwrap(node.module)
        if not isinstance(layer, nn.Conv2d):
            raise ConfigError(f"encoder {node.name} is not a convolution")
        steps = self.model.timesteps
        if x.dim() == 4:  # static image: once for all steps, broadcast (as the model does)
            y = layer(x)
            rep.encoder_macs += conv_macs(layer, y.shape)
            return y.unsqueeze(0).expand(steps, *y.shape)
        y = fold_time(layer, x)
        rep.encoder_macs += conv_macs(layer, y.shape)
        return y

    # -- events ----------------------------------------------------------------------------
    def _events(self, v: _Spikes) -> _Events:
        values = v.values
        batch = values.shape[1]
        idx = values.nonzero()
        vals = values[tuple(idx.T)]
        k = vals.abs().round().long()  # value k = k unit events (MT / thermometer planes)
        idx = idx.repeat_interleave(k, 0)
        positive = (vals > 0).repeat_interleave(k)
        ev = _Events(
            n=idx[:, 0] * batch + idx[:, 1],
            pos=idx[:, 2:],
            positive=positive,
            coef=torch.ones(len(idx), dtype=torch.float64, device=idx.device),
            shape=tuple(values.shape[2:]),
        )
        for node in v.chain:
            ev = _pass(node, ev)
        return ev

    def _synapses(self, node: Node, v: _Spikes, rep: ExecutionReport) -> Tensor:
        ev = self._events(v)
        rep.events[node.name] = int(v.values.abs().sum())
        steps, batch = v.values.shape[:2]
        per_step = self._per_step(node)
        if node.op == "conv":
            layer = unwrap(node.module)
            out, sops = self._scatter_conv(node.name, layer, ev, steps * batch, batch, per_step)
        else:
            layer = unwrap(node.module)
            out, sops = self._scatter_linear(node.name, layer, ev, steps * batch, batch, per_step)
        rep.sops[node.name] = sops
        rep.dense_macs[node.name] = (
            conv_macs(layer, out.shape) if node.op == "conv"
            else linear_macs(layer, out.numel() // layer.out_features)
        )
        bias = self._bias(layer, per_step, out, batch)
        if bias is not None:
            out += bias
            rep.bias_adds += out.numel()
        return out.unflatten(0, (steps, batch))

    def _per_step(self, node: Node) -> list[tuple[Tensor, Tensor]] | None:
        for norm, src in self._fused.items():
            if src == node.name:
                return per_step_affine(self.graph[norm].module)
        return None

    def _bias(self, layer: nn.Module, per_step: list[tuple[Tensor, Tensor]] | None,
              out: Tensor, batch: int) -> Tensor | None:
        """Bias of every output row (``[N, C', ...]``), per step when BN is per step."""
        view = (1, -1) + (1,) * (out.dim() - 2)
        if per_step is None:
            return None if layer.bias is None else layer.bias.view(view)
        steps = out.shape[0] // batch
        b0 = torch.zeros_like(per_step[0][0]) if layer.bias is None else layer.bias.double()
        rows = []
        for t in range(steps):
            scale, shift = per_step[min(t, len(per_step) - 1)]
            rows.append((b0 * scale + shift).to(out.dtype).view(view))
        return torch.cat(rows).repeat_interleave(batch, 0)

    def _table(self, key: tuple[Any, ...], weight: Tensor, coef: float, positive: bool,
               scale: Tensor | None) -> Tensor:
        """Weight columns, pre-scaled by the pooling weight, sign and per-step BN scale.

        ``weight`` is laid out input-major (``[C_in, kh, kw, C_out]`` or ``[F_in, F_out]``):
        one event gathers one row and adds it. Built once per (layer, weight, sign, step).
        """
        key = key + (coef, positive, weight.device, weight.dtype)
        table = self._tables.get(key)
        if table is None:
            w = weight.double()
            if scale is not None:
                w = w * scale  # output channel is the last axis
            w = w * coef if positive else w * -coef
            table = w.to(weight.dtype).contiguous()
            self._tables[key] = table
        return table

    def _groups(self, ev: _Events, batch: int, per_step: list | None
                ) -> list[tuple[Tensor, float, bool, int | None]]:
        """Split events by (pooling weight, sign, step): each group shares one weight table."""
        groups = []
        coefs, inverse = torch.unique(ev.coef, return_inverse=True)
        steps = (ev.n // batch) if per_step is not None else None
        for ci, coef in enumerate(coefs.tolist()):
            for positive in (True, False):
                mask = (inverse == ci) & (ev.positive == positive)
                if per_step is None:
                    if bool(mask.any()):
                        groups.append((mask, coef, positive, None))
                    continue
                assert steps is not None
                for t in torch.unique(steps[mask]).tolist():
                    groups.append((mask & (steps == t), coef, positive, min(t, len(per_step) - 1)))
        return groups

    def _scatter_conv(self, name: str, conv: nn.Conv2d, ev: _Events, rows: int, batch: int,
                      per_step: list | None) -> tuple[Tensor, int]:
        if conv.groups != 1:
            raise ConfigError(f"{name}: grouped convolutions are not supported by the executor")
        _cin, h, w = ev.shape
        (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
        (ph, pw), (dh, dw) = _pair(conv.padding, name), conv.dilation
        ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        cout = conv.out_channels
        weight = conv.weight.permute(1, 2, 3, 0)  # [C_in, kh, kw, C_out]
        out = conv.weight.new_zeros(rows * ho * wo, cout)
        sops = 0
        for mask, coef, positive, t in self._groups(ev, batch, per_step):
            scale = None if t is None else per_step[t][0]
            table = self._table((name, t), weight, coef, positive, scale)
            n, c, i, j = ev.n[mask], ev.pos[mask, 0], ev.pos[mask, 1], ev.pos[mask, 2]
            for u in range(kh):
                ri = i + ph - u * dh
                oi = torch.div(ri, sh, rounding_mode="floor")
                ok_i = (ri % sh == 0) & (oi >= 0) & (oi < ho)
                for v in range(kw):
                    rj = j + pw - v * dw
                    oj = torch.div(rj, sw, rounding_mode="floor")
                    ok = ok_i & (rj % sw == 0) & (oj >= 0) & (oj < wo)
                    target = ((n * ho + oi) * wo + oj)[ok]
                    src = c[ok]
                    sops += _index_add(out, target, table[:, u, v], src)
        out = out.view(rows, ho, wo, cout).permute(0, 3, 1, 2).contiguous()
        return out, sops

    def _scatter_linear(self, name: str, linear: nn.Linear, ev: _Events, rows: int, batch: int,
                        per_step: list | None) -> tuple[Tensor, int]:
        weight = linear.weight.t()  # [F_in, F_out]
        out = linear.weight.new_zeros(rows, linear.out_features)
        sops = 0
        for mask, coef, positive, t in self._groups(ev, batch, per_step):
            scale = None if t is None else per_step[t][0]
            table = self._table((name, t), weight, coef, positive, scale)
            sops += _index_add(out, ev.n[mask], table, ev.pos[mask, 0])
        return out, sops

    def _identity(self, name: str, v: _Spikes, total: Tensor, rep: ExecutionReport) -> None:
        """Identity shortcut: every event adds ±(pooling weight) to one current."""
        ev = self._events(v)
        flat = total.view(-1)
        per_sample = math.prod(ev.shape)
        strides = ev.pos.new_tensor(_strides(ev.shape))
        index = ev.n * per_sample + (ev.pos * strides).sum(1)
        # ±coef are constants of the network (1, or 1/n after average pooling)
        amount = torch.where(ev.positive, ev.coef, -ev.coef).to(total.dtype)
        flat.index_add_(0, index, amount)
        rep.sops[name] = rep.sops.get(name, 0) + len(index)
        rep.events[name] = rep.events.get(name, 0) + int(v.values.abs().sum())
        rep.dense_macs[name] = rep.dense_macs.get(name, 0) + total.numel()


def _index_add(out: Tensor, rows: Tensor, table: Tensor, src: Tensor) -> int:
    """``out[rows[e]] += table[src[e]]`` for every event ``e``; returns the additions made."""
    width = out.shape[1]
    step = max(1, CHUNK // max(1, width))
    for k in range(0, len(rows), step):
        out.index_add_(0, rows[k:k + step], table[src[k:k + step]])
    return len(rows) * width


def _pass(node: Node, ev: _Events) -> _Events:
    """Push events through average pooling, global average pooling or flattening."""
    if node.op == "flatten":
        strides = ev.pos.new_tensor(_strides(ev.shape))
        f = (ev.pos * strides).sum(1, keepdim=True)
        return _Events(ev.n, f, ev.positive, ev.coef, (math.prod(ev.shape),))
    c, h, w = ev.shape
    if node.op == "gap":
        return _Events(ev.n, ev.pos[:, :1], ev.positive, ev.coef / (h * w), (c,))
    pool = node.module
    assert isinstance(pool, nn.AvgPool2d)
    (kh, kw), (sh, sw), (ph, pw) = (_pair(a, node.name) for a in
                                    (pool.kernel_size, pool.stride or pool.kernel_size,
                                     pool.padding))
    ones = torch.ones(1, 1, h, w, dtype=torch.float64, device=ev.coef.device)
    avg = pool(ones)[0, 0]
    total = F.avg_pool2d(ones, (kh, kw), (sh, sw), (ph, pw), pool.ceil_mode, True, 1)[0, 0]
    weight = avg / total  # 1/n of each pooled cell: avg of ones = count/n, sum of ones = count
    ho, wo = avg.shape
    parts: list[_Events] = []
    i, j = ev.pos[:, 1], ev.pos[:, 2]
    for u in range(kh):
        qi_num = i + ph - u
        qi = torch.div(qi_num, sh, rounding_mode="floor")
        ok_i = (qi_num % sh == 0) & (qi >= 0) & (qi < ho)
        for v in range(kw):
            qj_num = j + pw - v
            qj = torch.div(qj_num, sw, rounding_mode="floor")
            ok = ok_i & (qj_num % sw == 0) & (qj >= 0) & (qj < wo)
            if not bool(ok.any()):
                continue
            pos = torch.stack([ev.pos[ok, 0], qi[ok], qj[ok]], 1)
            parts.append(_Events(ev.n[ok], pos, ev.positive[ok],
                                 ev.coef[ok] * weight[qi[ok], qj[ok]], (c, ho, wo)))
    if not parts:
        return _Events(ev.n[:0], ev.pos.new_zeros(0, 3), ev.positive[:0], ev.coef[:0],
                       (c, ho, wo))
    return _Events(
        torch.cat([p.n for p in parts]),
        torch.cat([p.pos for p in parts]),
        torch.cat([p.positive for p in parts]),
        torch.cat([p.coef for p in parts]),
        (c, ho, wo),
    )


def _strides(shape: tuple[int, ...]) -> list[int]:
    out, acc = [], 1
    for s in reversed(shape):
        out.insert(0, acc)
        acc *= s
    return out


def _pair(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, str):
        raise ConfigError(f"{name}: padding {value!r} is not supported; use integer padding")
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


def run_addition_only(model: nn.Module, x: Tensor) -> tuple[ExecutionReport, float]:
    """Convenience: ``AdditionOnlyExecutor(model).verify(x)``."""
    return AdditionOnlyExecutor(model).verify(x)
