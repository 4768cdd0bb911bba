"""Latency and throughput of ``POST /v1/classify`` on localhost, printed as tables.

    python bench/api_load.py [--model DIR] [--requests 300] [--clients 32] [--seconds 60]

Starts `extortion-guard serve` (one uvicorn process, as in production) on a free port
twice: with micro-batching (a 5 ms window under load), then without, on the same model; the clients
run in this process. Against each server it measures
1. single-message latency: one client, sequential requests (p50, p90, p99), without and
   with evidence (evidence only against the micro-batching server), from an httpx client and
   from the lighter ``http.client``;
2. load: ``--clients`` concurrent clients, each sending one message per request for
   ``--seconds`` seconds; requests per second, latency percentiles and errors.
Messages are texts of the labelled set (or, with `--texts chat`, turns of real Taobao chat), each request a
different one. `--cascade` is passed to the server.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import itertools
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse

import httpx
import numpy as np

from model.classifier import DEFAULT_MODEL_DIR
from model.data_format import read_messages


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(model: str, precision: str, wait_ms: float, cascade: str) -> tuple[subprocess.Popen, str]:
    """``extortion-guard serve`` in its own process; returns it once /healthz answers."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "serve.cli",
        "serve",
        "--no-login",
        "--port",
        str(port),
        "--model",
        model,
        "--precision",
        precision,
        "--micro-batch-wait-ms",
        str(wait_ms),
        "--cascade",
        cascade,
    ]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("the server did not start within 180 s")


def mean_batch(url: str) -> str:
    """Messages per model call, from the server's Prometheus histogram."""
    text = httpx.get(f"{url}/metrics").text
    total = float(re.search(r"^extortion_guard_batch_messages_sum (\S+)", text, re.M).group(1))
    calls = float(re.search(r"^extortion_guard_batch_messages_count (\S+)", text, re.M).group(1))
    return f"{total / calls:.1f}" if calls else "–"


def percentiles(seconds: list[float]) -> str:
    ms = np.array(seconds) * 1000
    return f"{np.percentile(ms, 50):.1f} | {np.percentile(ms, 90):.1f} | {np.percentile(ms, 99):.1f}"


def sequential(url: str, texts, evidence: bool, n: int, lean_client: bool = False) -> list[float]:
    """Latencies of ``n`` requests sent one after another on one keep-alive connection.

    ``lean_client``: the standard library's ``http.client`` instead of httpx, whose own work per request
    (about 2 ms on a 2-core machine) otherwise counts as latency.
    """
    latencies = []
    if lean_client:
        connection = http.client.HTTPConnection(urllib.parse.urlsplit(url).netloc, timeout=60)
        for text in itertools.islice(texts, n):
            body = json.dumps({"messages": [{"text": text}], "evidence": evidence}).encode()
            started = time.perf_counter()
            connection.request("POST", "/v1/classify", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            latencies.append(time.perf_counter() - started)
            if response.status != 200:
                raise RuntimeError(f"/v1/classify answered {response.status}")
        connection.close()
        return latencies
    with httpx.Client(base_url=url, timeout=60) as client:
        for text in itertools.islice(texts, n):
            started = time.perf_counter()
            response = client.post("/v1/classify", json={"messages": [{"text": text}], "evidence": evidence})
            latencies.append(time.perf_counter() - started)
            response.raise_for_status()
    return latencies


async def load(url: str, texts: list[str], clients: int, seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    counter = itertools.count()

    async def client_loop(http: httpx.AsyncClient):
        nonlocal errors
        while time.perf_counter() < stop:
            text = texts[next(counter) % len(texts)]
            started = time.perf_counter()
            try:
                response = await http.post("/v1/classify", json={"messages": [{"text": text}]})
                if response.status_code != 200:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await asyncio.gather(*(client_loop(http) for _ in range(clients)))
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--requests", type=int, default=300, help="sequential single-message requests")
    parser.add_argument("--evidence-requests", type=int, default=100)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--cascade", default="auto", choices=["auto", "on", "off"], help="the server's --cascade")
    parser.add_argument(
        "--texts",
        default="corpus",
        choices=["corpus", "chat"],
        help="corpus: the labelled set's messages without context; chat: buyers' and sellers' turns of real Taobao chat "
        "(bench/speed.py's log, which holds 5%% corpus threats), sent without their context",
    )
    parser.add_argument("--skip-load", action="store_true", help="single-message latency only")
    args = parser.parse_args()

    if args.texts == "chat":
        from speed import chat_log

        texts = [row["text"] for row in chat_log(5000, 0.05)]
    else:
        texts = [m.text for m in read_messages(["data/annotations/messages"]) if not m.context][:5000]
    print(
        f"model {args.model}, precision {args.precision}, --cascade {args.cascade}, {args.texts} texts, "
        f"{os.cpu_count()} cores shared by server and clients; "
        f"mean message {statistics.mean(len(t) for t in texts):.0f} characters"
    )

    latency_rows, load_rows = [], []
    for batching in (True, False):
        server, url = serve(args.model, args.precision, 5.0 if batching else 0.0, args.cascade)
        sequential(url, itertools.cycle(texts), False, 20)  # warm-up
        name = "micro-batching" if batching else "no micro-batching"
        latency_rows.append((f"{name}, no evidence, httpx client", percentiles(sequential(url, iter(texts), False, args.requests))))
        latency_rows.append((f"{name}, no evidence, http.client", percentiles(sequential(url, iter(texts), False, args.requests, True))))
        if batching:
            latency_rows.append(
                (f"{name}, with evidence, httpx client", percentiles(sequential(url, iter(texts[1000:]), True, args.evidence_requests)))
            )
            latency_rows.append(
                (
                    f"{name}, with evidence, http.client",
                    percentiles(sequential(url, iter(texts[1000:]), True, args.evidence_requests, True)),
                )
            )
        if not args.skip_load:
            latencies, errors = asyncio.run(load(url, texts, args.clients, args.seconds))
            load_rows.append((name, len(latencies) / args.seconds, percentiles(latencies), errors, mean_batch(url)))
        server.terminate()
        server.wait(timeout=30)

    print("\nSingle message, one client, sequential:\n")
    print("| server | p50 ms | p90 ms | p99 ms |")
    print("|---|---|---|---|")
    for name, cells in latency_rows:
        print(f"| {name} | {cells} |")
    if not load_rows:
        return
    print(f"\n{args.clients} concurrent clients for {args.seconds:.0f} s, one message per request:\n")
    print("| server | requests/s | p50 ms | p90 ms | p99 ms | errors | messages per model call |")
    print("|---|---|---|---|---|---|---|")
    for name, rate, cells, errors, messages_per_call in load_rows:
        print(f"| {name} | {rate:.1f} | {cells} | {errors} | {messages_per_call} |")
    print(f"\nmicro-batching / none: {load_rows[0][1] / load_rows[1][1]:.2f}x the throughput")


if __name__ == "__main__":
    main()
