"""The ``equiglass`` command line: one subcommand per task.

Each subcommand is one ``_register_<name>(subparsers)`` function that adds
its parser and sets ``run`` to a function taking the parsed arguments and
returning an exit code; add new ones to `SUBCOMMANDS`. Heavy imports belong
inside the ``run`` functions, so that ``equiglass --help`` stays fast.

Errors in the user's input (`equiglass.errors.EquiglassError`: DataError, ConfigError,
CheckpointError; ``ValueError``) and of the file system (``OSError``: a read-only, full or
missing directory) are printed as one ``error: FILE: problem`` line on stderr with exit code 2,
no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from equiglass.errors import EquiglassError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    """Add one ``--option-name`` per field of dataclass `cls` (int, float, str or Literal fields).

    The type (and, for ``Literal``, the choices) comes from the field's
    annotation, the default from the field, the help from ``metadata["help"]``.
    Read the values back with `dataclass_from_options`.
    """
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        hint = hints[spec.name]
        choices = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None
        group.add_argument(
            "--" + spec.name.replace("_", "-"),
            dest=spec.name,
            type=str if choices else hint,
            choices=choices,
            default=spec.default,
            metavar=None if choices else hint.__name__.upper(),
            help=f"{spec.metadata.get('help', '')} (default: %(default)s)",
        )


def dataclass_from_options(cls: type, args: argparse.Namespace) -> Any:
    """Build dataclass `cls` from the options `add_dataclass_options` added."""
    return cls(**{spec.name: getattr(args, spec.name) for spec in dataclasses.fields(cls)})


def _shard(text: str) -> tuple[int, int]:
    """Parse ``i/n`` (0 <= i < n)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n such as 0/4, got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"shard i/n needs 0 <= i < n, got {text!r}")
    return index, count


# ------------------------------------------------------------------ generate


