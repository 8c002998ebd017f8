"""How fast the emulator serves: retrieve calls/s, accepting a 143 MB create, a 100 MB results stream.

The emulator runs as its CLI in a subprocess pinned to one core (``os.sched_setaffinity``),
the load generator in this process on the other cores, so the figures are the server's.
The load generator is a minimal keep-alive HTTP/1.1 client on raw sockets: an HTTP
library would measure itself. Server CPU time per retrieve comes from /proc.

    .venv/bin/python benchmarks/bench_emulator.py [--seconds 3] [--connections 32] [--results 100000]
        [--prompt-bytes 1300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import requests
from emulator_process import start_emulator

KEY = "bench-key"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2026-10-21"}
_LENGTH_RE = re.compile(rb"content-length: *(\d+)", re.IGNORECASE)


def pin_to(cpus: set[int]) -> Callable[[], None] | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    usable = os.sched_getaffinity(0)
    chosen = cpus & usable
    return (lambda: os.sched_setaffinity(0, chosen)) if chosen else None


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def create_body(n: int, prompt_bytes: int) -> bytes:
    """A create body of ``n`` requests whose prompts are about ``prompt_bytes`` long (1,300: ~143 MB for 100,000)."""
    filler = ("Summarise the following passage in two sentences and name its main subject. " * 40)[:prompt_bytes]
    body = {
        "requests": [
            {
                "custom_id": f"req-{i:06d}",
                "params": {
                    "model": "claude-bench",
                    "max_tokens": 1024,
                    "messages": [{"role": "user", "content": f"Question number {i}: {filler}"}],
                },
            }
            for i in range(n)
        ]
    }
    return json.dumps(body).encode()


def make_batch(url: str, n: int, prompt_bytes: int, pid: int) -> tuple[str, dict[str, float]]:
    """Create one batch; the wall time of the POST and the server CPU it cost (the create-accept figure)."""
    payload = create_body(n, prompt_bytes)
    cpu_before = cpu_seconds(pid)
    started = time.perf_counter()
    response = requests.post(
        url + "/v1/messages/batches", data=payload, headers={**HEADERS, "content-type": "application/json"}, timeout=300
    )
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    cpu = cpu_seconds(pid) - cpu_before
    print(
        f"create accept: {n:,} requests, {len(payload) / 1e6:.1f} MB body, {elapsed:.2f} s wall, {cpu:.2f} s server CPU"
    )
    figures = {"create_requests": n, "create_mb": len(payload) / 1e6, "create_accept_s": elapsed, "create_cpu_s": cpu}
    return str(response.json()["id"]), figures


async def _retrieve_worker(host: str, port: int, request: bytes, stop_at: float, latencies: list[float]) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    done = 0
    try:
        while time.perf_counter() < stop_at:
            sent = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            match = _LENGTH_RE.search(head)
            assert match is not None and head.startswith(b"HTTP/1.1 200"), head
            await reader.readexactly(int(match.group(1)))
            latencies.append(time.perf_counter() - sent)
            done += 1
    finally:
        writer.close()
    return done


async def retrieve_load(url: str, batch_id: str, seconds: float, connections: int) -> tuple[int, float, list[float]]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    request = (
        f"GET /v1/messages/batches/{batch_id} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"x-api-key: {KEY}\r\nanthropic-version: 2026-10-21\r\n\r\n"
    ).encode()
    latencies: list[float] = []
    started = time.perf_counter()
    counts = await asyncio.gather(
        *(_retrieve_worker(host, int(port), request, started + seconds, latencies) for _ in range(connections))
    )
    return sum(counts), time.perf_counter() - started, latencies


def stream_raw(url: str, path: str) -> tuple[int, float]:
    """Download with a bare socket: the server's streaming speed, not a client library's."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    started = time.perf_counter()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nx-api-key: {KEY}\r\nanthropic-version: 2026-10-21\r\n"
            "connection: close\r\n\r\n".encode()
        )
        buffer = bytearray(1 << 20)
        view = memoryview(buffer)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        header, _, body_start = head.partition(b"\r\n\r\n")
        match = _LENGTH_RE.search(header)
        assert match is not None, header
        remaining = int(match.group(1)) - len(body_start)
        total = len(body_start)
        while remaining > 0:
            got = sock.recv_into(view, min(len(buffer), remaining))
            if not got:
                raise RuntimeError("stream ended early")
            remaining -= got
            total += got
    return total, time.perf_counter() - started


