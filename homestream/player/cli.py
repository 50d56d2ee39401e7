"""The ``homestream`` command: topics, producing events, the synthetic catalog and traffic,
dead letters, and the worker / server / demo entrypoints.

Every subcommand reads its settings from ``HOMESTREAM_*`` environment variables through
:func:`settings.load_settings`; an invalid setting prints the problem and exits with 2.

Examples::

    homestream topics create
    echo '{"type": "scroll", "event_id": "e1", "profile_id": "p1",
           "event_ts_ms": 1700000000000, "row": 2}' | homestream produce
    homestream catalog publish --titles 200 --seed 42
    homestream catalog load examples/catalog.jsonl
    homestream catalog delete t17 t18
    homestream profiles load examples/profiles.csv --skip-invalid
    homestream simulate --profiles 50 --sessions 200
    homestream simulate --profiles 20 --duration 60 --rate 50 --realtime
    homestream dead-letters --max 20
    homestream erase member-ava
    homestream schemas check
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

from confluent_kafka import KafkaException

from homestream.logs import setup_logging
from homestream.player.interrupts import InterruptGuard
from homestream.player.producer import (
    MAX_IDS_IN_MESSAGE,
    InvalidEvent,
    PlayerProducer,
    ProducerError,
)
from homestream.settings import ConfigError, Settings, load_settings

log = logging.getLogger(__name__)

#: Catalog defaults shared by ``catalog publish`` and ``simulate`` so that simulated events
#: refer to the titles that were published.
DEFAULT_TITLES = 200
DEFAULT_CATALOG_SEED = 42

Handler = Callable[[argparse.Namespace, Settings], int]


# -- subcommands -----------------------------------------------------------------------------
def cmd_topics_create(args: argparse.Namespace, settings: Settings) -> int:
    """Create the registry's topics that do not exist yet."""
    from topics.registry import ensure_topics

    created = ensure_topics(settings)
    for name in created:
        print(name)
    if not created:
        print("all topics exist", file=sys.stderr)
    return 0


def cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    """Validate and send JSON-lines events from a file or stdin.

    Ctrl-C (SIGINT) or SIGTERM stops reading. Every event accepted before the signal (a line
    is accepted whole or not at all) is still flushed, for at most ``--flush-timeout``
    seconds (Ctrl-C again abandons the flush); what was delivered and what was not is
    reported, and the exit code is 130 (143 for SIGTERM).
    """
    bad = 0
    interrupted = False
    stream: IO[str]
    guard = InterruptGuard((signal.SIGINT, signal.SIGTERM))
    with contextlib.ExitStack() as stack:
        if args.file in (None, "-"):
            stream = sys.stdin
        else:
            try:
                stream = stack.enter_context(open(args.file, encoding="utf-8"))
            except OSError as exc:
                print(f"cannot read {args.file}: {exc}", file=sys.stderr)
                return 1
        # flushed below, also after Ctrl-C: no second flush at interpreter exit
        producer = PlayerProducer(settings, topic=args.topic, max_batch_events=args.batch,
                                  max_batch_age_s=0.5, exit_flush_timeout_s=None)
        stack.enter_context(guard)
        try:
            for n, line in enumerate(stream, start=1):
                with guard.deferred():
                    bad += not _produce_line(producer, n, line)
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        print(f"interrupted: flushing {producer.buffered} buffered event(s) and "
              f"{producer.in_flight} message(s) in flight (at most {args.flush_timeout:g}s; "
              f"Ctrl-C again to abandon)", file=sys.stderr, flush=True)
    failed = False
    try:
        producer.close(args.flush_timeout)
    except ProducerError as exc:
        failed = True
        lost = len(exc.undelivered_event_ids) + sum(len(f.event_ids) for f in exc.failures)
        print(f"delivery failed: {exc}", file=sys.stderr)
        print(f"{lost} event(s) not delivered", file=sys.stderr)
    except KeyboardInterrupt:
        interrupted = True
        unconfirmed = producer.unconfirmed_event_ids
        print(f"flush abandoned: {len(unconfirmed)} event(s) not confirmed delivered "
              f"(events {', '.join(unconfirmed[:MAX_IDS_IN_MESSAGE])}"
              f"{', ...' if len(unconfirmed) > MAX_IDS_IN_MESSAGE else ''})", file=sys.stderr)
    print(f"sent {producer.delivered_events} events in {producer.delivered} messages",
          flush=True)
    if bad:
        print(f"{bad} invalid line(s) not sent", file=sys.stderr)
    if interrupted:
        return guard.exit_code
    return 1 if bad or failed else 0


