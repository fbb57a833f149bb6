"""A small load generator: N concurrent httpx clients hitting one URL for a fixed time.

Usage: python bench/loadgen.py URL [--token T] [--clients 8] [--duration 10] [--warmup 2]

Each client sends its next request as soon as the previous one is answered (closed loop),
over its own keep-alive connection. Prints one JSON object: requests, errors, requests/s,
and latency percentiles in milliseconds (warm-up requests are not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx


async def client_loop(
    client: httpx.AsyncClient, url: str, start: float, stop: float, latencies: list[float]
) -> int:
    errors = 0
    while True:
        sent = time.perf_counter()
        if sent >= stop:
            return errors
        response = await client.get(url)
        done = time.perf_counter()
        if response.status_code != 200:
            errors += 1
        elif sent >= start:
            latencies.append(done - sent)


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


async def run(url: str, token: str | None, clients: int, duration: float, warmup: float) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    latencies: list[float] = []
    start = time.perf_counter() + warmup
    stop = start + duration
    sessions = [
        httpx.AsyncClient(headers=headers, timeout=30, limits=httpx.Limits(max_connections=1))
        for _ in range(clients)
    ]
    try:
        errors = await asyncio.gather(
            *[client_loop(s, url, start, stop, latencies) for s in sessions]
        )
    finally:
        await asyncio.gather(*[s.aclose() for s in sessions])
    latencies.sort()
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": sum(errors),
        "rps": len(latencies) / duration,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--token")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    load = run(args.url, args.token, args.clients, args.duration, args.warmup)
    try:  # uvloop (installed with uvicorn[standard]) keeps the generator's own cost down
        import uvloop

        result = uvloop.run(load)
    except ImportError:
        result = asyncio.run(load)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
