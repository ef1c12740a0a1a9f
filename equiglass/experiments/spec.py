"""The experiment spec: one TOML file describing the training runs of one study.

A spec (``experiments/*.toml``)::

    [experiment]
    title = "Pearson vs time: equivariant model vs invariant baselines"
    kind = "compare"                    # one of equiglass.experiments.kinds.KINDS

    [base]                              # a run config (equiglass.training.config) shared by every run,
    data = { split = [0.8, 0.1, 0.1] }  # without data.dataset (that comes from the scale)
    train = { epochs = 100 }

    [scale.cpu]                         # one table per scale: its datasets and overrides
    datasets = ["../data/ka-T0.56"]     # relative to the spec; --data replaces them
    data = { split = [16, 4, 4] }
    train = { epochs = 12 }

    [scale.paper]
    datasets = []                       # Bapst et al.'s files: given with --data
    train = { epochs = 300, device = "auto" }

    [[run]]
    name = "equivariant"
    model = { kind = "equivariant" }
    scale.cpu = { model = { channels = 8 } }    # overrides of this run at one scale

    [transfer]                          # the table named after the kind, where it has options:
    data = { split = [4, 4, 16] }       # kind "transfer": the retraining budget;
                                        # kind "scaling": the training-set sizes and step budget

Each run's config is the deep merge ``base <- scale <- run <- run.scale.<scale>``
(:meth:`ExperimentSpec.run_tables`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from equiglass.errors import ConfigError
from equiglass.experiments.kinds import DEFAULT_KIND, KINDS

#: Keys of a ``[scale.<name>]`` table besides the run-config sections.
SCALE_KEYS = ("datasets",)
#: Sections of a run config a spec may override.
RUN_SECTIONS = ("data", "model", "train")
#: The top-level tables of every spec; a spec may also hold the table named after its kind.
SPEC_TABLES = ("experiment", "base", "scale", "run")


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in: tables merged key by key, any other value replaced."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@dataclass(frozen=True)
class ExperimentSpec:
    """A parsed experiment spec (see the module docstring).

    Attributes:
        path: the spec file.
        title: one line saying what the experiment measures.
        kind: a key of :data:`~equiglass.experiments.kinds.KINDS`.
        base: the run-config tables shared by every run.
        scales: scale name -> its table (``datasets`` and run-config overrides).
        runs: ``(name, table)`` of every run, in order.
        options: the table named after the kind (``[transfer]``, ``[scaling]``), empty where absent.
    """

    path: Path
    title: str
    kind: str
    base: dict[str, Any]
    scales: dict[str, dict[str, Any]]
    runs: tuple[tuple[str, dict[str, Any]], ...]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The spec's file stem."""
        return self.path.stem

    def select(self, names: list[str]) -> ExperimentSpec:
        """The same spec with only the runs ``names``, in the spec's order.

        Raises:
            ConfigError: a name that is not a run of the spec.
        """
        known = [name for name, _ in self.runs]
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise ConfigError(self.path, f"no run(s) {unknown}; the runs are {known}")
        return dataclasses.replace(self, runs=tuple(run for run in self.runs if run[0] in names))

    def datasets(self, scale: str) -> list[Path]:
        """The scale's dataset paths, relative ones taken from the spec's directory."""
        return [(self.path.parent / entry).resolve() for entry in self.scales[scale].get("datasets", [])]

    def run_tables(self, run: str, scale: str, dataset: Path) -> dict[str, Any]:
        """The run config (as tables) of run ``run`` at ``scale`` on ``dataset``."""
        tables = dict(self.runs)[run]
        overrides = {key: value for key, value in tables.items() if key in RUN_SECTIONS}
        scale_table = {key: value for key, value in self.scales[scale].items() if key in RUN_SECTIONS}
        merged = deep_merge(deep_merge(deep_merge(self.base, scale_table), overrides), tables.get("scale", {}).get(scale, {}))
        merged.setdefault("data", {})["dataset"] = str(dataset)
        return merged


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and check an experiment spec.

    Raises:
        ConfigError: naming the file: not TOML, no ``[experiment]`` title or a bad kind, no runs,
            duplicate run names, unknown keys, or a run table with an unknown section.
    """
    from equiglass.training.config import read_toml

    path = Path(path).resolve()
    content = read_toml(path, "experiment spec")
    header = content.get("experiment", {})
    if not header.get("title"):
        raise ConfigError(path, "[experiment] needs a title")
    kind = header.get("kind", DEFAULT_KIND)
    if kind not in KINDS:
        raise ConfigError(path, f"[experiment] kind must be one of {tuple(KINDS)}, got {kind!r}")
    unknown = sorted(set(content) - {*SPEC_TABLES, kind})
    if unknown:
        raise ConfigError(path, f"unknown table(s) {unknown} (a {kind} spec has {[*SPEC_TABLES, kind]})")
    runs = content.get("run", [])
    names = [run.get("name") for run in runs]
    if not runs or not all(isinstance(name, str) and name for name in names) or len(set(names)) != len(names):
        raise ConfigError(path, f"needs [[run]] tables with distinct non-empty names, got {names}")
    for run in runs:
        extra = sorted(set(run) - {"name", "scale", *RUN_SECTIONS})
        if extra:
            raise ConfigError(path, f"run {run['name']!r}: unknown key(s) {extra}; a run has name, scale, {RUN_SECTIONS}")
    scales = content.get("scale", {})
    for name, table in scales.items():
        extra = sorted(set(table) - {*SCALE_KEYS, *RUN_SECTIONS})
        if extra:
            raise ConfigError(path, f"[scale.{name}]: unknown key(s) {extra}")
    return ExperimentSpec(
        path=path,
        title=str(header["title"]),
        kind=kind,
        base=dict(content.get("base", {})),
        scales={name: dict(table) for name, table in scales.items()},
        runs=tuple((run["name"], {key: value for key, value in run.items() if key != "name"}) for run in runs),
        options=dict(content.get(kind, {})),
    )
