"""The ``equiglass`` command line: one subcommand per task.

Each subcommand is one ``_register_<name>(subparsers)`` function that adds
its parser and sets ``run`` to a function taking the parsed arguments and
returning an exit code; add new ones to `SUBCOMMANDS`. Heavy imports belong
inside the ``run`` functions, so that ``equiglass --help`` stays fast.

Errors in the user's input or data (`equiglass.errors.DataError`,
``ValueError``) are printed as ``error: ...`` on stderr with exit code 2, no
traceback.
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

from equiglass.errors import DataError

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
    from equiglass.md.generate import GenerationProtocol

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
    from equiglass.md.generate import GenerationProtocol, generate

    protocol = dataclass_from_options(GenerationProtocol, args)
    report = generate(args.out, protocol, workers=args.workers, shard=args.shard, command=args.command)
    done = f"{len(report.written)} configurations written, {len(report.skipped)} already present"
    if report.complete:
        tau = "not reached within the stored times" if report.tau_alpha is None else f"{report.tau_alpha:.4g}"
        print(f"{args.out}: {done}; dataset complete, tau_alpha = {tau}")
    else:
        print(f"{args.out}: {done}; other shards still to run")
    return 0


# ------------------------------------------------------------------ Bapst et al. (2020) files


def _register_convert_bapst(subparsers: argparse._SubParsersAction) -> None:
    from equiglass.data.bapst import register_convert_bapst

    register_convert_bapst(subparsers)


def _register_export_bapst(subparsers: argparse._SubParsersAction) -> None:
    from equiglass.data.bapst import register_export_bapst

    register_export_bapst(subparsers)


# ------------------------------------------------------------------ train


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a propensity model from a TOML run config",
        description=(
            "Train the model of a run config (see equiglass.config) into a run directory: config.toml/json, "
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
    from equiglass.train import train

    result = train(args.config, args.run_dir, resume=args.resume, epochs=args.epochs)
    print(f"{result.run_dir}: {result.epochs} epochs; best.pt from epoch {result.best_epoch}, "
          f"validation mean Pearson {result.best_score:.4f} (per configuration, loss particle types)")
    return 0


# ------------------------------------------------------------------ entry point

SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _register_generate,
    _register_convert_bapst,
    _register_export_bapst,
    _register_train,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="equiglass", description="SE(3)-equivariant graph neural networks for glassy liquids."
    )
    subparsers = parser.add_subparsers(title="commands", dest="subcommand", required=True)
    for register in SUBCOMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command = shlex.join(["equiglass", *argv])
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return args.run(args)
    except (DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
