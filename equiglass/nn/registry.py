"""Build any propensity model from a ``[model]`` section: ``kind`` plus hyper-parameters.

    kind            model                                            other keys: fields of
    equivariant     EquivariantPropensityModel                       EquivariantConfig
    bapst           BapstGNN                                         BapstConfig
    ridge           DescriptorRidge                                  DescriptorConfig

Each kind is one :class:`ModelKind` entry holding everything its kind needs (config class,
builder, how it is fitted, its training augmentation, its symmetry, whether it has a
transferable backbone); no code outside this registry dispatches on the kind's name or class.
The l_max = 0 (distances only) ablation is ``kind = "equivariant", l_max = 0``. The number
of timescales is never part of a section: it comes from the data (``n_timescales``). Lists
(as TOML and JSON give them) become tuples. Every model maps a graph to ``[N, n_timescales]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from equiglass.data.descriptors import DescriptorConfig
from equiglass.nn.bapst_gnn import BapstConfig, BapstGNN, cube_symmetry_augmentation
from equiglass.nn.equivariant import EquivariantConfig, EquivariantPropensityModel
from equiglass.nn.ridge import DescriptorRidge

#: How a kind is fitted: by gradient steps (``equiglass.training.loop``) or in closed form
#: (``equiglass.training.closed_form``).
Fit = Literal["gradient", "closed_form"]


@dataclass(frozen=True)
class ModelKind:
    """One entry of :data:`MODEL_KINDS`.

    Attributes:
        config_class: the hyper-parameter dataclass; a section's keys other than ``kind`` are its fields.
        model_class: the class :attr:`build` returns (:func:`kind_of` maps a model back to its entry).
        build: ``(config, n_timescales) -> model``.
        fit: ``"gradient"`` or ``"closed_form"``.
        augmentation: ``(batch, generator) -> batch``, the random symmetry applied to training
            batches when ``[train] augment`` is on (its default); None: the kind has none.
        rotation_equivariant: the outputs are invariant under every rotation (False: only under
            the symmetries its augmentation draws, e.g. the cube's).
        transferable: has a backbone and a ``decoder`` (``[train] init_from``, ``freeze_backbone``).
    """

    config_class: type
    model_class: type[nn.Module]
    build: Callable[[Any, int], nn.Module]
    fit: Fit = "gradient"
    augmentation: Callable[[Any, torch.Generator], Any] | None = None
    rotation_equivariant: bool = True
    transferable: bool = True

    def options(self) -> tuple[str, ...]:
        """The keys a section of this kind may hold besides ``kind`` (``n_timescales`` excluded)."""
        return tuple(spec.name for spec in dataclasses.fields(self.config_class) if spec.name != "n_timescales")

    def config(self, options: Mapping[str, Any], n_timescales: int) -> Any:
        """The config dataclass of ``options`` (lists converted to tuples).

        Raises:
            ValueError: a value the dataclass rejects, including a wrongly typed one.
        """
        values = {key: tuple(value) if isinstance(value, list) else value for key, value in options.items()}
        if any(spec.name == "n_timescales" for spec in dataclasses.fields(self.config_class)):
            values["n_timescales"] = n_timescales
        try:
            return self.config_class(**values)
        except TypeError as error:  # e.g. a string compared with a number in __post_init__
            raise ValueError(f"invalid {self.config_class.__name__} options {dict(options)}: {error}") from error


#: Model kind -> its config dataclass and constructor.
MODEL_KINDS: dict[str, ModelKind] = {
    "equivariant": ModelKind(
        EquivariantConfig, EquivariantPropensityModel, lambda config, _: EquivariantPropensityModel(config)
    ),
    "bapst": ModelKind(
        BapstConfig, BapstGNN, lambda config, _: BapstGNN(config),
        augmentation=cube_symmetry_augmentation, rotation_equivariant=False,
    ),
    "ridge": ModelKind(
        DescriptorConfig, DescriptorRidge, lambda config, n_timescales: DescriptorRidge(n_timescales, config),
        fit="closed_form", transferable=False,
    ),
}


def kind_of(model: nn.Module) -> ModelKind:
    """The entry of a built model.

    Raises:
        ValueError: a model of no registered kind.
    """
    for entry in MODEL_KINDS.values():
        if type(model) is entry.model_class:
            return entry
    raise ValueError(f"{type(model).__name__} is not a registered model kind ({sorted(MODEL_KINDS)})")


def model_kind(model_section: Mapping[str, Any]) -> tuple[ModelKind, dict[str, Any]]:
    """Check a section's ``kind`` and keys; return its :class:`ModelKind` and the other keys.

    Raises:
        ValueError: no or an unknown ``kind``, ``n_timescales`` given, or a key that is not
            a field of the kind's config (the message names it and lists the valid ones).
    """
    options = dict(model_section)
    kind = options.pop("kind", None)
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind must be one of {sorted(MODEL_KINDS)}, got {kind!r}")
    entry = MODEL_KINDS[kind]
    if "n_timescales" in options:
        raise ValueError("the model section must not set 'n_timescales': it is the number of times of the data")
    unknown = sorted(set(options) - set(entry.options()))
    if unknown:
        raise ValueError(f"unknown {kind} model option(s) {unknown}; valid options: {list(entry.options())}")
    return entry, options


#: Hyper-parameters whose default has changed, per kind, with the value a stored section that
#: lacks them (a checkpoint written before the key existed) was built with.
FORMER_DEFAULTS: dict[str, dict[str, Any]] = {"equivariant": {"readout_norms": False}}


def with_former_defaults(model_section: Mapping[str, Any]) -> dict[str, Any]:
    """A stored section, its missing :data:`FORMER_DEFAULTS` filled in, so that it builds the model it was saved from."""
    return {**FORMER_DEFAULTS.get(model_section.get("kind"), {}), **model_section}


def resolve_model_section(model_section: Mapping[str, Any]) -> dict[str, Any]:
    """The section with every hyper-parameter spelled out (defaults filled in), JSON/TOML-ready.

    Builds and validates the config dataclass (not the model), so bad values raise here.

    Raises:
        ValueError: as :func:`model_kind`, or a value the config dataclass rejects.
    """
    entry, options = model_kind(model_section)
    config = entry.config(options, n_timescales=1)
    resolved: dict[str, Any] = {"kind": model_section["kind"]}
    for name in entry.options():
        value = getattr(config, name)
        resolved[name] = list(value) if isinstance(value, tuple) else value
    return resolved


def build_model(model_section: Mapping[str, Any], n_timescales: int) -> nn.Module:
    """The untrained model of ``model_section`` (``kind`` + hyper-parameters) predicting ``n_timescales`` outputs.

    Raises:
        ValueError: see :func:`model_kind`, or a value the config dataclass rejects.
    """
    entry, options = model_kind(model_section)
    return entry.build(entry.config(options, n_timescales), n_timescales)
