"""Run configs: one TOML file with ``[data]``, ``[model]`` and ``[train]`` sections.

Example (every key but ``data.dataset`` and ``model.kind`` is optional; defaults shown)::

    [data]
    dataset = "../../data/demo"        # relative to this file
    positions = "thermal"              # or "inherent" (quenched inherent-state positions), "cage" (GlassBench)
    with_potential_energy = false      # attach the per-particle potential energy to the graphs
    with_is_displacement = false       # attach each particle's displacement from its inherent state
    cutoff = 2.0                       # neighbour cutoff of the graphs (LJ units)
    split = [0.8, 0.1, 0.1]            # train / validation / test: fractions, or counts such as [16, 4, 4]
    # validation_dataset = "../../data/other"          # unset: validate on every configuration of this dataset
    # test_dataset = "../../data/shiba-T0.44/test"      # unset: the dataset the run is tested on; the split's size
                                                        # for each must be 0 (GlassBench: train on files 1-400, test
                                                        # on 401-500 with split = [0.9, 0.1, 0] and test_dataset)
    split_seed = 0
    particle_types = [0, 1]            # species of the loss and the validation metric (0 = A, 1 = B)

    [model]
    kind = "equivariant"               # "equivariant" | "bapst" | "ridge"; other keys: see equiglass.nn.registry

    [train]
    optimiser = "adam"                 # or "adamw"
    lr = 3e-3
    weight_decay = 0.0
    schedule = "none"                  # constant lr (the recipe), "cosine" decay per optimiser step to 0, or "plateau"
    plateau_factor = 0.5               # plateau: multiply lr by this when validation stops improving ...
    plateau_patience = 5               # ... for more than this many validations (ReduceLROnPlateau)
    warmup_steps = 0                   # linear warm-up of the lr over the first this many optimiser steps (cosine, none)
    epochs = 100
    batch_size = 1                     # configurations per optimiser step
    grad_clip = 1.0                    # global gradient-norm clip; 0 = none
    target_normalisation = "dataset"   # "type": per species too; "configuration": each configuration's targets on their own
    time_weights = []                  # one loss weight per stored time (e.g. the targets' reliability); [] = equal
    seed = 0                           # model initialisation, data order, augmentation
    augment = true                     # the kind's random symmetries (bapst: cube); default: true where it has some
    device = "auto"                    # "cpu", "cuda", or "auto" (cuda when available)
    eval_every = 1                     # validate every this many epochs (and after the last)
    threads = 2                        # torch CPU threads (default: torch's choice)
    alphas = [0.01, 0.1, ...]          # ridge only: the grid of ridge strengths tried on validation
    init_from = "../runs/T0.6"         # transfer: start from this run's (or checkpoint's) backbone, fresh decoder
    freeze_backbone = false            # transfer: train only the decoder (needs init_from)
    compile = false                    # torch.compile the model for the training steps (see equiglass.training.loop)
    precision = "float32"              # or "bfloat16" / "float16": autocast of the training steps (see equiglass.training.loop)

:func:`load_config` parses and checks a file into a :class:`RunConfig`; every error is a
:class:`~equiglass.errors.ConfigError` naming the file, the section and the key.
:meth:`RunConfig.to_dict` gives the resolved config (absolute dataset path, every default
and model hyper-parameter spelled out), which :func:`to_toml` writes back as TOML.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from equiglass.data.graphs import DEFAULT_CUTOFF, input_fields, split_indices
from equiglass.errors import ConfigError
from equiglass.nn.registry import MODEL_KINDS, model_kind, resolve_model_section
from equiglass.nn.ridge import DEFAULT_ALPHAS

#: The sections of a run config.
SECTIONS = ("data", "model", "train")
#: Names of the three parts of ``[data] split``, in order.
SPLIT_NAMES = ("train", "validation", "test")
#: ``[train] precision``: the dtype the training forwards are autocast to.
Precision = Literal["float32", "bfloat16", "float16"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
#: Largest ``[train] threads``: above the cores of any single machine (a fixed bound, so that a
#: config valid on one machine stays valid on another).
MAX_THREADS = 1024


@dataclass(frozen=True)
class DataConfig:
    """The ``[data]`` section: which dataset, how graphs are built, the split, the loss particles.

    Attributes:
        dataset: the dataset directory (a relative path in a file is relative to the file).
        positions: ``"thermal"``, ``"inherent"`` or ``"cage"`` positions (the last without potential energy).
        with_potential_energy: attach the per-particle potential energy (of those positions).
        with_is_displacement: attach every particle's displacement from its inherent state to its
            thermal position (an ``l = 1`` vector; the dataset needs both positions).
        cutoff: neighbour cutoff of the graphs, LJ units.
        split: train / validation / test sizes, fractions (floats) or counts (integers).
        split_seed: seed of :func:`~equiglass.data.graphs.split_indices`.
        particle_types: species whose propensities enter the loss and the validation metric.
        validation_dataset: when given, every configuration of this dataset validates (and
            ``split`` must give no validation configuration).
        test_dataset: when given, the dataset the run is to be tested on (``equiglass evaluate RUN
            TEST_DATASET``; recorded in ``run.json``), and ``split`` must give no test configuration.
            Both must store the same times as ``dataset``; relative paths are relative to the file.
    """

    dataset: Path
    positions: Literal["thermal", "inherent", "cage"] = "thermal"
    with_potential_energy: bool = False
    with_is_displacement: bool = False
    cutoff: float = DEFAULT_CUTOFF
    split: tuple[int, ...] | tuple[float, ...] = (0.8, 0.1, 0.1)
    split_seed: int = 0
    particle_types: tuple[int, ...] = (0, 1)
    validation_dataset: Path | None = None
    test_dataset: Path | None = None

    def __post_init__(self) -> None:
        input_fields(self.positions, self.with_potential_energy)  # a known switch, an energy it has
        if not (math.isfinite(self.cutoff) and self.cutoff > 0):
            raise ValueError(f"cutoff must be positive, got {self.cutoff}")
        if len(self.split) != 3 or any(not value >= 0 for value in self.split):
            raise ValueError(f"split must give three non-negative sizes (train, validation, test), got {list(self.split)}")
        if self.split[0] == 0:
            raise ValueError(f"split needs training configurations, got {list(self.split)}")
        if self.split[1] == 0 and self.validation_dataset is None:
            raise ValueError(f"split needs validation configurations (or a validation_dataset), got {list(self.split)}")
        for part, name, other in ((1, "validation", self.validation_dataset), (2, "test", self.test_dataset)):
            if other is not None and self.split[part] != 0:
                raise ValueError(f"split gives {name} configurations {list(self.split)} while {name}_dataset is set: "
                                 f"make its {name} size 0")
        if not self.particle_types or len(set(self.particle_types)) != len(self.particle_types) or any(
            kind not in (0, 1) for kind in self.particle_types
        ):
            raise ValueError(f"particle_types must list distinct species among 0 (A) and 1 (B), got {list(self.particle_types)}")


@dataclass(frozen=True)
class TrainConfig:
    """The ``[train]`` section (see the module docstring for the meaning of each key).

    ``augment`` left unset means: the model kind's augmentation where it has one (cube
    symmetries for the Bapst model), nothing otherwise;
    :func:`load_config` resolves it. ``alphas`` is used by the ridge model only, which
    ignores the optimiser settings. ``schedule = "plateau"`` multiplies the learning rate by
    ``plateau_factor`` once the validation score (mean Pearson) has not improved for more
    than ``plateau_patience`` validations (:class:`torch.optim.lr_scheduler.ReduceLROnPlateau`).
    """

    optimiser: Literal["adam", "adamw"] = "adam"
    lr: float = 3e-3
    weight_decay: float = 0.0
    schedule: Literal["cosine", "none", "plateau"] = "none"
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    warmup_steps: int = 0
    epochs: int = 100
    batch_size: int = 1
    grad_clip: float = 1.0
    target_normalisation: Literal["dataset", "type", "configuration"] = "dataset"
    time_weights: tuple[float, ...] = ()
    seed: int = 0
    augment: bool | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_every: int = 1
    threads: int | None = None
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    init_from: str | None = None
    freeze_backbone: bool = False
    compile: bool = False
    precision: Precision = "float32"

    def __post_init__(self) -> None:
        if self.freeze_backbone and self.init_from is None:
            raise ValueError("freeze_backbone needs init_from (the run whose backbone is frozen)")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be positive, got {self.lr}")
        for name in ("weight_decay", "grad_clip"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("epochs", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.plateau_factor < 1:
            raise ValueError(f"plateau_factor must be between 0 and 1, got {self.plateau_factor}")
        if self.plateau_patience < 0:
            raise ValueError(f"plateau_patience must be >= 0, got {self.plateau_patience}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.warmup_steps and self.schedule == "plateau":
            raise ValueError("warmup_steps needs schedule cosine or none (the plateau schedule owns the learning rate)")
        if self.time_weights and (any(not (math.isfinite(w) and w >= 0) for w in self.time_weights)
                                  or not sum(self.time_weights) > 0):
            raise ValueError(f"time_weights must be >= 0 with a positive sum, got {list(self.time_weights)}")
        if self.threads is not None and not 1 <= self.threads <= MAX_THREADS:
            raise ValueError(f"threads must be between 1 and {MAX_THREADS}, got {self.threads}")
        if not self.alphas or any(not (math.isfinite(alpha) and alpha >= 0) for alpha in self.alphas):
            raise ValueError(f"alphas must list ridge strengths >= 0, got {list(self.alphas)}")


#: Aliases: the ``[data]`` and ``[train]`` sections by their section names.
DataSection = DataConfig
TrainSection = TrainConfig


@dataclass(frozen=True)
class RunConfig:
    """A whole run config.

    Attributes:
        data: the ``[data]`` section (``dataset`` absolute).
        model: the resolved ``[model]`` section: ``kind`` and every hyper-parameter
            (:func:`~equiglass.nn.registry.resolve_model_section`).
        train: the ``[train]`` section, ``augment`` resolved.
        path: the file it was read from, if any.
    """

    data: DataConfig
    model: dict[str, Any]
    train: TrainConfig
    path: Path | None = field(default=None, compare=False)

    @property
    def kind(self) -> str:
        """The model kind."""
        return self.model["kind"]

    def split_of(self, n_configurations: int) -> dict[str, Any]:
        """``{"train", "validation", "test"}`` -> sorted configuration indices (int64 arrays) of a
        dataset of ``n_configurations`` under ``[data] split`` and ``split_seed``.

        Raises:
            ConfigError: naming the config file: the split does not fit ``n_configurations``
                (fractions summing above 1, counts above ``n_configurations``).
        """
        try:
            parts = split_indices(n_configurations, self.data.split, self.data.split_seed)
        except ValueError as error:
            raise ConfigError(self.path, f"[data] split: {error}") from None
        return dict(zip(SPLIT_NAMES, parts))

    def with_train(self, **changes: Any) -> RunConfig:
        """The same config with ``[train]`` entries replaced, e.g. ``with_train(epochs=60)``."""
        return dataclasses.replace(self, train=dataclasses.replace(self.train, **changes))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The resolved config as plain JSON/TOML values (unset optional values omitted)."""
        return {
            "data": _plain(dataclasses.asdict(self.data)),
            "model": _plain(self.model),
            "train": _plain(dataclasses.asdict(self.train)),
        }


