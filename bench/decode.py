"""``python -m bench.decode``: what reading the players' messages costs the worker, per event.

The bench's simulated backlog (messages of ``--per-message`` events, as
:mod:`bench.inprocess` makes them) is read by each body reader the codec can use for the
player events: the compiled ``topics._avro_read.Reader`` (where it was built), the Python
written for each schema (its reference) and fastavro; then validated as the worker
validates (pydantic models), and decoded whole by :class:`~streams.decode.MessageDecoder`.
With ``--gc worker`` (the default) the cyclic collector is set as in the worker
(:func:`streams.worker.settle_heap`): validation makes a model per event, and Python's
default thresholds would time the collector as much as the validation. Prints one JSON
line of microseconds of CPU per event (best of ``--repeat`` passes) and
exits 1 when ``--min-speedup`` is given and the compiled reader is not that many times
faster than the Python one (or was not built).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from homestream.player.cli import positive_int


def best_us(work: Callable[[], Any], n_events: int, repeat: int) -> float:
    """Microseconds of CPU per event of ``work``, its best of ``repeat`` passes."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return round(1e6 * best / n_events, 3)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """The per-event costs of each reader, of validation and of the whole decoding."""
    import fastavro

    from bench.inprocess import messages
    from homestream.player.simulator import synthetic_catalog, synthetic_profiles
    from streams.decode import MessageDecoder
    from topics.avro_bytes import _avro_read, compile_reader
    from topics.codec import HEADER_LEN, default_codec, validate_event

    msgs = messages(args.events, args.per_message, args.seed,
                    synthetic_catalog(args.titles, args.seed),
                    synthetic_profiles(args.profiles, args.seed))
    if args.gc == "worker":
        from streams.worker import settle_heap

        settle_heap()
    codec = default_codec()
    values = [m.value for m in msgs]
    names = [codec._by_fingerprint[bytes(v[2:HEADER_LEN])][0] for v in values]
    records = [codec.decode_raw_events(v) for v in values]
    n = sum(len(r) for r in records)
    readers = {name: compile_reader(codec.schema(name), compiled=False) for name in set(names)}
    parsed = {name: codec._readers[name] for name in set(names)}

    pairs = list(zip(names, values, strict=True))

    def read_with(table: dict[str, Any]) -> Callable[[], Any]:
        return lambda: [table[name](v, HEADER_LEN) for name, v in pairs]

    out: dict[str, Any] = {"events": n, "messages": len(msgs),
                           "compiled_reader": _avro_read is not None}
    if _avro_read is not None:
        out["read_compiled_us"] = best_us(read_with(codec._fast_readers), n, args.repeat)
    out["read_python_us"] = best_us(read_with(readers), n, args.repeat)
    out["read_fastavro_us"] = best_us(lambda: [fastavro.schemaless_reader(
        io.BytesIO(v[HEADER_LEN:]), parsed[name], None, return_record_name=True)
        for name, v in pairs], n, args.repeat)
    out["validate_us"] = best_us(lambda: [validate_event(name, rec) for events in records
                                          for name, rec in events], n, args.repeat)
    decoder = MessageDecoder(codec, time.time, 10 * 365 * 86400.0, 10 * 365 * 86400.0)
    out["decode_messages_us"] = best_us(lambda: decoder.decode(msgs), n, args.repeat)
    if _avro_read is not None:
        out["compiled_speedup"] = round(out["read_python_us"] / out["read_compiled_us"], 2)
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m bench.decode",
                                description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--events", type=positive_int, default=30_000)
    p.add_argument("--per-message", type=positive_int, default=20)
    p.add_argument("--repeat", type=positive_int, default=5, help="passes; the best counts")
    p.add_argument("--titles", type=positive_int, default=500)
    p.add_argument("--profiles", type=positive_int, default=2000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--gc", choices=("default", "worker"), default="worker",
                   help="the collector's thresholds: Python's, or the worker's")
    p.add_argument("--min-speedup", type=float, default=None,
                   help="exit 1 unless the compiled reader is this many times the Python one")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Print one JSON line of measurements; 1 when ``--min-speedup`` is missed."""
    args = parse_args(argv)
    result = measure(args)
    print(json.dumps(result))
    if args.min_speedup is not None and result.get("compiled_speedup", 0.0) < args.min_speedup:
        print(f"compiled reader speedup {result.get('compiled_speedup')} < "
              f"{args.min_speedup}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