def _produce_line(producer: PlayerProducer, n: int, line: str) -> bool:
    """Send one JSON line (blank lines are skipped); print why and return False if invalid."""
    if not line.strip():
        return True
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        print(f"line {n}: invalid JSON: {exc}", file=sys.stderr)
        return False
    try:
        producer.send(data)
    except InvalidEvent as exc:
        print(f"line {n}: {exc}", file=sys.stderr)
        return False
    log.debug("line %d: accepted event %s", n, data.get("event_id"),
              extra={"event_id": data.get("event_id"), "profile_id": data.get("profile_id")})
    producer.poll(0)
    return True


def cmd_catalog_publish(args: argparse.Namespace, settings: Settings) -> int:
    """Publish a synthetic catalog to the catalog topic (creating topics first)."""
    from homestream.player.simulator import publish_catalog, synthetic_catalog
    from topics.registry import ensure_topics

    ensure_topics(settings)
    titles = synthetic_catalog(args.titles, args.seed,
                               artwork_base_url=settings.artwork_base_url)
    n = publish_catalog(settings, titles)
    print(f"published {n} titles")
    return 0


def cmd_load(args: argparse.Namespace, settings: Settings) -> int:
    """Validate a catalog or profiles file and publish it (``catalog load`` / ``profiles
    load``). Any bad row refuses the whole file unless ``--skip-invalid``; either way each
    bad row is printed with its line number, and the exit code is 1 when any was bad."""
    from homestream.player.loaders import LoadFileError, publish_records, read_records

    kind = args.kind
    try:
        loaded = read_records(args.file, kind)
    except LoadFileError as exc:
        print(exc, file=sys.stderr)
        return 1
    for error in loaded.errors:
        print(f"{args.file}: {error}", file=sys.stderr)
    bad = len(loaded.errors)
    if bad and not args.skip_invalid:
        print(f"refused: {bad} bad row(s) of {loaded.rows}; nothing published (fix them, or "
              f"--skip-invalid publishes the {len(loaded.records)} good row(s))",
              file=sys.stderr)
        return 1
    if args.dry_run:
        print(f"valid: {loaded.upserts} record(s) and {loaded.deletions} deletion(s); "
              f"nothing published (--dry-run)")
        return 1 if bad else 0
    if loaded.records:
        from topics.registry import ensure_topics

        ensure_topics(settings)
        publish_records(settings, kind, loaded.records, timeout_s=args.timeout)
    print(f"published {loaded.upserts} {kind} record(s) and {loaded.deletions} deletion(s)"
          + (f"; skipped {bad} bad row(s)" if bad else ""))
    return 1 if bad else 0


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    """Publish tombstones for the given ids (``catalog delete`` / ``profiles delete``)."""
    from homestream.player.loaders import Record, publish_records
    from topics.registry import ensure_topics

    ensure_topics(settings)
    records = [Record(0, key, None) for key in dict.fromkeys(args.ids)]
    n = publish_records(settings, args.kind, records, timeout_s=args.timeout)
    print(f"deleted {n} {args.kind} record(s)")
    return 0


def cmd_erase(args: argparse.Namespace, settings: Settings) -> int:
    """Erase members from every store (``homestream.erase``)."""
    from homestream.erase import erase_command

    ids = list(dict.fromkeys(args.ids))
    deleted = erase_command(settings, ids, timeout_s=args.timeout)
    print(f"erased {len(ids)} profile(s): {deleted} Redis key(s) deleted, tombstone(s) "
          "published; the worker forgets their model parameters within seconds")
    return 0


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    """Send simulated sessions (creating topics first)."""
    from homestream.player.simulator import (
        PlayerSimulator,
        run_simulation,
        synthetic_catalog,
        synthetic_profiles,
    )
    from topics.registry import ensure_topics

    ensure_topics(settings)
    catalog = synthetic_catalog(args.titles, args.catalog_seed,
                                artwork_base_url=settings.artwork_base_url)
    profiles = synthetic_profiles(args.profiles, args.seed)
    sim = PlayerSimulator(catalog, profiles, args.seed, heartbeat_s=args.heartbeat,
                          max_heartbeats=args.max_heartbeats,
                          session_starts=args.session_starts)
    with PlayerProducer(settings) as producer:
        result = run_simulation(producer, sim, profiles, sessions=args.sessions,
                                duration_s=args.duration, rate_eps=args.rate,
                                realtime=args.realtime)
    print(f"simulated {result.sessions} sessions: sent {result.events} events in "
          f"{result.messages} messages in {result.elapsed_s:.1f}s")
    return 0


