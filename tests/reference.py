"""Reference loops written directly from the papers' equations, element by element in spirit.

They share no code with multispike: each loop spells its equation out so that the library's
vectorised, composable version can be compared against it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def theta(x: Tensor) -> Tensor:
    """MT-SNN Eq 4: 1 where x >= 0."""
    return torch.where(x >= 0, torch.ones_like(x), torch.zeros_like(x))


def plif_mt_reference(x: Tensor, tau: Tensor, v_th: float, deltas=()) -> Tensor:
    """MT-SNN Eq 8, 2, 10, 11, 3 with V_reset = 0; deltas=() is the single-threshold PLIF."""
    v = torch.zeros_like(x[0])
    outs = []
    for t in range(x.shape[0]):
        h = (1 - 1 / tau) * v + x[t] / tau  # Eq 8
        s = theta(h - v_th)  # Eq 2
        s_sum = s.clone()
        for d in deltas:
            s_sum = s_sum + theta(h - v_th - d)  # Eq 10, 11
        v = torch.where(s == 1, torch.zeros_like(h), h)  # Eq 3, V_reset = 0
        outs.append(s_sum)
    return torch.stack(outs)


def lif_ternary_reference(x: Tensor, decay: float, v_th: float, a: float = 1.0) -> Tensor:
    """Ternary Spike Eq 7-8 (and 13-14 with amplitude a)."""
    u_prev = torch.zeros_like(x[0])
    b_prev = torch.zeros_like(x[0])
    outs = []
    for t in range(x.shape[0]):
        u = decay * u_prev * (1 - b_prev.abs()) + x[t]  # Eq 7 / 13
        b = torch.zeros_like(u)
        b[u >= v_th] = 1.0  # Eq 8
        b[u <= -v_th] = -1.0
        outs.append(a * b)  # Eq 14
        u_prev, b_prev = u, b
    return torch.stack(outs)


def lif_binary_reference(x: Tensor, decay: float, v_th: float) -> Tensor:
    """Ternary Spike Eq 4-5 (the vanilla binary LIF)."""
    u_prev = torch.zeros_like(x[0])
    o_prev = torch.zeros_like(x[0])
    outs = []
    for t in range(x.shape[0]):
        u = decay * u_prev * (1 - o_prev) + x[t]
        o = theta(u - v_th)
        outs.append(o)
        u_prev, o_prev = u, o
    return torch.stack(outs)


def if_reference(x: Tensor, v_th: float) -> Tensor:
    """MT-SNN Eq 5, 2, 3."""
    v = torch.zeros_like(x[0])
    outs = []
    for t in range(x.shape[0]):
        h = v + x[t]
        s = theta(h - v_th)
        v = torch.where(s == 1, torch.zeros_like(h), h)
        outs.append(s)
    return torch.stack(outs)


def ternary_mt_reference(x: Tensor, decay: float, v_th: float, deltas) -> Tensor:
    """Ternary + multi-threshold: symmetric thresholds ±(V_th + Δi), reset by ±V_th."""
    v = torch.zeros_like(x[0])
    outs = []
    for t in range(x.shape[0]):
        h = decay * v + x[t]
        b = torch.zeros_like(h)
        for th in (v_th, *(v_th + d for d in deltas)):
            b = b + theta(h - th) - theta(-h - th)
        main = (h >= v_th) | (h <= -v_th)
        v = torch.where(main, torch.zeros_like(h), h)
        outs.append(b)
    return torch.stack(outs)


def reset_choice_reference(
    x: Tensor, v_th: float, deltas=(), *, signed: bool = False, reset: str = "main",
    decay: float = 1.0, tau: float | None = None, v_reset: float = 0.0,
) -> Tensor:
    """Every rule with every reset choice (issue #15 point 3), neuron by neuron.

    Charge ``H = decay·V + X`` (IF: decay 1; LIF), or with ``tau`` PLIF with V_reset = 0,
    ``H = (1 − 1/τ)·V + X/τ`` (MT-SNN Eq 8). Thresholds ``θ_0 = V_th``, ``θ_i = V_th + Δi``;
    ``b`` counts the ``θ_k`` with ``H >= θ_k`` (minus those with ``H <= −θ_k`` when
    ``signed``). Reset:

    - ``"main"``: ``V = V_reset`` where ``H >= V_th`` (or ``H <= −V_th``), else ``H``
      (MT-SNN Eq 3);
    - ``"any"``: ``V = V_reset`` where ``b != 0``, i.e. some threshold fired (Ternary Eq 7);
    - ``"soft"``: ``V = H − b·V_th``.
    """
    thresholds = [v_th] + [v_th + d for d in deltas]
    xs = x.reshape(x.shape[0], -1).tolist()
    v = [v_reset] * len(xs[0])
    outs = []
    for row in xs:
        out_row = []
        for i, xi in enumerate(row):
            if tau is None:
                h = decay * v[i] + xi
            else:
                h = (1 - 1 / tau) * v[i] + xi / tau
            b = sum(1 for th in thresholds if h >= th)
            if signed:
                b -= sum(1 for th in thresholds if h <= -th)
            if reset == "soft":
                v[i] = h - b * v_th
            elif reset == "main":
                main = h >= v_th or (signed and h <= -v_th)
                v[i] = v_reset if main else h
            else:
                v[i] = v_reset if b != 0 else h
            out_row.append(float(b))
        outs.append(out_row)
    return torch.tensor(outs, dtype=x.dtype).reshape(x.shape)


# -- integer spikes and learned thresholds (issue #15 points 1 and 2) ---------------------------
def _charge(v, xi, decay, tau):
    return decay * v + xi if tau is None else (1 - 1 / tau) * v + xi / tau


def integer_reference(
    x: Tensor, v_th: float, levels: int, *, signed: bool = False, reset: str = "soft",
    decay: float = 1.0, tau: float | None = None, v_reset: float = 0.0,
) -> Tensor:
    """SpikeYOLO's I-LIF, neuron by neuron: ``b = round(clamp(H/V_th, 0, D))`` (signed:
    ``sign(H)·round(clamp(|H|/V_th, 0, D))``), Python's ``round`` (half to even).

    Reset ``"soft"``: ``V = H − b·V_th``; ``"main"``: ``V = V_reset`` where ``H >= V_th`` (or
    ``H <= −V_th``); ``"any"``: ``V = V_reset`` where ``b != 0``. Charge as in
    :func:`reset_choice_reference`.
    """
    xs = x.reshape(x.shape[0], -1).tolist()
    v = [v_reset] * len(xs[0])
    outs = []
    for row in xs:
        out_row = []
        for i, xi in enumerate(row):
            h = _charge(v[i], xi, decay, tau)
            u = h / v_th
            mag = float(round(min(max(abs(u) if signed else u, 0.0), levels)))
            b = -mag if signed and u < 0 else mag
            if reset == "soft":
                v[i] = h - b * v_th
            elif reset == "main":
                v[i] = v_reset if (h >= v_th or (signed and h <= -v_th)) else h
            else:
                v[i] = v_reset if b != 0 else h
            out_row.append(b)
        outs.append(out_row)
    return torch.tensor(outs, dtype=x.dtype).reshape(x.shape)


def ste(x: Tensor, width: float = 1.0) -> Tensor:
    """MT-SNN Eq 4 forward, Eq 9 backward: ``Θ(x)`` with gradient ``(1/a)·1(|x| <= a/2)``
    (the derivative of ``clamp(x/a + 1/2, 0, 1)``)."""
    p = torch.clamp(x / width + 0.5, 0.0, 1.0)
    return theta(x).detach() + (p - p.detach())


def straight_through_reference(
    x: Tensor, thresholds, *, main: int = 0, signed: bool = False, reset: str = "main",
    decay: float = 1.0, detach_reset: bool = False, levels: int | None = None,
    v_reset: float = 0.0,
) -> Tensor:
    """Differentiable loop from the equations, thresholds given as (learnable) tensors.

    ``thresholds``: ascending positive thresholds, ``V_th = thresholds[main]``. Threshold rules:
    ``b = Σ_k Θ(H − θ_k) (− Θ(−H − θ_k))`` through :func:`ste`. Integer rules (``levels=D``):
    ``u = H/V_th``, ``b = round(clamp(u, lo, D))`` with ``db/du = 1(lo <= u <= D)``.
    Resets: ``"soft"`` ``V = H − b·V_th``; ``"main"`` ``S = Θ(H − V_th) (+ Θ(−H − V_th))``;
    ``"any"``: threshold rules ``S`` at the lowest threshold, integer rules ``S = [b != 0]``
    with the gradient of ``Θ`` at ``±V_th/2``; hard ``V = H·(1 − S) + V_reset·S``.
    ``detach_reset`` detaches ``S`` (hard) or ``b`` (soft) in the reset.
    """
    v_th = thresholds[main]
    v = torch.full_like(x[0], v_reset)
    outs = []
    for t in range(x.shape[0]):
        h = decay * v + x[t]
        if levels is None:
            b = sum(ste(h - th) for th in thresholds)
            if signed:
                b = b - sum(ste(-h - th) for th in thresholds)
        else:
            u = h / v_th
            lo = -levels if signed else 0
            hard = torch.round(torch.clamp(u, lo, levels))
            b = hard.detach() + ((u >= lo) & (u <= levels)).to(u.dtype) * (u - u.detach())
        if reset == "soft":
            v = h - (b.detach() if detach_reset else b) * v_th
        else:
            if levels is None:
                th_r = v_th if reset == "main" else thresholds[0]
                s = ste(h - th_r) + (ste(-h - th_r) if signed else 0)
            elif reset == "main":
                s = ste(h - v_th) + (ste(-h - v_th) if signed else 0)
            else:
                g = ste(h - v_th / 2) + (ste(-h - v_th / 2) if signed else 0)
                s = (b != 0).to(h.dtype).detach() + (g - g.detach())
            if detach_reset:
                s = s.detach()
            v = h * (1 - s) + v_reset * s
        outs.append(b)
    return torch.stack(outs)