def _register_generate(subparsers: argparse._SubParsersAction) -> None:
    from equiglass.simulate.protocol import GenerationProtocol

    parser = subparsers.add_parser(
        "generate",
        help="simulate a Kob-Andersen iso-configurational dataset with LAMMPS",
        description=(
            "Generate (or resume) a dataset: independent chains of equilibrated Kob-Andersen configurations, "
            "each with its inherent state and the propensity of every particle from R iso-configurational "
            "trajectories. Rerunning the same command resumes; --shard splits the chains between jobs."
        ),
    )
    parser.add_argument("out", type=Path, help="dataset directory (created if needed)")
    add_dataclass_options(parser, GenerationProtocol, "protocol (LJ units; recorded in the manifest)")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="worker processes, one LAMMPS instance each; 0 runs everything in this process (default: %(default)s)",
    )
    parser.add_argument(
        "--shard",
        type=_shard,
        default=(0, 1),
        metavar="I/N",
        help="generate only the chains c with c %% N == I, for array jobs (default: 0/1, all)",
    )
    parser.set_defaults(run=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    from equiglass.process_pool import interrupt_on_sigterm
    from equiglass.simulate.generate import generate
    from equiglass.simulate.protocol import GenerationProtocol

    protocol = dataclass_from_options(GenerationProtocol, args)
    with interrupt_on_sigterm():
        report = generate(args.out, protocol, workers=args.workers, shard=args.shard, command=args.command)
    done = f"{len(report.written)} configurations written, {len(report.skipped)} already present"
    if report.complete:
        tau = "not reached within the stored times" if report.tau_alpha is None else f"{report.tau_alpha:.4g}"
        print(f"{args.out}: {done}; dataset complete, tau_alpha = {tau}")
    else:
        print(f"{args.out}: {done}; other shards still to run")
    return 0


def _register_inherent_states(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inherent-states",
        help="add inherent states to a dataset that lacks them (converted Bapst or Shiba files)",
        description=(
            "Minimise every configuration of a dataset without an inherent state with LAMMPS, as 'generate' does, "
            "and add is_positions, is_potential_energy and (where absent) potential_energy, so that the "
            "displacement d from the inherent state ([data] with_is_displacement) can be used. Each file is "
            "rewritten atomically when its minimisation is done; rerunning the same command resumes."
        ),
    )
    parser.add_argument("dataset", type=Path, help="dataset directory (rewritten in place)")
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes, one LAMMPS instance each; 0 runs in this process (default: %(default)s)")
    parser.add_argument("--minimizer", choices=["fire", "cg"], default="fire", help="minimiser (default: %(default)s)")
    parser.add_argument("--force-tolerance", type=float, default=1e-6,
                        help="stop when max_i |F_i| is below this (default: %(default)s)")
    parser.add_argument("--max-iterations", type=int, default=100_000,
                        help="iteration limit of one minimisation (default: %(default)s)")
    parser.set_defaults(run=_run_inherent_states)


def _run_inherent_states(args: argparse.Namespace) -> int:
    from equiglass.process_pool import interrupt_on_sigterm
    from equiglass.simulate.inherent import add_inherent_states

    with interrupt_on_sigterm():
        report = add_inherent_states(args.dataset, workers=args.workers, minimizer=args.minimizer,
                                     force_tolerance=args.force_tolerance, max_iterations=args.max_iterations,
                                     command=args.command)
    print(f"{args.dataset}: {len(report.minimised)} configurations minimised, "
          f"{len(report.present)} already had their inherent state")
    return 0


# ------------------------------------------------------------------ Bapst et al. (2020) files


def _register_convert_bapst(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert-bapst",
        help="convert Bapst et al. (2020) files into an equiglass dataset",
        description=(
            "Convert Bapst et al. (2020) pickles into an equiglass dataset: wrapped positions, propensity and MSD "
            "at the stored time points (sorted), KA potential energy. Rerunning the same command resumes."
        ),
    )
    parser.add_argument("src", type=Path, help="a Bapst file, a directory of them, or a glob pattern (quoted)")
    parser.add_argument("dest", type=Path, help="dataset directory (created if needed)")
    parser.set_defaults(run=_run_convert_bapst)


def _run_convert_bapst(args: argparse.Namespace) -> int:
    from equiglass.data.bapst import convert_bapst
    from equiglass.data.format import load_dataset

    dest = convert_bapst(args.src, args.dest, command=args.command)
    print(f"{dest}: {len(load_dataset(dest))} configurations")
    return 0


def _register_export_bapst(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export-bapst",
        help="write an equiglass dataset as Bapst et al. (2020) pickles",
        description=(
            "Write each configuration as a Bapst-format pickle whose (synthetic, one per time) trajectory "
            "reproduces the stored propensity as Bapst's target; see equiglass.data.bapst.export_bapst."
        ),
    )
    parser.add_argument("dataset", type=Path, help="equiglass dataset directory")
    parser.add_argument("dest", type=Path, help="directory for the Bapst files (created if needed)")
    parser.set_defaults(run=_run_export_bapst)


def _run_export_bapst(args: argparse.Namespace) -> int:
    from equiglass.data.bapst import export_bapst

    paths = export_bapst(args.dataset, args.dest)
    print(f"{args.dest}: {len(paths)} Bapst files")
    return 0


# ------------------------------------------------------------------ Shiba et al. (2023) and GlassBench files


def _times(text: str) -> list[float]:
    """Parse a comma-separated list of time points, e.g. ``0.13,1.3,13``."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


_TIMES_HELP = (
    "the temperature's full time table, comma-separated (GlassBench's KA_results/times_<T>.dat); "
    "default: the bundled table, T = 0.44 only"
)


def _register_convert_shiba(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert-shiba",
        help="convert Shiba et al. (2023) iso-configurational files into an equiglass dataset",
        description=(
            "Convert isoconfig_N{N}T{T}_{i}_tc{XX}.npz files: the files of configuration i (one per time index) "
            "become one configuration with propensity, MSD, split-half propensities and F_s. "
            "Rerunning the same command resumes."
        ),
    )
    parser.add_argument("src", nargs="+", help="Shiba files, directories of them, or glob patterns (quoted)")
    parser.add_argument("dest", type=Path, help="dataset directory (created if needed)")
    parser.add_argument("--times", type=_times, default=None, metavar="T1,T2,...", help=_TIMES_HELP)
    parser.set_defaults(run=_run_convert_shiba)


def _run_convert_shiba(args: argparse.Namespace) -> int:
    from equiglass.data.format import load_dataset
    from equiglass.data.shiba import convert_shiba

    dest = convert_shiba(args.src, args.dest, times=args.times, command=args.command)
    print(f"{dest}: {len(load_dataset(dest))} configurations")
    return 0


def _register_convert_glassbench(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert-glassbench",
        help="convert one temperature and split of GlassBench's KA 3D files into an equiglass dataset",
        description=(
            "Convert ROOT/T{T}/{train,test}/N4096T{T}_{i}.npz: propensity, bond-breaking, inherent and cage "
            "positions, and (test files) the published models' predictions and descriptors. "
            "Rerunning the same command resumes."
        ),
    )
    parser.add_argument("root", type=Path, help="GlassBench's KA_models directory (holding T0.44/ ...)")
    parser.add_argument("dest", type=Path, help="dataset directory (created if needed)")
    parser.add_argument("--temperature", type=float, required=True, help="e.g. 0.44")
    parser.add_argument("--split", choices=("train", "test"), required=True)
    parser.add_argument("--times", type=_times, default=None, metavar="T1,T2,...", help=_TIMES_HELP)
    parser.set_defaults(run=_run_convert_glassbench)


def _run_convert_glassbench(args: argparse.Namespace) -> int:
    from equiglass.data.format import load_dataset
    from equiglass.data.glassbench import convert_glassbench

    dest = convert_glassbench(
        args.root, args.dest, temperature=args.temperature, split=args.split, times=args.times, command=args.command
    )
    print(f"{dest}: {len(load_dataset(dest))} configurations")
    return 0


# ------------------------------------------------------------------ import


def _register_import(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import",
        help="make a dataset from LAMMPS dumps, extended XYZ or any file ASE reads",
        description=(
            "Read configurations with ASE (orthorhombic periodic boxes). Without --replicas every frame of every "
            "file is a configuration of a prediction-only dataset (no propensity). With --replicas each SRC (a "
            "directory or quoted glob) is one configuration whose files are replica trajectories from the same "
            "frame 0: propensity, msd and propensity_halves are computed as equiglass generate does, unwrapping "
            "with image flags where the dump has them, else by minimum displacement (see equiglass.data.ase_io)."
        ),
    )
    parser.add_argument("src", nargs="+", help="files, directories or glob patterns (quoted)")
    parser.add_argument("dest", type=Path, help="new dataset directory (must not exist, or be empty)")
    parser.add_argument("--temperature", type=float, required=True, help="temperature of the configurations (LJ units)")
    parser.add_argument("--types", default=None, metavar="NAME=INDEX,...",
                        help="particle type names (LAMMPS types or species) -> 0 (A) or 1 (B) (default: 1=0,2=1)")
    parser.add_argument("--box", default=None, metavar="LX,LY,LZ", help="box sides, for files without a cell")
    parser.add_argument("--replicas", action="store_true", help="each SRC holds one configuration's replica trajectories")
    parser.add_argument("--timestep", type=float, default=None,
                        help="MD time step (LJ units) turning a LAMMPS dump's time steps into times")
    parser.set_defaults(run=_run_import)


def _run_import(args: argparse.Namespace) -> int:
    from equiglass.data.ase_io import import_configurations, parse_box, parse_type_map
    from equiglass.data.format import load_dataset

    dest = import_configurations(args.src, args.dest, temperature=args.temperature, replicas=args.replicas,
                                 type_map=None if args.types is None else parse_type_map(args.types),
                                 box=None if args.box is None else parse_box(args.box),
                                 timestep=args.timestep, command=args.command)
    dataset = load_dataset(dest)
    kind = f"{dataset.times.size} times" if dataset.has_targets else "prediction-only"
    print(f"{dest}: {len(dataset)} configurations ({kind})")
    return 0


# ------------------------------------------------------------------ train


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a propensity model from a TOML run config",
        description=(
            "Train the model of a run config (see equiglass.training.config) into a run directory: config.toml/json, "
            "run.json, metrics.csv, last.pt and best.pt. Rerunning the same command resumes from last.pt."
        ),
    )
    parser.add_argument("config", type=Path, help="TOML run config ([data], [model], [train])")
    parser.add_argument("--run-dir", type=Path, default=None, help="run directory (default: runs/<config stem>)")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="start afresh even if the run directory holds last.pt")
    parser.add_argument("--epochs", type=int, default=None, help="override [train] epochs")
    parser.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from equiglass.training.loop import train

    result = train(args.config, args.run_dir, resume=args.resume, epochs=args.epochs)
    print(f"{result.run_dir}: {result.epochs} epochs; best.pt from epoch {result.best_epoch}, "
          f"validation mean Pearson {result.best_score:.4f} (per configuration, loss particle types)")
    return 0


# ------------------------------------------------------------------ evaluate, predict


def _register_evaluate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="Pearson correlation of trained models per time and particle type",
        description=(
            "Per-configuration Pearson correlation between predicted and measured propensity, for type A and "
            "type B particles at every time, mean ± std over configurations (Bapst et al. / PCL22 convention), "
            "each beside the noise ceiling of the targets (the Pearson a perfect model would reach against means "
            "over R replicas; unknown where the dataset holds neither propensity_halves nor msd and R) and "
            "Pearson / ceiling. Prints the table and writes pearson.md, pearson.csv and pearson.png (the ceiling as "
            "a band) comparing every model given."
        ),
    )
    parser.add_argument("models", type=Path, nargs="+", metavar="RUN_OR_CHECKPOINT",
                        help="run directories (their best.pt) or checkpoint files")
    parser.add_argument("dataset", type=Path, help="dataset directory")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: evaluation/ in the first model's run directory)")
    parser.add_argument("--split", choices=("test", "all"), default="test",
                        help="test: each run's test configurations where DATASET is the run's dataset, "
                             "else all (default); all: every configuration")
    parser.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from equiglass.analysis.evaluate import evaluate

    first = args.models[0]
    out = args.out or (first if first.is_dir() else first.parent) / "evaluation"
    table = evaluate(args.models, args.dataset, out=out, split=args.split)
    print(table.to_markdown())
    print(f"written: {out}/pearson.md, pearson.csv, pearson.png")
    return 0


def _register_render(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "render",
        help="draw one configuration: a slab coloured by measured and by predicted propensity, and their scatter",
        description=(
            "For configuration K of DATASET, one row per time: the particles of a slab of the box coloured by "
            "measured and by predicted propensity side by side, and predicted against measured propensity over "
            "every particle with the Pearson of each species. Writes OUT/propensity_<configuration>.png."
        ),
    )
    parser.add_argument("checkpoint", type=Path, help="checkpoint file, or run directory (its best.pt)")
    parser.add_argument("dataset", type=Path, help="dataset directory (with measured propensity)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (created if needed)")
    parser.add_argument("--configuration", type=int, default=0, metavar="K", help="configuration index (default 0)")
    parser.add_argument("--thickness", type=float, default=1.5, help="slab thickness, LJ units (default 1.5)")
    parser.set_defaults(run=_run_render)


def _run_render(args: argparse.Namespace) -> int:
    from equiglass.analysis.render import render

    print(f"written: {render(args.checkpoint, args.dataset, args.out, args.configuration, args.thickness)}")
    return 0


def _register_predict(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="write a trained model's propensity predictions, one .npz per configuration",
        description=(
            "For every configuration of DATASET (a dataset directory or one configuration .npz), write "
            "OUT/<its file name> holding prediction [T, N] (the layout of the dataset's propensity) and times [T]. "
            "Rerunning skips the outputs already written."
        ),
    )
    parser.add_argument("checkpoint", type=Path, help="checkpoint file, or run directory (its best.pt)")
    parser.add_argument("dataset", type=Path, help="dataset directory or one configuration .npz")
    parser.add_argument("--out", type=Path, required=True, help="output directory (created if needed)")
    parser.add_argument("--overwrite", action="store_true", help="recompute outputs that already exist")
    parser.add_argument("--format", choices=("npz", "extxyz", "lammps-dump"), default="npz",
                        help="also write each configuration for OVITO, with per-particle columns type, "
                             "predicted_propensity, propensity and potential_energy where known (default: %(default)s)")
    parser.set_defaults(run=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from equiglass.analysis.predict import predict

    report = predict(args.checkpoint, args.dataset, args.out, overwrite=args.overwrite, format=args.format)
    print(f"{args.out}: {len(report.written)} predictions written, {len(report.skipped)} already present")
    return 0


# ------------------------------------------------------------------ check-equivariance

EXIT_NOT_EQUIVARIANT = 1


def _register_check_equivariance(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-equivariance",
        help="measure a model's rotation, translation, permutation and periodic-image symmetry",
        description=(
            "On a real configuration, measure the largest deviation of a model's outputs (and of every internal "
            "feature of equivariant models) under random rotations of positions and lattice, translations, "
            "permutations and periodic-image shifts (see equiglass.analysis.equivariance). Exits 1 when a deviation "
            "exceeds the tolerance; the rotation of the Bapst GNN, not invariant by design, is reported only."
        ),
    )
    parser.add_argument("source", metavar="CHECKPOINT_OR_CONFIG",
                        help="checkpoint file or run directory; a .toml run config (untrained model); "
                             "or a model kind (untrained, default hyper-parameters)")
    parser.add_argument("--dataset", type=Path, default=None,
                        help="dataset of the configuration (default: the model's dataset, else data/demo)")
    parser.add_argument("--configuration", type=int, default=0, help="index of the configuration (default: 0)")
    parser.add_argument("--trials", type=int, default=3, help="random draws per transformation (default: 3)")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="failure threshold (default: 1e-9 in float64, 1e-4 in float32)")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                        help="precision the model is rebuilt in (default: float64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draws (default: 0)")
    parser.set_defaults(run=_run_check_equivariance)


def _run_check_equivariance(args: argparse.Namespace) -> int:
    import torch

    from equiglass.analysis.equivariance import check_source

    report = check_source(args.source, args.dataset, configuration=args.configuration, trials=args.trials,
                          tolerance=args.tolerance, dtype=getattr(torch, args.dtype), seed=args.seed)
    print(report.to_text())
    return 0 if report.passed else EXIT_NOT_EQUIVARIANT


# ------------------------------------------------------------------ demo


def _register_demo(subparsers: argparse._SubParsersAction) -> None:
    from equiglass.demo import ALL_DEMO_MODELS, DEMO_CONFIGS, DEMO_MODELS

    parser = subparsers.add_parser(
        "demo",
        help="train the equivariant model and the baselines on data/demo and compare them",
        description=(
            "Train (or resume) one run per model on the embedded demo dataset from experiments/configs/demo_*.toml, "
            "evaluate every model on its test configurations, print the Pearson table and write it with its plot. "
            "Rerunning resumes."
        ),
    )
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="directory of the runs (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=None, help="override the configs' number of epochs")
    parser.add_argument("--models", nargs="+", choices=ALL_DEMO_MODELS, default=list(DEMO_MODELS),
                        help="models to train (default: %(default)s)")
    parser.add_argument("--configs", type=Path, default=DEMO_CONFIGS,
                        help="directory of the demo_<model>.toml configs (default: the repository's)")
    parser.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from equiglass.demo import run_demo

    result = run_demo(args.out, epochs=args.epochs, models=args.models, configs=args.configs)
    print(result.table.to_markdown())
    print(f"runs: {', '.join(str(path) for path in result.runs.values())}")
    print(f"table and plot: {args.out}/pearson.md, pearson.csv, pearson.png")
    print(f"wall time: {result.wall_time:.0f} s")
    return 0


def _register_experiment(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="run an experiment spec (experiments/*.toml): train its runs, evaluate, write results.md",
        description=(
            "Train every run of an experiment spec at one scale (cpu: our generated datasets; paper: Bapst et al.'s "
            "files given with --data, converted once), evaluate them and write results.md, results.json and plots. "
            "Rerunning resumes."
        ),
    )
    parser.add_argument("spec", type=Path, help="experiment spec (TOML), e.g. experiments/pearson_vs_time.toml")
    parser.add_argument("--scale", default="cpu", help="which [scale.<name>] of the spec to run (default: %(default)s)")
    parser.add_argument("--data", nargs="+", type=Path, default=None,
                        help="datasets (equiglass directories, or Bapst et al.'s files) replacing the scale's")
    parser.add_argument("--test-data", type=Path, default=None,
                        help="a dataset replacing the runs' [data] test_dataset: every configuration of it tests "
                             "(e.g. GlassBench's test files converted by convert-glassbench)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results directory (default: runs/experiments/<spec>-<scale>)")
    parser.add_argument("--epochs", type=int, default=None, help="override every run's epochs (quick checks)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads of every run, replacing [train] threads (finished runs are kept)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="train up to this many runs at once, each in its own process with cpu_count // JOBS "
                             "threads unless --threads is given (default: %(default)s)")
    parser.add_argument("--runs", nargs="+", default=None, metavar="NAME",
                        help="train and report only these runs of the spec (default: every run)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run=_run_experiment)


def _run_experiment(args: argparse.Namespace) -> int:
    from equiglass.experiments.runner import results_markdown, run_experiment
    from equiglass.process_pool import interrupt_on_sigterm

    with interrupt_on_sigterm():
        results = run_experiment(args.spec, args.scale, args.data, args.out, epochs=args.epochs,
                                 progress=not args.no_progress, test_data=args.test_data, threads=args.threads,
                                 runs=args.runs, jobs=args.jobs)
    print(results_markdown(results))
    return 0


# ------------------------------------------------------------------ entry point

SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _register_generate,
    _register_inherent_states,
    _register_convert_bapst,
    _register_export_bapst,
    _register_convert_shiba,
    _register_convert_glassbench,
    _register_import,
    _register_train,
    _register_evaluate,
    _register_render,
    _register_predict,
    _register_check_equivariance,
    _register_demo,
    _register_experiment,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="equiglass", description="SE(3)-equivariant graph neural networks for glassy liquids."
    )
    subparsers = parser.add_subparsers(title="commands", dest="subcommand", required=True)
    for register in SUBCOMMANDS:
        register(subparsers)
    return parser


def _os_error_text(error: OSError) -> str:
    """``FILE: problem`` for an operating-system error (unwritable, full or missing directory ...)."""
    problem = error.strerror or str(error)
    if error.filename is None:
        return problem
    return f"{error.filename}: {problem}" if error.filename2 is None else f"{error.filename} -> {error.filename2}: {problem}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command = shlex.join(["equiglass", *argv])
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return args.run(args)
    except (EquiglassError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:
        print(f"error: {_os_error_text(error)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
