"""The CLI reference of ``docs/operate.md``, rendered from the parser so the docs cannot drift.

``python -m airflow_provider_anthropix.cli.reference --write docs/operate.md`` rewrites the
part between the two markers; a unit test fails when that part differs from the parser.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from airflow_provider_anthropix.cli.parser import build_parser

BEGIN = "<!-- cli-reference: begin (generated from the parser; do not edit) -->"
END = "<!-- cli-reference: end -->"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _walk(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for child, sub in _subparsers(parser).items():
        if child != "emulator":
            yield from _walk(sub, f"{name} {child}")


def render() -> str:
    """Markdown: for each command, its ``--help`` as printed on a terminal."""
    parts = []
    for name, parser in _walk(build_parser(), "anthropix"):
        parts.append(f"### `{name}`\n\n```text\n{parser.format_help().rstrip()}\n```\n")
    parts.append(
        "### `anthropix emulator`\n\nThe local emulator, with the flags of `anthropix-emulator` "
        "(see [emulator.md](emulator.md)); `anthropix emulator --help` lists them.\n"
    )
    return "\n".join(parts)


def splice(document: str) -> str:
    """``document`` with the generated reference between the markers."""
    head, _, rest = document.partition(BEGIN)
    _, _, tail = rest.partition(END)
    if not rest:
        raise ValueError(f"the document has no {BEGIN!r} marker")
    return f"{head}{BEGIN}\n\n{render()}\n{END}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--write"] and len(args) == 2:
        path = Path(args[1])
        path.write_text(splice(path.read_text()))
        return 0
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
