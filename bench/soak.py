"""Soak: many clients for minutes against one server, with good, malformed and oversized requests; printed as a table.

    python bench/soak.py [--model DIR] [--clients 32] [--minutes 10]

Starts `extortion-guard serve` (defaults, one uvicorn process) and runs ``--clients`` concurrent clients. Each
request is, in turn: a good single message (6 in 10), a good request of 8 messages with context (1 in 10), a
malformed body (1 in 10: broken JSON, a wrong type, a blank text), or an oversized one (1 in 10: 65 messages, or
a body over 1 MB). It counts responses by status, 5xx and transport errors, and samples the server's resident
memory every 10 seconds; growth is measured from the first sample after a one-minute warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_load import serve

from model.classifier import DEFAULT_MODEL_DIR
from model.data_format import read_messages

WARM_UP_SECONDS = 60


def request_body(kind: int, texts: list[str], n: int) -> bytes:
    text = texts[n % len(texts)]
    if kind < 6:
        return json.dumps({"messages": [{"text": text}]}).encode()
    if kind == 6:
        turns = [{"role": ("buyer", "seller")[i % 2], "text": texts[(n + i) % len(texts)]} for i in range(4)]
        return json.dumps({"messages": [{"text": texts[(n + i) % len(texts)], "context": turns} for i in range(8)]}).encode()
    if kind in (7, 8):
        return (b'{"messages": [{"text": ', b'{"messages": [{"text": 5}]}', b'{"messages": [{"text": "   "}]}')[n % 3]
    if n % 2:
        return json.dumps({"messages": [{"text": text}] * 65}).encode()
    return json.dumps({"messages": [{"text": "在" * 400_000}]}).encode()


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def soak(url: str, pid: int, texts: list[str], clients: int, seconds: float):
    statuses: Counter = Counter()
    latencies: list[float] = []
    memory: list[tuple[float, float]] = []
    counter = itertools.count()
    started = time.perf_counter()
    stop = started + seconds

    async def client_loop(http: httpx.AsyncClient):
        while time.perf_counter() < stop:
            n = next(counter)
            body = request_body(n % 10, texts, n)
            began = time.perf_counter()
            try:
                response = await http.post("/v1/classify", content=body, headers={"Content-Type": "application/json"})
                statuses[response.status_code] += 1
            except httpx.HTTPError as error:
                statuses[type(error).__name__] += 1
            latencies.append(time.perf_counter() - began)

    async def sample_memory():
        while time.perf_counter() < stop:
            memory.append((time.perf_counter() - started, resident_mib(pid)))
            await asyncio.sleep(10)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        await asyncio.gather(sample_memory(), *(client_loop(http) for _ in range(clients)))
    return statuses, latencies, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--minutes", type=float, default=10)
    args = parser.parse_args()
    texts = [m.text for m in read_messages(["data/annotations/eval/blind"])]
    server, url = serve(args.model, "auto", 5.0)
    try:
        statuses, latencies, memory = asyncio.run(soak(url, server.pid, texts, args.clients, args.minutes * 60))
    finally:
        server.terminate()
        server.wait(30)
    total = sum(statuses.values())
    server_errors = sum(v for k, v in statuses.items() if isinstance(k, int) and k >= 500)
    transport = sum(v for k, v in statuses.items() if not isinstance(k, int))
    after_warm_up = [mib for at, mib in memory if at >= WARM_UP_SECONDS] or [memory[-1][1]]
    growth = 100 * (max(after_warm_up) - after_warm_up[0]) / after_warm_up[0]
    ms = np.array(latencies) * 1000
    print(f"{args.clients} clients for {args.minutes:g} min against one server ({os.cpu_count()} cores shared), model {args.model}\n")
    print(
        "| requests | per second | by status | 5xx | transport errors | p50 ms | p99 ms "
        "| resident MiB after warm-up: first → max | growth |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    by_status = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=lambda item: str(item[0])))
    print(
        f"| {total:,} | {total / (args.minutes * 60):.1f} | {by_status} | {server_errors} | {transport} | "
        f"{np.percentile(ms, 50):.0f} | {np.percentile(ms, 99):.0f} | {after_warm_up[0]:.0f} → {max(after_warm_up):.0f} | {growth:.1f}% |"
    )


if __name__ == "__main__":
    main()
