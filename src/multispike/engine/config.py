"""Training configuration and recipes (one TOML file per row of the papers' result tables).

A :class:`TrainConfig` holds every setting of a run. Recipes fill it from a TOML file; flags
given on the command line override the recipe; the resolved configuration is written beside
the checkpoints as ``config.json`` so that a run can be repeated exactly.

Example::

    >>> cfg = resolve_config(recipe="mt-vgg9-cifar10", overrides={"epochs": 1})
    >>> cfg.model, cfg.firing, cfg.lr
    ('vgg9', 'mt', 0.1)
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from multispike.checks import parse_boolean, positive_int
from multispike.checks import seed as check_seed
from multispike.errors import CheckpointError, ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SCHEDULES = ("cosine", "step", "constant")
AMP_MODES = ("auto", "off", "bf16", "fp16")
#: ``off`` runs the model eagerly; the others are ``torch.compile`` modes
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` → ``[0, 1, 2]``: integers, at least one, each once (one-line errors)."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds takes integers like 0,1,2; got {text!r}") from None
    if not seeds:
        raise ConfigError("--seeds is empty; give e.g. --seeds 0,1,2")
    for s in seeds:
        check_seed("--seeds", s)
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise ConfigError(f"--seeds names seed {twice[0]} twice ({text}); give each seed once: "
                          "distinct integers like 0,1,2")
    return seeds


def check_compile_mode(mode: object) -> str:
    """``mode`` if it is one of :data:`COMPILE_MODES`, else :class:`ConfigError` (one line)."""
    if mode not in COMPILE_MODES:
        raise ConfigError(
            f"unknown compile mode {mode!r}; choose one of {', '.join(COMPILE_MODES)}"
        )
    return str(mode)


def boolean_options() -> frozenset[str]:
    """The yes/no model and neuron options: those whose default is a boolean (``mt_on_fc``,
    ``learn_thresholds``, ``learn_amplitude``, ``detach_reset``, ...)."""
    import inspect

    from multispike.models.base import MT_SNN_DEFAULTS, SpikingModel
    from multispike.neurons import NEURONS, Neuron

    names = {k for k, v in MT_SNN_DEFAULTS.items() if isinstance(v, bool)}
    for cls in (Neuron, *NEURONS.values()):
        names |= {p.name for p in inspect.signature(cls.__init__).parameters.values()
                  if isinstance(p.default, bool)}
    families = list(SpikingModel.__subclasses__())
    while families:
        cls = families.pop()
        families.extend(cls.__subclasses__())
        names |= {k for k, v in cls.family_defaults.items() if isinstance(v, bool)}
    return frozenset(names)


def parse_boolean_options(options: dict[str, Any], where: str = "--option") -> dict[str, Any]:
    """``options`` with the yes/no ones parsed from the spellings of the command line and TOML
    (true/false, yes/no, on/off, 1/0); another value of such an option is a one-line
    :class:`ConfigError`. Where strings from the user become objects: the command line, recipes.
    """
    names = boolean_options()
    return {k: parse_boolean(f"{where} {k}", v) if k in names else v
            for k, v in options.items()}


#: training settings that have their own flag: a model option may not set them a second time
OWN_FLAG = {"timesteps": "--timesteps", "firing": "--firing", "neuron": "--neuron"}


@dataclass
class TrainConfig:
    """Every setting of one training run. ``None`` means: the dataset's or model's default.

    Units: ``lr`` per step of SGD; ``epochs`` full passes over the training set; ``milestones``
    epochs at which a ``step`` schedule multiplies the learning rate by ``gamma``.
    ``compile``: ``off`` (eager) or the ``torch.compile`` mode the trained model runs with;
    checkpoints hold the same uncompiled weights either way. ``cuda_graphs``: capture the whole
    training step (forward, backward, optimizer) in a CUDA graph and replay it; CUDA only.
    ``data_options``: dataset options (``resize``, ``cache_dir``, ...; a recipe's
    ``[data_options]``, ``--data-option``), recorded with the run so that every command that
    reads its checkpoints reads the same data; ``model_options`` may not set them.
    """

    dataset: str = "digits"
    model: str | None = None
    timesteps: int = 2
    firing: str | None = None
    neuron: str | None = None
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    seed: int = 0
    augment: str | None = None
    data_dir: str | None = None
    download: bool = False
    out: str | None = None
    resume: bool = False
    amp: str = "auto"
    compile: str = "off"
    cuda_graphs: bool = False
    device: str = "auto"
    num_workers: int | None = None
    sync_bn: bool = False
    label_smoothing: float = 0.0
    #: fraction of the training set held out to choose the best epoch (0: the papers'
    #: convention, the best epoch on the test set)
    val_split: float = 0.0
    progress: bool = True
    recipe: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    data_options: dict[str, Any] = field(default_factory=dict)
    #: a checkpoint whose model and weights the run starts from (fine-tuning), or None
    init: str | None = None

    def validate(self) -> TrainConfig:
        """Raise :class:`ConfigError` (one line) for settings no run can use."""
        positive_int("timesteps", self.timesteps)
        positive_int("--epochs", self.epochs)
        positive_int("--batch-size", self.batch_size)
        if self.num_workers is not None:
            _int_at_least("--workers", self.num_workers, 0, "0 loads data in the main process")
        if not _finite(self.lr) or not self.lr > 0:
            raise ConfigError(f"--lr must be a finite number > 0, got {self.lr!r}; e.g. --lr 0.1")
        if not _finite(self.weight_decay) or self.weight_decay < 0:
            raise ConfigError(f"--weight-decay must be a finite number >= 0, got "
                              f"{self.weight_decay!r}; e.g. --weight-decay 5e-4 (0: none)")
        if not _finite(self.momentum) or not 0 <= self.momentum < 1:
            raise ConfigError(f"--momentum must be in [0, 1), got {self.momentum!r}; "
                              "e.g. --momentum 0.9")
        if not _finite(self.gamma) or not self.gamma > 0:
            raise ConfigError(f"gamma must be a finite number > 0, got {self.gamma!r}")
        if not _finite(self.label_smoothing) or not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if not _finite(self.val_split) or not 0 <= self.val_split < 1:
            raise ConfigError(f"--val-split must be a fraction in [0, 1), got {self.val_split!r}; "
                              "e.g. 0.1 holds out a tenth of the training set")
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}"
            )
        if self.amp not in AMP_MODES:
            raise ConfigError(
                f"unknown amp mode {self.amp!r}; choose one of {', '.join(AMP_MODES)}"
            )
        check_compile_mode(self.compile)
        self._check_model_options()
        check_seed("--seed", self.seed)
        if not isinstance(self.cuda_graphs, bool):
            raise ConfigError(f"cuda_graphs must be true or false, got {self.cuda_graphs!r}")
        return self

    def _check_model_options(self) -> None:
        """One place per setting: T, firing and neuron have their own flags (a model option
        setting them too trained at one T while config.json recorded another), and the class
        count is the dataset's."""
        for key, flag in OWN_FLAG.items():
            if key in self.model_options:
                raise ConfigError(
                    f"--option {key}={self.model_options[key]!r} sets what {flag} sets; give "
                    f"{flag} {self.model_options[key]} instead (in a recipe: {key} at the top "
                    "level)")
        from multispike.data.registry import DATASETS

        spec = DATASETS.get(self.dataset)
        for key in self.model_options:
            if spec is not None and key in spec.options:
                raise ConfigError(
                    f"--option {key}={self.model_options[key]!r} sets a model option, and {key} "
                    f"is an option of dataset {self.dataset}: give --data-option "
                    f"{key}={self.model_options[key]} (in a recipe: under [data_options])")
        if "num_classes" in self.model_options:
            raise ConfigError(
                f"--option num_classes={self.model_options['num_classes']!r}: the class count "
                f"comes from the dataset ({self.dataset}); drop the option")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _finite(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _int_at_least(flag: str, value: Any, low: int, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{flag} must be an integer >= {low}, got {value!r}"
                          + (f" ({hint})" if hint else ""))


FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def recipe_dir() -> Path:
    """The folder of the recipes shipped with multispike."""
    return Path(str(resources.files("multispike") / "recipes"))


def list_recipes() -> list[str]:
    return sorted(p.stem for p in recipe_dir().glob("*.toml"))


def load_recipe(name: str) -> dict[str, Any]:
    """Read a recipe by name (``mt-vgg9-cifar10``) or by path to a ``.toml`` file."""
    path = Path(name)
    shipped = recipe_dir() / f"{name}.toml"
    if not shipped.is_file() and (path.suffix or len(path.parts) > 1) and path.exists():
        if path.is_dir():
            raise ConfigError(f"recipe {path} is a directory; give a .toml file or a recipe "
                              "name (`multispike recipes` lists them)")
        if path.suffix != ".toml":
            raise ConfigError(f"recipe {path} is not a .toml file; give a .toml file or a "
                              "recipe name (`multispike recipes` lists them)")
    if not (path.suffix == ".toml" and path.is_file()):
        if path.suffix == ".toml" and not shipped.is_file():
            raise ConfigError(f"recipe file {path} does not exist; check the path, or give a "
                              "recipe name (`multispike recipes` lists them)")
        path = shipped
    if not path.is_file():
        raise ConfigError(
            f"unknown recipe {name!r}; choose one of {', '.join(list_recipes())} "
            "or give a .toml path"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"recipe {path} is not valid TOML ({e}); fix the file") from None
    except (UnicodeDecodeError, OSError) as e:
        why = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else \
            (e.strerror or type(e).__name__)
        raise ConfigError(f"recipe {path} cannot be read as TOML ({why}); give a .toml text "
                          "file or a recipe name") from None
    data.pop("paper", None)  # the paper's claim (workflows.reproduce reads it), not a setting
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise ConfigError(f"recipe {path} has unknown key {unknown[0]!r}; known: {sorted(FIELDS)}")
    if isinstance(data.get("model_options"), dict):
        data["model_options"] = parse_boolean_options(data["model_options"],
                                                      f"recipe {path}: model_options")
    data["recipe"] = name
    return data


def resolve_config(
    recipe: str | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Recipe values, then ``overrides`` (flags given on the command line; None values skipped).

    ``model_options`` merge key by key, so a flag can change one neuron option of a recipe.
    """
    values: dict[str, Any] = load_recipe(recipe) if recipe else {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in FIELDS:
            raise ConfigError(f"unknown training option {key!r}")
        if key in ("model_options", "data_options"):
            values[key] = {**values.get(key, {}), **value}
        else:
            values[key] = value
    return TrainConfig(**values).validate()


#: settings a resumed run may change: where and how it runs, not what it computes (``epochs``
#: may grow too, where the schedule allows it: see :func:`check_resumable`)
RESUME_SAFE = frozenset(
    {"out", "resume", "device", "num_workers", "progress", "data_dir", "download", "compile",
     "cuda_graphs", "recipe"}
)
#: command-line spelling of the settings whose flag is not ``--`` + the name
FLAGS = {"num_workers": "--workers", "model_options": "--option",
         "data_options": "--data-option"}
#: dataset options a resumed run may change: where and how the data is read, not what it is
RESUME_SAFE_DATA = frozenset({"cache_dir", "convert_workers", "progress"})


def flag_of(key: str) -> str:
    return FLAGS.get(key, "--" + key.replace("_", "-"))


def _same(a: Any, b: Any) -> bool:
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def differing_settings(saved: dict[str, Any], asked: dict[str, Any]) -> list[str]:
    """Settings of ``asked`` that differ from ``saved`` and that a resumed run may not change,
    as ``"--flag VALUE (the run has SAVED)"`` (``None`` values and ``epochs`` are skipped)."""
    out = []
    for key, value in asked.items():
        if value is None or key in RESUME_SAFE or key == "epochs" or key not in FIELDS:
            continue
        if key in ("model_options", "data_options"):
            old = saved.get(key) or {}
            for k, v in (value or {}).items():
                if key == "data_options" and k in RESUME_SAFE_DATA:
                    continue
                if not _same(v, old.get(k)):
                    out.append(f"{flag_of(key)} {k}={v!r} (the run has {old.get(k)!r})")
            continue
        if key in saved and saved[key] is not None and not _same(value, saved[key]):
            out.append(f"{flag_of(key)} {value!r} (the run has {saved[key]!r})")
    return out


def _saved_config(path: Path) -> dict[str, Any]:
    """The settings of the run whose ``config.json`` is ``path``; where that file is missing or
    unreadable, the copy in ``last.pt`` beside it (every checkpoint holds the configuration)."""
    try:
        saved = json.loads(path.read_text())
        if isinstance(saved, dict):
            return saved
    except (OSError, ValueError):
        pass
    last = path.parent / "last.pt"
    if not last.is_file():
        if not path.exists():
            raise CheckpointError(f"nothing to resume: neither {path} nor {last} exists; start "
                                  "the run without --resume")
        raise CheckpointError(f"{path} is not a readable run configuration and there is no "
                              f"{last} to take it from; start a new run in another --out")
    from multispike.engine.checkpoint import load_checkpoint

    ckpt = load_checkpoint(last)
    if not isinstance(ckpt.get("config"), dict):
        raise CheckpointError(f"{path} is missing or unreadable and {last} holds no run "
                              "configuration; start a new run in another --out")
    return ckpt["config"]


def resume_config(
    out: str | Path, recipe: str | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """The configuration of the run in ``out``, from its ``config.json`` (or, where that is
    missing or corrupt, from ``last.pt``, which holds it too), for ``--resume``.

    ``--out`` alone is enough. A recipe or flag given as well must agree with the saved run,
    except the settings in :data:`RESUME_SAFE` and ``epochs``, which apply; any other
    difference is a one-line :class:`ConfigError` naming the flag.
    """
    path = Path(out) / "config.json"
    saved = _saved_config(path)
    values = {k: v for k, v in saved.items() if k in FIELDS}
    asked: dict[str, Any] = load_recipe(recipe) if recipe else {}
    for key, value in (overrides or {}).items():
        if value is not None and key not in FIELDS:
            raise ConfigError(f"unknown training option {key!r}")
        if value is not None:
            asked[key] = value
    bad = differing_settings(values, asked)
    if bad:
        raise ConfigError(
            f"a resumed run keeps its settings, but {bad[0]}; drop the flag, or start a new "
            "run in another --out"
        )
    for key, value in asked.items():
        if key in ("model_options", "data_options"):
            values[key] = {**(values.get(key) or {}), **value}
        elif key in FIELDS:
            values[key] = value
    values["out"], values["resume"] = str(out), True
    try:
        return TrainConfig(**values).validate()
    except TypeError as e:
        raise CheckpointError(f"{path} is not a run configuration ({e})") from None