def load_config(path: str | Path) -> RunConfig:
    """Read and check a TOML run config; ``[data] dataset`` is taken relative to the file.

    Raises:
        ConfigError: naming the file (and section and key): a missing or unparsable file, an
            unknown section or key, a value of the wrong type or out of range, or settings
            that contradict each other.
    """
    path = Path(path)
    return config_from_dict(read_toml(path, "config file"), path)


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The parsed TOML file ``path`` (``what`` names it in errors).

    Raises:
        ConfigError: naming the file: missing, or not valid TOML.
    """
    if not path.is_file():
        raise ConfigError(path, f"{what} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(path, f"not valid TOML: {error}") from error


def config_from_dict(content: Mapping[str, Any], path: str | Path) -> RunConfig:
    """Check a parsed config (as :func:`tomllib.loads` gives it) read from ``path``.

    ``path`` names the config in errors, and its directory anchors a relative ``dataset``.

    Raises:
        ConfigError: see :func:`load_config`.
    """
    path = Path(path)
    unknown = sorted(set(content) - set(SECTIONS))
    if unknown:
        raise ConfigError(path, f"unknown section(s) {unknown}; a run config has {list(SECTIONS)}")
    tables = {}
    for name in SECTIONS:
        table = content.get(name, {})
        if not isinstance(table, Mapping):
            raise ConfigError(path, f"[{name}] must be a table")
        tables[name] = dict(table)
    if "dataset" not in tables["data"]:
        raise ConfigError(path, "[data] lacks the key 'dataset' (the dataset directory)")
    if "kind" not in tables["model"]:
        raise ConfigError(path, "[model] lacks the key 'kind' (equivariant, bapst or ridge)")

    data = parse_section(DataConfig, tables["data"], path, "data")
    data = dataclasses.replace(data, **{
        key: (path.parent / value).resolve()
        for key in ("dataset", "validation_dataset", "test_dataset")
        if (value := getattr(data, key)) is not None
    })
    model = _model_section(tables["model"], path)
    train = parse_section(TrainConfig, tables["train"], path, "train")
    entry, _ = model_kind(model)
    augment = entry.augmentation is not None if train.augment is None else train.augment
    train = dataclasses.replace(train, augment=augment)
    if train.init_from is not None:
        train = dataclasses.replace(train, init_from=str((path.parent / train.init_from).resolve()))
        if not entry.transferable:
            raise ConfigError(path, f"[train] init_from: the {model['kind']} model has no backbone to transfer")

    if augment and entry.augmentation is None:
        augmented = sorted(kind for kind, other in MODEL_KINDS.items() if other.augmentation is not None)
        raise ConfigError(path, f"[train] augment: the {model['kind']} model has no training augmentation "
                                f"(kinds with one: {', '.join(augmented)})")
    for use, attach in (("use_potential_energy", "with_potential_energy"), ("use_is_displacement", "with_is_displacement")):
        if model.get(use) and not getattr(data, attach):
            raise ConfigError(path, f"[model] {use} needs [data] {attach} = true")
    if model.get("cutoff", 0.0) > data.cutoff:
        raise ConfigError(
            path, f"[model] cutoff {model['cutoff']} exceeds the graphs' [data] cutoff {data.cutoff}: edges would be missing"
        )
    return RunConfig(data, model, train, path)


def to_toml(content: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML text of a config dict of tables (as :meth:`RunConfig.to_dict` gives); :func:`load_config` reads it back."""
    lines: list[str] = []
    for section, table in content.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    """One TOML value: bool, int, float, str, or a list of these."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _plain(table: Mapping[str, Any]) -> dict[str, Any]:
    """JSON/TOML-ready copy: paths as strings, tuples as lists, None values dropped."""
    out = {}
    for key, value in table.items():
        if value is None:
            continue
        out[key] = str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value
    return out


def parse_section(cls: type, table: Mapping[str, Any], path: Path, name: str) -> Any:
    """Build dataclass ``cls`` from TOML table ``[name]`` of file ``path``, checking keys and value
    types against its annotations; its own ``ValueError`` becomes a :class:`ConfigError` too."""
    fields = {spec.name for spec in dataclasses.fields(cls)}
    unknown = sorted(set(table) - fields)
    if unknown:
        raise ConfigError(path, f"[{name}] unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    values = _typed(cls, table, path, name)
    try:
        return cls(**values)
    except ValueError as error:
        raise ConfigError(path, f"[{name}] {error}") from None


def _model_section(table: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The resolved ``[model]`` section: keys checked by the registry, value types against the
    kind's config dataclass, values by the dataclass itself."""
    try:
        entry, options = model_kind(table)
    except ValueError as error:
        raise ConfigError(path, f"[model] {error}") from None
    options = _typed(entry.config_class, options, path, "model")
    try:
        return resolve_model_section({"kind": table["kind"], **options})
    except ValueError as error:
        raise ConfigError(path, f"[model] {error}") from None


