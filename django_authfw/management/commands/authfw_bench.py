"""``manage.py authfw_bench``: operations per second, latency and memory per token of each
storage, beside the raw client of the same server.

It writes only records of its own (a user of its own, keys under ``authfw-bench:<run id>:``)
and deletes them when done, also after Ctrl-C. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from django.core.management import BaseCommand, CommandError, CommandParser

from ...bench import report as render
from ...bench.plumbing import measure_plumbing
from ...bench.suite import Options, bench_storage
from ...bench.workers import WorkerError
from ...bench.workload import BenchError
from ...exceptions import StorageError
from ..progress import ProgressBar, open_storage, positive_int, selected_aliases, storage_failure


def positive_seconds(text: str) -> float:
    """argparse ``type`` for ``--seconds``: a finite number above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text}")
    return value


class Command(BaseCommand):
    help = (
        "Measures token verification, token issue and refresh, session and key-value operations, "
        "and whole requests through the middleware and the DRF class against the same request "
        "without authentication (operations per second, p50/p99 latency), and memory per stored "
        "token of each storage, with the raw redis-py or psycopg client of the same server (or "
        "a dict and SHA-256 in process) as baselines. Writes only its own records and deletes "
        "them afterwards."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--storage",
            action="append",
            dest="storages",
            metavar="ALIAS",
            help="Storage alias to measure (repeatable); default: every alias in "
            "AUTHFW['STORAGES'].",
        )
        parser.add_argument(
            "--seconds",
            type=positive_seconds,
            default=3.0,
            metavar="S",
            help="How long each operation is timed (default 3), after a warm-up of a tenth "
            "of that.",
        )
        parser.add_argument(
            "--tokens",
            type=positive_int,
            default=10_000,
            metavar="N",
            help="Tokens stored before timing (default 10000); verification cycles through "
            "all of them.",
        )
        parser.add_argument(
            "--grow-to",
            type=positive_int,
            default=None,
            metavar="N",
            help="Afterwards, store more tokens up to N and time verification again, to see "
            "whether its cost stays flat as the store grows (e.g. --tokens 10000 "
            "--grow-to 1000000).",
        )
        parser.add_argument(
            "--processes",
            type=positive_int,
            default=1,
            metavar="N",
            help="Worker processes timing each operation at once (default 1); their rates "
            "add up. In-process storages are always timed in one process.",
        )
        parser.add_argument(
            "--profile",
            action="store_true",
            help="Also run the valid-token verification under cProfile for --seconds and show "
            "where its time goes (token checks, framework, storage, decoding, client library, "
            "waiting for the server).",
        )
        parser.add_argument(
            "--burst",
            type=positive_int,
            default=None,
            metavar="THREADS",
            help="Also release THREADS threads at once, each verifying tokens for --seconds, "
            "and report their combined rate, latency and failed calls: how the storage's "
            "connection pool copes with more callers than connections.",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            dest="as_json",
            help="Print the figures as JSON instead of a table.",
        )

    def handle(
        self,
        *args: Any,
        storages: list[str] | None,
        seconds: float,
        tokens: int,
        processes: int,
        grow_to: int | None,
        profile: bool,
        burst: int | None,
        as_json: bool,
        **options: Any,
    ) -> None:
        verbosity = int(options.get("verbosity", 1))
        # With --json, stdout carries only the JSON document; progress goes to stderr.
        status = self.stderr if as_json else self.stdout

        def log(message: str) -> None:
            if verbosity >= 2:
                status.write(message)

        if grow_to is not None and grow_to <= tokens:
            raise CommandError(
                f"--grow-to ({grow_to:,}) must be larger than --tokens ({tokens:,}): it is the "
                "size the store grows to for the second verification timing."
            )
        aliases = selected_aliases(storages)
        settings = Options(
            seconds=seconds,
            tokens=tokens,
            processes=processes,
            grow_to=grow_to,
            profile=profile,
            burst=burst,
        )
        report: dict[str, Any] = {
            "machine": render.machine(),
            "options": {
                "seconds": seconds,
                "tokens": tokens,
                "processes": processes,
                "grow_to": grow_to,
                "burst": burst,
            },
            "storages": {},
        }
        if aliases:
            log("timing the per-request plumbing (header parsing, the alias's framework)")
            report["plumbing"] = measure_plumbing(aliases[0], min(seconds, 1.0))
        bar = ProgressBar(status, enabled=verbosity >= 1 and status.isatty())
        with bar:
            for alias in aliases:
                storage = open_storage(alias)
                try:
                    report["storages"][alias] = bench_storage(
                        alias, storage, settings, log=log, progress=bar.update
                    )
                except StorageError as exc:
                    raise storage_failure(alias, exc) from exc
                except (BenchError, WorkerError) as exc:
                    raise CommandError(f"Storage {alias!r}: {exc}") from exc
                finally:
                    bar.finish()
        self.stdout.write(render.as_json(report) if as_json else render.as_table(report))