def cmd_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    """Print the dead-letter topic from the beginning to its end, one JSON object per line."""
    from homestream.kafka_config import librdkafka_security
    from topics.codec import DecodeError, default_codec
    from topics.reader import TopicReadTimeout, read_topics
    from topics.registry import topic_specs

    codec = default_codec()
    topic = topic_specs(settings)["dead_letter"].name
    shown = undecodable = 0
    try:
        for msg in read_topics(settings.bootstrap_servers, [topic], timeout_s=args.timeout,
                               group_prefix="homestream-dead-letters",
                               config=librdkafka_security(settings)):
            try:
                letter = codec.decode_dead_letter(msg.value())
            except (DecodeError, ValueError) as exc:
                undecodable += 1
                print(f"{topic}[{msg.partition()}]@{msg.offset()}: cannot decode: {exc}",
                      file=sys.stderr)
                continue
            print(json.dumps({
                "source_topic": letter.source_topic,
                "partition": letter.partition,
                "offset": letter.offset,
                "reason": letter.reason,
                "error_type": letter.error_type,
                "event_id": letter.event_id,
                "key": letter.key.decode("utf-8", "replace") if letter.key is not None
                else None,
                "value_len": len(letter.value) if letter.value is not None else None,
                "failed_at_ms": letter.failed_at_ms,
            }), flush=True)
            shown += 1
            if args.max is not None and shown >= args.max:
                break
    except LookupError:
        print(f"no dead-letter topic {topic}", file=sys.stderr)
        return 0
    except TopicReadTimeout as exc:
        print(f"{exc}; showing what was read", file=sys.stderr)
    print(f"{shown} dead letter(s)", file=sys.stderr)
    return 1 if undecodable else 0


