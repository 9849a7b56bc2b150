"""Benchmark the HTTP-01 responder on loopback: requests/s and p50/p95/p99 latency for N concurrent clients.

The responder runs in a child process so the client threads do not compete with it for the GIL; the
clients use raw sockets so the figures are the server's, not an HTTP library's. Two modes: ``keepalive``
(many requests per connection) and ``close`` (a new connection per request, as a CA's validation
request arrives). The run is bounded by a request count and a time limit, and never leaves loopback.

    .venv/bin/python bench/bench_responder.py [--requests 20000] [--threads 16] [--mode both]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import multiprocessing
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from agent.responder import CHALLENGE_PATH_PREFIX, ChallengeMap, Responder


def serve(pipe: Connection, token: str, key_authorization: str) -> None:
    """Child process: run a responder serving one token until the parent says stop."""
    challenges = ChallengeMap()
    challenges.put(token, key_authorization)
    with Responder(challenges, "127.0.0.1", 0, max_connections=1024) as responder:
        pipe.send(responder.port)
        pipe.recv()


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


def read_reply(sock: socket.socket, buffer: bytearray) -> bytes:
    """Read one HTTP reply from ``sock`` (bytes past it stay in ``buffer``); return its body."""
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the headers ended")
        buffer += chunk
    head = bytes(buffer[:end]).decode("latin-1")
    length = next(
        int(line.split(":", 1)[1])
        for line in head.split("\r\n")
        if line.lower().startswith("content-length:")
    )
    while len(buffer) < end + 4 + length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the body ended")
        buffer += chunk
    body = bytes(buffer[end + 4 : end + 4 + length])
    del buffer[: end + 4 + length]
    return body


def client(port: int, request: bytes, expected: bytes, count: int, keepalive: bool, stop_at: float) -> Result:
    result = Result()
    sock: socket.socket | None = None
    buffer = bytearray()
    for _ in range(count):
        if time.monotonic() >= stop_at:
            break
        started = time.perf_counter()
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buffer.clear()
            sock.sendall(request)
            body = read_reply(sock, buffer)
        except OSError:
            result.errors += 1
            if sock is not None:
                sock.close()
            sock = None
            continue
        result.latencies.append(time.perf_counter() - started)
        if body != expected:
            result.errors += 1
        if not keepalive:
            sock.close()
            sock = None
    if sock is not None:
        sock.close()
    return result


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(
    port: int, token: str, expected: bytes, *, requests: int, threads: int, keepalive: bool, limit_s: float
) -> None:
    connection = "keep-alive" if keepalive else "close"
    request = (
        f"GET {CHALLENGE_PATH_PREFIX}{token} HTTP/1.1\r\nHost: bench\r\nConnection: {connection}\r\n\r\n"
    )
    results: list[Result] = [Result() for _ in range(threads)]
    stop_at = time.monotonic() + limit_s
    per_thread = [requests // threads + (1 if i < requests % threads else 0) for i in range(threads)]

    def work(index: int) -> None:
        results[index] = client(port, request.encode(), expected, per_thread[index], keepalive, stop_at)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    latencies = sorted(latency for result in results for latency in result.latencies)
    errors = sum(result.errors for result in results)
    done = len(latencies)
    mode = "keepalive" if keepalive else "close"
    if not latencies:
        print(f"{mode:9}  no request completed ({errors} errors)")
        return
    p50, p95, p99 = (percentile(latencies, fraction) * 1000 for fraction in (0.50, 0.95, 0.99))
    print(
        f"{mode:9}  {done:6d} requests  {threads:3d} threads  {elapsed:6.2f} s  {done / elapsed:8.0f} req/s  "
        f"p50 {p50:6.2f} ms  p95 {p95:6.2f} ms  p99 {p99:6.2f} ms  errors {errors}"
        + ("  (time limit hit)" if done + errors < requests else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per mode")
    parser.add_argument("--threads", type=int, default=16, help="concurrent clients")
    parser.add_argument("--mode", choices=("keepalive", "close", "both"), default="both")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time limit per mode")
    args = parser.parse_args()

    token = secrets.token_urlsafe(32)
    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(b"bench").digest()).decode().rstrip("=")
    key_authorization = f"{token}.{thumbprint}"
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    server = context.Process(target=serve, args=(child, token, key_authorization), daemon=True)
    server.start()
    try:
        port = parent.recv()
        modes = ("keepalive", "close") if args.mode == "both" else (args.mode,)
        for mode in modes:
            run(
                port,
                token,
                key_authorization.encode(),
                requests=args.requests,
                threads=args.threads,
                keepalive=mode == "keepalive",
                limit_s=args.max_seconds,
            )
    finally:
        parent.send("stop")
        server.join(timeout=5)
        if server.is_alive():
            server.terminate()


if __name__ == "__main__":
    main()
