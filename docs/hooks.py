"""MkDocs hooks: pages generated from the repository at build time, so that they cannot drift from it.

Markers, each alone on a line of a page's Markdown:

* ``<!-- cli-reference -->``: ``equiglass --help`` and the ``--help`` of every subcommand, taken from
  the parser of :mod:`equiglass.cli` (so the page names every registered subcommand);
* ``<!-- results: SPEC.toml -->``: the section of ``experiments/RESULTS.md`` whose heading names
  ``SPEC.toml`` (its numbers, words and plots); ``<!-- results: intro -->`` the text before the first
  experiment;
* ``<!-- include: PATH -->``: a repository file verbatim, as a fenced code block.

A marker whose target is missing fails the build. The plots of ``experiments/results/`` are added
to the site at ``experiments/results/``, where the pages of ``docs/experiments/`` (like
``RESULTS.md``) find them. Sphinx-style roles of the docstrings (``:func:`x```) are rendered as
plain code in the API pages.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "RESULTS.md"
PLOTS = ROOT / "experiments" / "results"
MARKER = re.compile(r"^<!-- (cli-reference|results: (\S+)|include: (\S+)) -->$", re.MULTILINE)
HELP_COLUMNS = "100"


def cli_reference() -> str:
    """Markdown of ``equiglass --help`` and of every subcommand's ``--help``, in the parser's order."""
    os.environ["COLUMNS"] = HELP_COLUMNS  # argparse wraps to the terminal width: make it fixed
    from equiglass.cli import build_parser

    parser = build_parser()
    subparsers = next(action for action in parser._actions if action.choices and action.dest == "subcommand")
    parts = ["## equiglass", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, subparser in subparsers.choices.items():
        parts += [f"## equiglass {name}", "", "```text", subparser.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def results_section(key: str) -> str:
    """The body of the RESULTS.md section whose heading names ``key`` (or the intro before the first)."""
    text = RESULTS.read_text(encoding="utf-8")
    sections = re.split(r"^(?=## )", text, flags=re.MULTILINE)
    if key == "intro":
        intro = [section for section in sections[1:] if not re.match(r"## \d+\.", section)]
        body = sections[0].split("\n", 1)[1] + "".join(intro)
        return body.replace("\n## ", "\n### ").strip()
    for section in sections:
        heading, _, body = section.partition("\n")
        if heading.startswith("## ") and f"`{key}`" in heading:
            return body.strip()
    raise PluginError(f"{RESULTS}: no section whose heading names `{key}`")


def include(path: str) -> str:
    """A repository file as a fenced code block."""
    source = ROOT / path
    if not source.is_file():
        raise PluginError(f"include: no file {source}")
    language = {".toml": "toml", ".py": "python", ".in": "text"}.get(source.suffix, "text")
    return f"```{language} title=\"{path}\"\n{source.read_text(encoding='utf-8').rstrip()}\n```"


def replacement(match: re.Match) -> str:
    if match.group(1) == "cli-reference":
        return cli_reference()
    if match.group(2) is not None:
        return results_section(match.group(2))
    return include(match.group(3))


def on_page_markdown(markdown: str, page, config, files) -> str:
    return MARKER.sub(replacement, markdown)


def on_files(files, config):
    for plot in sorted(PLOTS.glob("*.png")):
        files.append(File.generated(config, f"experiments/results/{plot.name}", abs_src_path=str(plot)))
    return files


ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj):(?=<code>)")
TILDE = re.compile(r"<code>~(?:[\w]+\.)*([\w]+)</code>")


def on_page_content(html: str, page, config, files) -> str:
    return TILDE.sub(r"<code>\1</code>", ROLE.sub("", html))
