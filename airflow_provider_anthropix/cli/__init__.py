"""``anthropix``: operate Message Batches from a terminal, on the same clients as the operators.

Imports are deferred to the command that needs them: ``anthropix --help`` loads argparse
only; ``--base-url`` commands, and ``--conn-id`` ones whose ``AIRFLOW_CONN_<ID>`` is set, never
import Airflow (other ``--conn-id`` ones import it only to read the connection; ``results -o``
and ``archive`` for the object-storage path). Exit statuses are listed in :data:`parser.EXIT_CODES`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TextIO

__all__ = ["main"]


def _status_of(exc: BaseException) -> tuple[int, str]:
    """The exit status and the one line printed for an error."""
    from airflow_provider_anthropix.api.errors import (
        AnthropixAPIError,
        AnthropixConnectionError,
        AnthropixResponseError,
        AuthenticationError,
        BadRequestError,
        NotFoundError,
        PermissionDeniedError,
        ResultsHostError,
    )
    from airflow_provider_anthropix.cli.commands import (
        ArchiveIncomplete,
        ExportFailed,
        NotEndedError,
        UsageError,
        WaitTimeout,
    )
    from airflow_provider_anthropix.cli.credentials import CredentialsError
    from airflow_provider_anthropix.hooks.settings import ConnectionSettingsError

    if isinstance(exc, ArchiveIncomplete):
        return _status_of(exc.first)[0], f"archive incomplete: {exc}"
    if isinstance(exc, UsageError):
        return 2, str(exc)
    if isinstance(exc, NotFoundError):
        return 3, f"not found: {exc}"
    if isinstance(exc, AuthenticationError | PermissionDeniedError):
        return 4, f"the API key was refused: {exc}"
    if isinstance(exc, BadRequestError | NotEndedError):
        return 7, str(exc)
    if isinstance(exc, AnthropixAPIError | AnthropixConnectionError | AnthropixResponseError):
        return 5, str(exc)
    if isinstance(exc, CredentialsError | ConnectionSettingsError):
        return 6, str(exc)
    if isinstance(exc, ExportFailed):
        return 8, f"export failed: {exc}"
    if isinstance(exc, WaitTimeout):
        return 9, str(exc)
    if isinstance(exc, ResultsHostError):
        # Not a bug: the check that keeps the key on the API's origin did its job (the URL came from the server).
        return 10, f"refused: {exc}"
    return 1, f"{type(exc).__name__}: {exc}"


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one command; returns the exit status (see ``anthropix --help``)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout
    err = err or sys.stderr
    if args_list[:1] == ["emulator"]:
        # Every flag after `emulator` is the emulator's own: hand them over untouched. The process
        # becomes the emulator's own entry point (same pid, same streams), so nothing in the
        # product imports the emulator package.
        command = [sys.executable, "-m", "airflow_provider_anthropix.emulator", *args_list[1:]]
        os.execv(sys.executable, command)

    from airflow_provider_anthropix.cli.parser import build_parser

    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse: --help is 0, a bad flag 2
        return int(exc.code or 0)
    if args.version:
        from airflow_provider_anthropix import __version__

        out.write(f"anthropix {__version__}\n")
        return 0
    if args.command != "batches" or args.action is None:
        args.print_help(err)
        return 2

    from airflow_provider_anthropix.cli import commands
    from airflow_provider_anthropix.cli.credentials import open_client

    client = None
    try:
        client = open_client(args.conn_id, args.base_url, args.api_version)
        if args.action == "list":
            return commands.batches_list(client, args, out)
        if args.action == "show":
            return commands.batches_show(client, args, out)
        if args.action == "wait":
            return commands.batches_wait(client, args, out, err)
        if args.action == "cancel":
            return commands.batches_cancel(client, args, out, err)
        if args.action == "delete":
            return commands.batches_delete(client, args, out)
        if args.action == "archive":
            return commands.batches_archive(client, args, out, err)
        return commands.batches_results(client, args, out, err)
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return 130
    except Exception as exc:
        status, message = _status_of(exc)
        if client is not None and hasattr(client, "config"):
            message = client.config.redactor()(message)
        err.write(f"anthropix: {message}\n")
        return status
    finally:
        if client is not None:
            client.close()
