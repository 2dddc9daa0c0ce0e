"""Load test of `mtkit serve`: concurrent one-sentence clients against offline translation.

For batching on (the default --max-batch) and off (--max-batch 1), it starts the server on a
model, then for greedy search and beam 5 runs 1, 8 and 64 concurrent clients for --seconds each.
Every client keeps one connection open and sends one test sentence per request, waiting for
each answer before the next (closed loop). It prints sentences/s, p50/p95/p99 latency and the
mean number of requests each decode served, next to the offline throughput of the same model on
the same sentences (`Translator.translate`, what `mtkit translate` runs, after loading; median
of --repeats runs), in its default batches and in batches of the server's --max-batch. Every
answer is checked against the offline translation of its sentence: any difference or failed
request makes the script exit with status 1.

    python benchmarks/serve_load.py --model RUN_DIR --data DATA_DIR [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from mtkit.decoding import SearchOptions
from mtkit.serve.client import ServerProcess
from mtkit.serve.settings import ServeSettings
from mtkit.translate import Translator

SERVER_MAX_BATCH = ServeSettings().max_batch  # the server's default, the one it runs with here


@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)
    wrong: int = 0
    failed: int = 0
    seconds: float = 0.0


def offline(model: str, sentences: list[str], beam: int, repeats: int, precision: str,
            batch_size: int | None = None) -> tuple[float, list[str]]:
    """Sentences per second of batch translation (median of ``repeats``) and its outputs;
    ``batch_size`` sentences a batch, or the default token batches."""
    translator = Translator(model, precision=precision)
    options = SearchOptions(beam=beam)
    translator.translate(sentences[:64], options)  # warm-up
    times, outputs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        outputs = translator.translate(sentences, options, batch_size)
        times.append(time.perf_counter() - start)
    return len(sentences) / statistics.median(times), outputs


async def client(url: str, start: int, step: int, sentences: list[str], expected: list[str], beam: int,
                 until: float, load: Load) -> None:
    """One closed-loop client on one keep-alive connection: sentences start, start+step, ..."""
    parts = urlsplit(url)
    head = f"POST /translate HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    index = start
    while time.perf_counter() < until:
        i = index % len(sentences)
        index += step
        body = json.dumps({"text": [sentences[i]], "beam": beam}).encode()
        sent = time.perf_counter()
        try:
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            status, answer = await _response(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):  # a lost connection counts as failed
            load.failed += 1
            writer.close()
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            continue
        load.latencies.append(time.perf_counter() - sent)
        if status != 200:
            load.failed += 1
        elif json.loads(answer)["translations"] != [expected[i]]:
            load.wrong += 1
    writer.close()


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def run_load(url: str, clients: int, seconds: float, sentences: list[str], expected: list[str], beam: int) -> Load:
    load = Load()
    start = time.perf_counter()
    await asyncio.gather(*(client(url, i, clients, sentences, expected, beam, start + seconds, load) for i in range(clients)))
    load.seconds = time.perf_counter() - start
    return load


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="run directory (the best recipe's model)")
    parser.add_argument("--data", required=True, help="data directory: its test.SRC sentences are sent")
    parser.add_argument("--seconds", type=float, default=30, help="length of each load run")
    parser.add_argument("--clients", default="1,8,64", help="concurrent clients, comma-separated")
    parser.add_argument("--beams", default="1,5", help="beam sizes, comma-separated (1 = greedy)")
    parser.add_argument("--sentences", type=int, default=2000, help="test sentences used (cycled)")
    parser.add_argument("--repeats", type=int, default=3, help="offline runs (the median counts)")
    parser.add_argument("--precision", default="fp32", help="fp32 or bf16, offline and served alike")
    parser.add_argument("--server-args", default="", help="extra `mtkit serve` options, e.g. '--threads 2'")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    beams = [int(b) for b in args.beams.split(",")]
    src = json.loads((Path(args.model) / "config.json").read_text())["src_lang"]
    sentences = [s for s in (Path(args.data) / f"test.{src}").read_text(encoding="utf-8").splitlines() if s.strip()]
    sentences = sentences[: args.sentences]

    baseline = {beam: offline(args.model, sentences, beam, args.repeats, args.precision) for beam in beams}
    # 64 closed-loop clients can never fill a decode beyond 64 sentences: the offline rate in
    # batches of at most that many shows what the batching itself gives up.
    small = {beam: offline(args.model, sentences, beam, args.repeats, args.precision, SERVER_MAX_BATCH)[0] for beam in beams}
    rows, bad = [], 0
    for batching, max_batch in (("on", []), ("off", ["--max-batch", "1"])):
        # Batching off queues up to 64 requests for seconds: nothing may time out.
        extra = [*max_batch, "--max-queue", "100000", "--timeout", "600", "--precision", args.precision, *args.server_args.split()]
        with ServerProcess("--model", args.model, *extra) as server:
            for beam in beams:
                for n in clients:
                    warm_up = asyncio.run(run_load(server.url, n, 1, sentences, baseline[beam][1], beam))
                    before = server.call("/stats").json()
                    load = asyncio.run(run_load(server.url, n, args.seconds, sentences, baseline[beam][1], beam))
                    load.wrong, load.failed = load.wrong + warm_up.wrong, load.failed + warm_up.failed
                    after = server.call("/stats").json()
                    decodes = after["decodes"] - before["decodes"]
                    per_decode = (after["requests"] - before["requests"]) / decodes if decodes else 0.0
                    bad += load.wrong + load.failed
                    rows.append((batching, beam, n, load, per_decode))
                    print(_row(batching, beam, n, load, per_decode, baseline[beam][0]), flush=True)
    print()
    _print_table(rows, baseline, small)
    _print_targets(rows, baseline, small)
    if bad:
        print(f"FAILED: {bad} answers were wrong or failed", file=sys.stderr)
    return 1 if bad else 0


def _row(batching: str, beam: int, clients: int, load: Load, per_decode: float, offline_rate: float) -> str:
    rate = len(load.latencies) / load.seconds
    ms = [1000 * x for x in load.latencies]
    return (f"| {batching} | {'greedy' if beam == 1 else f'beam {beam}'} | {clients} | {rate:,.0f} | "
            f"{100 * rate / offline_rate:.0f}% | {percentile(ms, 50):.0f} | {percentile(ms, 95):.0f} | "
            f"{percentile(ms, 99):.0f} | {per_decode:.1f} | {load.wrong + load.failed} |")


def _print_table(rows, baseline, small) -> None:
    for beam, (rate, _) in baseline.items():
        print(f"offline batch translation, {'greedy' if beam == 1 else f'beam {beam}'}: {rate:,.0f} sentences/s "
              f"({small[beam]:,.0f} in batches of {SERVER_MAX_BATCH} sentences)")
    print("\n| batching | search | clients | sentences/s | of offline | p50 ms | p95 ms | p99 ms | requests/decode | wrong or failed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for batching, beam, n, load, per_decode in rows:
        print(_row(batching, beam, n, load, per_decode, baseline[beam][0]))


def _print_targets(rows, baseline, small) -> None:
    by = {(b, beam, n): load for b, beam, n, load, _ in rows}
    rate = lambda load: len(load.latencies) / load.seconds  # noqa: E731
    if ("on", 1, 64) in by and 1 in baseline:
        on = rate(by["on", 1, 64])
        print(f"\ntarget: 64 clients, greedy: {100 * on / baseline[1][0]:.0f}% of offline (>= 60%; "
              f"{100 * on / small[1]:.0f}% of offline in batches of {SERVER_MAX_BATCH})", end="")
        if ("off", 1, 64) in by:
            print(f", {on / rate(by['off', 1, 64]):.1f}x batching off (>= 10x)", end="")
        print()
    if ("on", 1, 8) in by:
        p99 = percentile([1000 * x for x in by["on", 1, 8].latencies], 99)
        print(f"target: 8 clients, greedy: p99 {p99:.0f} ms (<= 150 ms)")


if __name__ == "__main__":
    sys.exit(main())