def stream_httpx(url: str, path: str) -> tuple[int, float]:
    started = time.perf_counter()
    total = 0
    with httpx.Client(headers=HEADERS, timeout=60) as client, client.stream("GET", url + path) as response:
        for chunk in response.iter_raw(1 << 20):
            total += len(chunk)
    return total, time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of the retrieve load")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections")
    parser.add_argument("--results", type=int, default=100_000, help="requests in the results batch")
    parser.add_argument("--result-bytes", type=int, default=1024, help="size of one result line")
    parser.add_argument("--prompt-bytes", type=int, default=1300, help="prompt size of the create (1,300: ~143 MB)")
    args = parser.parse_args(argv)

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    server_cpu = cpus[0]
    client_pin = pin_to(set(cpus[1:]) or {server_cpu})
    if client_pin is not None:
        client_pin()
    proc, url = start_emulator(
        KEY, "--processing-seconds", "0.5", "--result-bytes", str(args.result_bytes), "--admin", cpu=server_cpu
    )
    figures: dict[str, Any] = {"cpus": len(cpus), "server_cpu": server_cpu}
    print(f"emulator at {url}, pinned to CPU {server_cpu}; load generator on CPUs {cpus[1:] or cpus}")
    try:
        small = requests.post(
            url + "/v1/messages/batches",
            json={
                "requests": [
                    {
                        "custom_id": "one",
                        "params": {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
                    }
                ]
            },
            headers=HEADERS,
            timeout=30,
        ).json()["id"]
        try:
            import uvloop

            run: Callable[[Any], Any] = uvloop.run
        except ImportError:
            run = asyncio.run
        run(retrieve_load(url, small, 0.5, args.connections))  # warm-up
        cpu_before = cpu_seconds(proc.pid)
        calls, elapsed, latencies = run(retrieve_load(url, small, args.seconds, args.connections))
        cpu_used = cpu_seconds(proc.pid) - cpu_before
        latencies.sort()
        figures["retrieve_per_s"] = calls / elapsed
        figures["retrieve_server_cpu_us"] = cpu_used / calls * 1e6
        print(
            f"retrieve: {calls:,} calls in {elapsed:.2f} s = {calls / elapsed:,.0f} calls/s on one server core "
            f"({args.connections} connections); server CPU {cpu_used / calls * 1e6:.0f} us/call; "
            f"latency p50 {latencies[len(latencies) // 2] * 1e3:.1f} ms, "
            f"p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.1f} ms"
        )

        batch_id, created = make_batch(url, args.results, args.prompt_bytes, proc.pid)
        figures.update(created)
        time.sleep(0.6)
        path = f"/v1/messages/batches/{batch_id}/results"
        started = time.perf_counter()
        first = requests.get(url + path, headers=HEADERS, timeout=300)
        first.raise_for_status()
        size = len(first.content)
        lines = first.content.count(b"\n")
        print(
            f"results: {lines:,} lines, {size / 1e6:.1f} MB; first download incl. any render wait "
            f"{time.perf_counter() - started:.2f} s"
        )
        del first
        raw = [stream_raw(url, path) for _ in range(3)]
        best_raw = min(t for _, t in raw)
        figures["stream_mb"] = size / 1e6
        figures["stream_raw_s"] = best_raw
        figures["stream_raw_mb_s"] = size / 1e6 / best_raw
        print(f"stream (raw socket): {size / 1e6:.1f} MB in {best_raw:.3f} s = {size / 1e6 / best_raw:,.0f} MB/s")
        via_httpx = [stream_httpx(url, path) for _ in range(2)]
        best_httpx = min(t for _, t in via_httpx)
        figures["stream_httpx_s"] = best_httpx
        print(
            f"stream (httpx iter_raw): {size / 1e6:.1f} MB in {best_httpx:.3f} s = {size / 1e6 / best_httpx:,.0f} MB/s"
        )
        figures["server_peak_rss_mb"] = peak_rss_mb(proc.pid)
        print(f"server peak RSS: {figures['server_peak_rss_mb']:,.0f} MB (holding the 100,000-result batch)")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    return figures


if __name__ == "__main__":
    main()
