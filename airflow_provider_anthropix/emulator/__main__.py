"""``anthropix-emulator`` / ``python -m airflow_provider_anthropix.emulator``: the emulator from a shell.

Prints exactly one line, ``Anthropix emulator listening on http://HOST:PORT``, once it
accepts connections (scripts wait for it and read the port from it), and exits with
status 0 on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from airflow_provider_anthropix.emulator.app import EmulatorApp
from airflow_provider_anthropix.emulator.config import DAY, EmulatorConfig
from airflow_provider_anthropix.emulator.faults import Fault, parse_fault_spec
from airflow_provider_anthropix.emulator.server import bind_socket, make_server, new_loop, serve_until_stopped, url_of


def build_parser() -> argparse.ArgumentParser:
    """The CLI's flags (each maps to an :class:`EmulatorConfig` field)."""
    p = argparse.ArgumentParser(
        prog="anthropix-emulator", description="A local emulator of the Anthropic Message Batches API."
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8787, help="TCP port; 0 picks a free one (default 8787)")
    p.add_argument("--api-key", default=None, help="the only API key accepted (default: any key)")
    p.add_argument("--processing-seconds", type=float, default=2.0, help="time for a batch to end (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of outcomes, result order and ids (default 0)")
    p.add_argument("--error-rate", type=float, default=0.0, help="share of requests that error (0-1, default 0)")
    p.add_argument("--expire-rate", type=float, default=0.0, help="share of requests that expire (0-1, default 0)")
    p.add_argument(
        "--rates-every-attempt",
        action="store_true",
        help="roll --error-rate/--expire-rate on every attempt of a custom_id, not only its first batch",
    )
    p.add_argument("--cancel-seconds", type=float, default=0.5, help="time a canceled batch stays canceling")
    p.add_argument("--expiry-seconds", type=float, default=DAY, help="batch expiry after creation (default 24 h)")
    p.add_argument(
        "--archive-seconds", type=float, default=29 * DAY, help="results archived after creation (default 29 days)"
    )
    p.add_argument("--result-bytes", type=int, default=1024, help="approx. size of a succeeded result line")
    p.add_argument("--max-requests", type=int, default=None, help="most requests per batch (default 100,000)")
    p.add_argument("--max-body-bytes", type=int, default=None, help="largest create body (default 256 MB)")
    p.add_argument(
        "--admin",
        action="store_true",
        help="serve /_emulator/{faults,stats,reset,clock} (they take the API key and JSON bodies)",
    )
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="arm a fault, e.g. 'status,endpoint=retrieve,status=529,count=3,retry_after=1' (repeatable)",
    )
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every API call")
    p.add_argument(
        "--unknown-models",
        choices=("accept", "errored"),
        default="accept",
        help="requests naming a model /v1/models does not list: accept them (default) or end them errored",
    )
    p.add_argument("--header-seconds", type=float, default=10.0, help="deadline for a request's headers (default 10)")
    p.add_argument("--body-seconds", type=float, default=60.0, help="deadline for a request's body (default 60)")
    p.add_argument(
        "--max-inflight-body-bytes",
        type=int,
        default=None,
        help="budget of request-body bytes received at once, all clients (default 1 GiB; over it: 503)",
    )
    p.add_argument("--log-level", default="warning", help="uvicorn log level (default warning)")
    return p


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """Turn parsed flags into a config (invalid values raise ValueError with the reason)."""
    faults = [parse_fault_spec(spec) for spec in args.fault]
    if args.latency > 0:
        faults.insert(0, Fault(kind="latency", seconds=args.latency, count=None))
    limits = {}
    if args.max_requests is not None:
        limits["max_requests"] = args.max_requests
    if args.max_body_bytes is not None:
        limits["max_body_bytes"] = args.max_body_bytes
    if args.max_inflight_body_bytes is not None:
        limits["max_inflight_body_bytes"] = args.max_inflight_body_bytes
    return EmulatorConfig(
        api_key=args.api_key,
        processing_seconds=args.processing_seconds,
        seed=args.seed,
        error_rate=args.error_rate,
        expire_rate=args.expire_rate,
        rates_every_attempt=args.rates_every_attempt,
        cancel_seconds=args.cancel_seconds,
        expiry_seconds=args.expiry_seconds,
        archive_seconds=args.archive_seconds,
        result_bytes=args.result_bytes,
        admin=args.admin,
        faults=faults,
        unknown_models=args.unknown_models,
        header_seconds=args.header_seconds,
        body_seconds=args.body_seconds,
        **limits,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until SIGINT/SIGTERM; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    sock = bind_socket(args.host, args.port)
    app = EmulatorApp(config)
    server = make_server(app, log_level=args.log_level)

    # uvicorn handles the signals while it serves and re-raises them when done; these
    # handlers make that re-raise a no-op (exit status 0) and cover a signal before start.
    def stop(_signum: int, _frame: FrameType | None) -> None:
        server.should_exit = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    line = f"Anthropix emulator listening on {url_of(sock)}"
    try:
        loop = new_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(serve_until_stopped(server, sock, lambda: print(line, flush=True)))
        loop.close()
    finally:
        app.store.close()
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
