"""The neuron slots of a model: the model-level firing names and :class:`NeuronFactory`.

A model names its firing once (a rule of :data:`~multispike.functional.FIRING_RULES`, or
``"ann"`` for the ANN twin, :data:`FIRINGS`) and its neuron options once; the factory builds
every neuron of the model from them (conv, FC and output slots) and refuses options the
neuron class does not take (:func:`check_neuron_options`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from multispike.errors import ConfigError
from multispike.functional.firing import FIRING_RULES, check_rule_options, firing_key
from multispike.neurons import Neuron, get_neuron_class

__all__ = [
    "ANN",
    "FIRINGS",
    "INTEGER_FIRINGS",
    "MT_FIRINGS",
    "NeuronFactory",
    "check_neuron_options",
    "model_firing",
    "neuron_option_names",
]

#: the ANN twin's firing name: ReLU in every neuron slot, no spikes
ANN = "ann"
#: model-level firing names: the rules' (:data:`~multispike.functional.FIRING_RULES`) and
#: the ANN twin's
FIRINGS: tuple[str, ...] = (*FIRING_RULES, ANN)
#: the firing rules that take ``deltas`` (the MT rules) and ``levels`` (the integer rules),
#: as the rules say
MT_FIRINGS: tuple[str, ...] = tuple(k for k, c in FIRING_RULES.items() if c.accepts("deltas"))
INTEGER_FIRINGS: tuple[str, ...] = tuple(
    k for k, c in FIRING_RULES.items() if c.accepts("levels"))
_MODEL_LEVEL = {"firing", "check_input", "self"}


def model_firing(name: str, where: str = "") -> str:
    """A model's firing name in its one spelling: a rule's, or ``"ann"``."""
    return firing_key(name, extra=(ANN,), where=where)


def check_neuron_options(cls: type[Neuron], options: Mapping[str, Any], *,
                         where: str = "", model_options: Sequence[str] = ()) -> None:
    """Refuse keyword options ``cls`` does not take, in one line listing the ones it does
    (and the model's, where a model passes them along)."""
    allowed = neuron_option_names(cls)
    bad = sorted(set(options) - allowed)
    if not bad:
        return
    if model_options:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(bad)}; model options: "
                          f"{', '.join(model_options)}; {cls.__name__} options: "
                          f"{', '.join(sorted(allowed))}")
    raise ConfigError(f"unknown neuron option(s) {', '.join(bad)} for {cls.__name__}; "
                      f"choose from {', '.join(sorted(allowed))}")


def neuron_option_names(cls: type[Neuron]) -> set[str]:
    """Keyword options a neuron class takes (its own and the base :class:`Neuron` ones)."""
    names: set[str] = set()
    for klass in (cls, Neuron):
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                names.add(p.name)
    return names - _MODEL_LEVEL


class NeuronFactory:
    """Builds every neuron slot of a model, so the per-layer choice lives in one place.

    Three kinds of slot:

    - ``conv()``: after each conv-BN (the MT-SNN "convolution layers");
    - ``fc()``: after the hidden fully-connected layer; with ``mt_on_fc=False`` the MT rules
      fall back to their single-threshold form there (``mt → binary``, ``ternary-mt →
      ternary``; MT-SNN Fig 5a/b ablation). The integer rules (``integer``,
      ``signed-integer``) have no single-threshold form to fall back to: they keep their rule
      and ``levels`` on every slot, as SpikeYOLO's I-LIF does;
    - ``out()``: the output neuron before the voting layer (output mode B); an FC slot.

    With ``firing="ann"`` every hidden slot is ``nn.ReLU`` (the ANN twin), the output slot is
    the identity (logits stay signed), and neuron options are ignored. Neurons are built with
    ``check_input=False``: the model checks its input once.

    ``options`` are the neuron class's keyword arguments (``deltas``, ``levels``,
    ``learn_thresholds``, ``reset``, ``learn_amplitude``, ``surrogate``, ``surrogate_width``,
    ``surrogate_alpha``, ``v_threshold``, ...: whatever its ``__init__`` and
    :class:`~multispike.neurons.Neuron`'s take, see :func:`neuron_option_names`), passed to
    every slot unchanged, except ``deltas`` (MT slots only) and ``levels`` (integer slots
    only). ``deltas`` with a rule other than the MT ones, or ``levels`` with a rule other
    than the integer ones, is a one-line :class:`ConfigError`.

    >>> f = NeuronFactory("lif", "integer", options={"levels": 3, "learn_thresholds": True})
    >>> node = f.fc()
    >>> node.rule, node.reset, node.learn_thresholds
    (Integer(levels=3), 'soft', True)
    """

    def __init__(
        self,
        neuron: str | type[Neuron] = "plif",
        firing: str = "binary",
        *,
        mt_on_fc: bool = False,
        options: dict[str, Any] | None = None,
    ) -> None:
        key = model_firing(firing)
        self.cls = get_neuron_class(neuron)
        self.firing = key
        self.mt_on_fc = bool(mt_on_fc)
        #: the neuron keyword options every slot receives (``deltas`` only where MT applies)
        self.neuron_args = dict(options or {})
        check_neuron_options(self.cls, self.neuron_args)
        if key != ANN:
            check_rule_options(key, deltas=self.neuron_args.get("deltas"),
                               levels=self.neuron_args.get("levels"))
        #: firing threshold of the neurons (1.0 for the ANN twin); tdBN scales by it
        self.v_threshold = 1.0
        if not self.is_ann:
            self.v_threshold = self._make(self.firing).v_threshold  # validates the options

    @property
    def is_ann(self) -> bool:
        return self.firing == ANN

    def fc_firing(self) -> str:
        """The firing rule of FC slots: MT rules lose their extra thresholds unless mt_on_fc."""
        if self.mt_on_fc or self.is_ann:
            return self.firing
        return FIRING_RULES[self.firing].single_threshold or self.firing

    def options_for(self, firing: str) -> dict[str, Any]:
        """The neuron options of a slot with ``firing``: the rule options (``deltas``,
        ``levels``) only where the rule takes them."""
        rule = FIRING_RULES[firing]
        return {k: v for k, v in self.neuron_args.items()
                if k not in ("deltas", "levels") or rule.accepts(k)}

    def _make(self, firing: str) -> Neuron:
        return self.cls(firing=firing, check_input=False, **self.options_for(firing))

    def conv(self) -> nn.Module:
        """A neuron after a conv-BN (ReLU for the ANN twin)."""
        return nn.ReLU() if self.is_ann else self._make(self.firing)

    def fc(self) -> nn.Module:
        """A neuron after the hidden FC layer (ReLU for the ANN twin)."""
        return nn.ReLU() if self.is_ann else self._make(self.fc_firing())

    def out(self) -> nn.Module:
        """The output neuron before voting (identity for the ANN twin)."""
        return nn.Identity() if self.is_ann else self._make(self.fc_firing())
