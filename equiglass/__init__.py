"""equiglass: SE(3)-equivariant graph neural networks for glassy liquids.

The layers, each importing only those before it:

    equiglass.physics      the Kob-Andersen model and the observables of its dynamics (pure numpy)
    equiglass.data         the dataset format, the Bapst et al. reader, periodic graphs, descriptors
    equiglass.simulate     the LAMMPS engine and the iso-configurational dataset generator
    equiglass.nn           the equivariant model, the invariant baselines, the model registry
    equiglass.training     run configs, the objective, the training loop, checkpoints
    equiglass.analysis     evaluation, predictions, equivariance checks, feature analysis
    equiglass.experiments  PCL22's experiments as TOML specs
    equiglass.cli          the command line

``equiglass.errors`` and ``equiglass.metrics`` are leaves (they import nothing of equiglass)
that every layer may use.

The notebook API of ``equiglass.api`` is importable from here, loaded on first use (so that
``import equiglass`` imports no torch): ``equiglass.load_dataset``, ``equiglass.load_model``,
``equiglass.predict``.
"""

__version__ = "0.1.0"

#: Names re-exported lazily from equiglass.api.
API = ("load_dataset", "load_model", "predict")


def __getattr__(name: str) -> object:
    if name in API:
        from equiglass import api

        return getattr(api, name)
    raise AttributeError(f"module 'equiglass' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
