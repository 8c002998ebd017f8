"""The ``anthropix`` command line's flags, in plain :mod:`argparse`.

Kept apart from the commands and free of imports beyond the standard library (and
:mod:`~airflow_provider_anthropix.api.retention`, which is standard library only): ``anthropix
--help`` and a mistyped flag answer at once, and ``docs/operate.md``'s reference is rendered
from this parser (:mod:`airflow_provider_anthropix.cli.reference`), so the two cannot drift.
"""

from __future__ import annotations

import argparse
import functools
from datetime import timedelta

from airflow_provider_anthropix.api.retention import parse_age

PROG = "anthropix"
#: Help is wrapped at a fixed width, so the generated reference is the same on every terminal.
HELP_WIDTH = 100

#: What each exit status means; printed in ``--help`` and the docs, returned by :func:`cli.main`.
EXIT_CODES: dict[int, str] = {
    0: "done",
    1: "unexpected error (a bug: please report it with the message)",
    2: "usage: a flag or argument is wrong",
    3: "not found: no batch with that id for these credentials",
    4: "authentication or permission: the key was rejected (HTTP 401/403)",
    5: "API or network trouble: 429, 5xx, 529, timeout, connection refused, an answer that is not JSON",
    6: "settings: the connection is missing or unusable, or ANTHROPIC_API_KEY is not set",
    7: "refused by the API in this state (HTTP 400), e.g. deleting a batch that has not ended",
    8: "the export failed: bad destination, results that do not match the batch, bad format",
    9: "wait: the batch had not ended when --timeout ran out",
    10: (
        "refused: the batch's results_url is not on the API's origin (another host, port or scheme), "
        "so the key was not sent there and nothing was downloaded"
    ),
    130: "interrupted (Ctrl-C); a results export leaves nothing behind",
}

_EPILOG = "exit status:\n" + "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES.items())

_CREDENTIALS = """\
credentials (one of):
  --conn-id ID     an Airflow connection of type anthropix (default: anthropix_default): the
                   AIRFLOW_CONN_<ID> environment variable (JSON or URI, read without importing
                   Airflow), else the configured secrets backend, through Airflow
  --base-url URL   the API's address; the key is read from the ANTHROPIC_API_KEY environment
                   variable (never pass a key as a flag: it would land in shell history)
"""


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, width=HELP_WIDTH, max_help_position=32)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _age(text: str) -> timedelta:
    try:
        return parse_age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _credential_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("credentials")
    exclusive = group.add_mutually_exclusive_group()
    exclusive.add_argument(
        "--conn-id",
        metavar="ID",
        default=None,
        help="Airflow connection id (default: anthropix_default)",
    )
    exclusive.add_argument(
        "--base-url",
        metavar="URL",
        default=None,
        help="API base URL, e.g. http://127.0.0.1:8787; key from $ANTHROPIC_API_KEY",
    )
    group.add_argument(
        "--api-version",
        metavar="VERSION",
        default=None,
        help="anthropic-version header with --base-url (default 2026-10-21)",
    )