def _typed(cls: type, table: Mapping[str, Any], path: Path, name: str) -> dict[str, Any]:
    """The entries of ``table`` (keys: fields of dataclass ``cls``) checked against the fields' annotations."""
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in table.items():
        try:
            values[key] = _coerce(value, hints[key])
        except TypeError as error:
            raise ConfigError(path, f"[{name}] {key}: {error}") from None
    return values


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` checked against type ``hint`` (bool, int, float, str, Path, Literal, tuple[X, ...],
    unions); ints are accepted as floats. Raises TypeError describing the mismatch."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            raise TypeError(f"must be one of {list(args)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for option in (arg for arg in args if arg is not type(None)):
            try:
                return _coerce(value, option)
            except TypeError:
                continue
        raise TypeError(f"must be {' or '.join(_describe(arg) for arg in args if arg is not type(None))}, got {value!r}")
    if origin is tuple:
        try:
            if not isinstance(value, list):
                raise TypeError
            return tuple(_coerce(item, args[0]) for item in value)
        except TypeError:
            raise TypeError(f"must be {_describe(hint)}, got {value!r}") from None
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is Path and isinstance(value, str):
        return Path(value)
    if hint in (bool, int, str) and isinstance(value, hint) and (hint is bool or not isinstance(value, bool)):
        return value
    raise TypeError(f"must be {_describe(hint)}, got {value!r}")


def _describe(hint: Any) -> str:
    """A type annotation in words, for error messages."""
    if typing.get_origin(hint) is tuple:
        plurals = {int: "integers", float: "numbers", str: "strings"}
        return f"a list of {plurals.get(typing.get_args(hint)[0], typing.get_args(hint)[0])}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path string"}
    return names.get(hint, str(hint))