def _entrypoint(module: str, attr: str) -> Callable[..., Any] | None:
    """``module.attr`` imported on demand; ``None`` (with a message) if ``module`` is absent.

    A missing dependency *inside* the module is not hidden: only the module itself being
    absent is reported this way.
    """
    import importlib

    try:
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
    except ModuleNotFoundError as exc:
        if exc.name not in (module, module.rpartition(".")[0]):
            raise
        print(f"{module} is not available: {exc}", file=sys.stderr)
        return None


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Run the stream worker (``streams.worker.run``)."""
    run = _entrypoint("streams.worker", "run")
    return 1 if run is None else _exit_code(run(settings))


def cmd_schemas_check(args: argparse.Namespace, settings: Settings) -> int:
    """Check every schema version against the one before it (``topics.compat``); 1 if any
    change would strand players or consumers on the previous version."""
    from topics.codec import load_history
    from topics.compat import check_history, format_report
    history = load_history()
    problems = check_history(history)
    print(format_report(history, problems), file=sys.stderr if problems else sys.stdout)
    return 1 if problems else 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Run the home-page HTTP server (``serving.app.run``)."""
    run = _entrypoint("serving.app", "run")
    return 1 if run is None else _exit_code(run(settings))


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Run the one-command demo (``stack.demo.main``) with the remaining arguments."""
    demo_main = _entrypoint("homestream.stack.demo", "main")
    return 1 if demo_main is None else _exit_code(demo_main(list(args.rest)))


def _exit_code(result: Any) -> int:
    return result if isinstance(result, int) else 0


# -- parser ----------------------------------------------------------------------------------
def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _add_load_and_delete(actions: Any, kind: str, what: str, ids: str) -> None:
    """The ``load FILE`` and ``delete ID...`` actions of ``catalog`` or ``profiles``."""
    load = actions.add_parser("load", help=f"validate and publish {what}")
    load.add_argument("file", help="a .jsonl/.ndjson/.json (one object per line) or .csv file")
    load.add_argument("--skip-invalid", action="store_true",
                      help="publish the good rows even when some are bad (each bad row is "
                           "still reported)")
    load.add_argument("--dry-run", action="store_true", help="validate only")
    load.add_argument("--timeout", type=positive_float, default=30.0,
                      help="seconds to wait for the broker (default 30)")
    load.set_defaults(handler=cmd_load, kind=kind)
    delete = actions.add_parser("delete", help=f"delete {ids} (tombstones)")
    delete.add_argument("ids", nargs="+", metavar="ID")
    delete.add_argument("--timeout", type=positive_float, default=30.0)
    delete.set_defaults(handler=cmd_delete, kind=kind)


def _add_simulate(sub: Any) -> None:
    """The ``simulate`` subcommand and its options."""
    sim = sub.add_parser("simulate", help="send simulated player sessions")
    sim.add_argument("--profiles", type=positive_int, default=100)
    stop = sim.add_mutually_exclusive_group(required=True)
    stop.add_argument("--sessions", type=positive_int, help="number of sessions")
    stop.add_argument("--duration", type=positive_float, help="seconds to run")
    sim.add_argument("--rate", type=positive_float, default=None, help="events per second")
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--session-starts", action="store_true",
                     help="open each session with a session_start event (the app opening)")
    sim.add_argument("--realtime", action="store_true",
                     help="stamp events with the wall clock as they are sent")
    sim.add_argument("--titles", type=positive_int, default=DEFAULT_TITLES,
                     help="catalog size (match 'catalog publish --titles')")
    sim.add_argument("--catalog-seed", type=int, default=DEFAULT_CATALOG_SEED,
                     help="catalog seed (match 'catalog publish --seed')")
    sim.add_argument("--heartbeat", type=positive_float, default=60.0,
                     help="event-time seconds between play heartbeats")
    sim.add_argument("--max-heartbeats", type=int, default=None,
                     help="cap heartbeats per play (stretching their spacing)")
    sim.set_defaults(handler=cmd_simulate)


def build_parser() -> argparse.ArgumentParser:
    """The ``homestream`` argument parser (each subcommand sets ``handler``)."""
    parser = argparse.ArgumentParser(
        prog="homestream", description="Streaming home-page personalization pipeline.")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    topics = sub.add_parser("topics", help="manage topics")
    topics_sub = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    topics_sub.add_parser("create", help="create missing topics").set_defaults(
        handler=cmd_topics_create)

    produce = sub.add_parser("produce", help="send JSON-lines events (each with a 'type')")
    produce.add_argument("--file", "-f", default="-", help="input file, '-' for stdin")
    produce.add_argument("--topic", default=None, help="target topic (default player events)")
    produce.add_argument("--batch", type=positive_int, default=100,
                         help="max events per message per profile")
    produce.add_argument("--flush-timeout", type=positive_float, default=30.0,
                         help="seconds to wait for delivery at the end of the input or after "
                              "Ctrl-C (default 30)")
    produce.set_defaults(handler=cmd_produce)

    catalog = sub.add_parser("catalog", help="catalog tools")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True,
                                         metavar="ACTION")
    publish = catalog_sub.add_parser("publish", help="publish a synthetic catalog")
    publish.add_argument("--titles", type=positive_int, default=DEFAULT_TITLES)
    publish.add_argument("--seed", type=int, default=DEFAULT_CATALOG_SEED)
    publish.set_defaults(handler=cmd_catalog_publish)
    _add_load_and_delete(catalog_sub, "catalog", "titles (JSON lines or CSV)", "title ids")
    profiles = sub.add_parser("profiles", help="profile settings (kids, rating limit)")
    profiles_sub = profiles.add_subparsers(dest="profiles_command", required=True,
                                           metavar="ACTION")
    _add_load_and_delete(profiles_sub, "profiles", "profile settings (JSON lines or CSV)",
                         "profile ids")

    _add_simulate(sub)

    dead = sub.add_parser("dead-letters", help="print dead letters as JSON lines")
    dead.add_argument("--max", type=positive_int, default=None, help="stop after N letters")
    dead.add_argument("--timeout", type=positive_float, default=10.0,
                      help="give up reading to the end of the topic after S seconds")
    dead.set_defaults(handler=cmd_dead_letters)

    erase = sub.add_parser("erase", help="erase members from every store (right to be "
                                         "forgotten)")
    erase.add_argument("ids", nargs="+", metavar="PROFILE_ID")
    erase.add_argument("--timeout", type=positive_float, default=30.0,
                       help="wait up to S seconds for the broker to take the tombstones")
    erase.set_defaults(handler=cmd_erase)

    schemas = sub.add_parser("schemas", help="schema tools")
    schemas.add_subparsers(dest="schemas_command", required=True, metavar="ACTION").add_parser(
        "check", help="check each schema version is compatible with the one before"
    ).set_defaults(handler=cmd_schemas_check)

    sub.add_parser("worker", help="run the stream worker").set_defaults(handler=cmd_worker)
    sub.add_parser("serve", help="run the home-page API").set_defaults(handler=cmd_serve)
    # Everything after ``demo`` (including -h) belongs to the demo's own parser.
    sub.add_parser("demo", help="run the local demo (arguments passed through)",
                   add_help=False).set_defaults(handler=cmd_demo, rest=[])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``homestream`` console script; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "demo":
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.rest = extra
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging(settings.log_format, level)
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except ProducerError as exc:
        print(f"delivery failed: {exc}", file=sys.stderr)
        return 1
    except KafkaException as exc:
        print(f"kafka error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