def _json_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON (for scripts) instead of a table")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: ``anthropix batches ...`` and ``anthropix emulator ...``."""
    make = functools.partial(argparse.ArgumentParser, formatter_class=_formatter)
    parser = make(
        prog=PROG,
        description=(
            "Operate Anthropic Message Batches from a terminal: list, watch, cancel, delete, download, archive."
        ),
        epilog=_CREDENTIALS + "\n" + _EPILOG,
    )
    parser.add_argument("--version", action="store_true", help="print the provider's version and exit")
    parser.set_defaults(print_help=parser.print_help, action=None)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    batches = commands.add_parser(
        "batches",
        help="list, show, wait for, cancel, delete, download and archive batches",
        description="Message batches of one API key (one Airflow connection).",
        formatter_class=_formatter,
        epilog=_CREDENTIALS + "\n" + _EPILOG,
    )
    batches.set_defaults(print_help=batches.print_help)
    actions = batches.add_subparsers(dest="action", metavar="ACTION")
    sub = functools.partial(actions.add_parser, formatter_class=_formatter)

    listing = sub("list", help="recent batches, newest first", description="Recent batches, newest first.")
    listing.add_argument(
        "--limit", type=_positive_int, default=None, metavar="N", help="show at most N batches (default 20)"
    )
    listing.add_argument("--all", action="store_true", help="every batch of the key, page after page")
    _json_flag(listing, "a JSON array of batch objects")
    _credential_flags(listing)

    show = sub("show", help="one batch: status, counts, times", description="One batch: status, counts and times.")
    show.add_argument("batch_id", metavar="ID", help="the batch id (msgbatch_...)")
    _json_flag(show, "the batch object")
    _credential_flags(show)

    wait = sub(
        "wait",
        help="a progress bar until the batch ends",
        description="Poll the batch and draw its progress until it ends (exit 0), or --timeout runs out (exit 9).",
    )
    wait.add_argument("batch_id", metavar="ID", help="the batch id")
    wait.add_argument(
        "--interval", type=_positive_float, default=5.0, metavar="SECONDS", help="seconds between polls (default 5)"
    )
    wait.add_argument(
        "--timeout", type=_positive_float, default=None, metavar="SECONDS", help="give up after this long (exit 9)"
    )
    _json_flag(wait, "the ended batch")
    _credential_flags(wait)

    cancel = sub(
        "cancel",
        help="cancel a batch that is still processing",
        description="Ask the API to cancel the batch; requests already running may still finish.",
    )
    cancel.add_argument("batch_id", metavar="ID", help="the batch id")
    cancel.add_argument("--wait", action="store_true", help="then wait until it has ended (as `wait` does)")
    cancel.add_argument(
        "--interval", type=_positive_float, default=2.0, metavar="SECONDS", help="poll interval with --wait"
    )
    _json_flag(cancel, "the batch")
    _credential_flags(cancel)

    delete = sub(
        "delete",
        help="delete an ended batch and its results",
        description="Delete a batch (only once it has ended: cancel it first).",
    )
    delete.add_argument("batch_id", metavar="ID", help="the batch id")
    _json_flag(delete, "the API's answer")
    _credential_flags(delete)

    results = sub(
        "results",
        help="download the results of an ended batch",
        description=(
            "Download the results of an ended batch. Without -o the bytes the API serves go to standard\n"
            "output unchanged; with -o they go through the same export as FetchBatchResultsOperator: a\n"
            "folder with results.jsonl (or .parquet, or one file per outcome) and _manifest.json, published\n"
            "only once complete and checked against the batch's counts."
        ),
    )
    results.add_argument("batch_id", metavar="ID", help="the batch id")
    results.add_argument(
        "-o",
        "--output",
        metavar="PATH_OR_URI",
        default=None,
        help=(
            "destination folder: a path, file:///..., s3://bucket/prefix, ... (default: standard output); "
            "a symbolic link is refused: give the real folder"
        ),
    )
    results.add_argument(
        "--format", choices=("jsonl", "parquet"), default="jsonl", help="file format with -o (default jsonl)"
    )
    results.add_argument(
        "--compression", default=None, metavar="CODEC", help="gzip for jsonl; the Parquet codec (default zstd)"
    )
    results.add_argument(
        "--split", action="store_true", help="one file per outcome: succeeded, errored, canceled, expired"
    )
    results.add_argument(
        "--destination-conn-id",
        metavar="ID",
        default=None,
        help="Airflow connection of the store (e.g. an aws one for s3://)",
    )
    _json_flag(results, "the export summary (with -o)")
    _credential_flags(results)

    archive = sub(
        "archive",
        help="keep the results of every ended batch before they expire",
        description=(
            "Export the results of every ended batch of the key that are not archived yet, each to\n"
            "<DEST>/<batch_id>/ (results.jsonl and _manifest.json, the export of `results -o`), before the\n"
            "API drops them 29 days after the batch was created. A batch counts as archived when\n"
            "<DEST>/<batch_id>/_manifest.json is a complete export of that batch whose files are there;\n"
            "anything else is exported again. Run it again and it exports nothing new. Batches whose\n"
            "results expire within 3 days get a warning on standard error; those already gone are listed.\n"
            "A batch that fails does not stop the others; the exit status is then the first failure's."
        ),
    )
    archive.add_argument(
        "--to",
        dest="to",
        metavar="DEST",
        required=True,
        help=(
            "archive folder: a path, file:///..., s3://bucket/prefix, ...; a symbolic link is refused: "
            "give the real folder"
        ),
    )
    archive.add_argument(
        "--older-than",
        type=_age,
        default=None,
        metavar="AGE",
        help="only batches created at least this long ago: 20d, 36h, 90m, 1d12h (default: every ended batch)",
    )
    archive.add_argument(
        "--destination-conn-id",
        metavar="ID",
        default=None,
        help="Airflow connection of the store (e.g. an aws one for s3://)",
    )
    _json_flag(archive, "the report (every batch looked at, and the counts)")
    _credential_flags(archive)

    commands.add_parser(
        "emulator",
        help="run the local Message Batches emulator (same flags as anthropix-emulator)",
        description="Run the local emulator; every flag after `emulator` is the emulator's (see `anthropix emulator --help`).",
        formatter_class=_formatter,
        add_help=False,
    ).add_argument("emulator_args", nargs=argparse.REMAINDER, metavar="...", help="the emulator's flags")
    return parser
