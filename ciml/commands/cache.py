"""``ciml cache-data``: fetch a job's runs and metrics into the raw cache."""

import datetime as dt

from cliff.show import ShowOne

from ciml.base import positive_int
from ciml.commands.base import add_component_options, build_component, data_path
from ciml.errors import ConfigError, Interrupted


def parse_when(value, option):
    """An aware UTC datetime from an ISO date or date-time typed by a user."""
    if value is None:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"bad {option} {value!r}: use an ISO date or date-time, "
                          "e.g. 2024-03-01 or 2024-03-01T12:00:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc)


def _cached_count(path, build_name):
    from ciml.cache import CACHED, RawCache

    cache = RawCache(path)
    if not cache.exists():
        return 0
    with cache:
        return cache.counts(build_name)[CACHED]


class CacheData(ShowOne):
    """Fetch the runs of a job and their metrics into the raw cache"""

    def get_parser(self, prog_name):
        from ciml.collect import DEFAULT_WORKERS
        from ciml.executor import add_scheduler_option

        parser = super().get_parser(prog_name)
        parser.add_argument("--source", default="subunit2sql", metavar="NAME",
                            help="result source plugin (default: subunit2sql; also: zuul, github, "
                                 "gitlab, jenkins)")
        parser.add_argument("--metric-source", default="dstat", metavar="NAME",
                            help="metric source plugin (default: dstat)")
        parser.add_argument("--build-name", required=True, metavar="NAME",
                            help="the job whose runs to cache, e.g. tempest-full")
        parser.add_argument("--limit", type=positive_int, metavar="N",
                            help="at most N runs from the source")
        parser.add_argument("--workers", type=positive_int, default=DEFAULT_WORKERS, metavar="K",
                            help=f"concurrent fetches (default: {DEFAULT_WORKERS})")
        parser.add_argument("--processes", type=int, default=None, metavar="P",
                            help="parse and store in P worker processes, 0 to parse in the "
                                 "fetching threads (default: chosen from --workers and "
                                 "the cores, started once a job is big enough)")
        parser.add_argument("--since", metavar="WHEN",
                            help="only runs started at or after this ISO date/time (UTC)")
        parser.add_argument("--until", metavar="WHEN",
                            help="only runs started before this ISO date/time (UTC)")
        parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                            help="only runs whose metadata has KEY=VALUE "
                                 "(e.g. build_queue=gate); repeatable")
        parser.add_argument("--balanced", action="store_true",
                            help="interleave failed and passed runs, so that a "
                                 "limited cache holds both")
        parser.add_argument("--retry-unavailable", action="store_true",
                            help="try again runs recorded as unavailable")
        parser.add_argument("--retry-incomplete", action="store_true",
                            help="complete again the metadata of every cached run of the "
                                 "job that is incomplete, not only of those listed now")
        add_scheduler_option(parser)
        add_component_options(parser, "result_source", "result source options")
        add_component_options(parser, "metric_source", "metric source options")
        return parser

    def take_action(self, parsed_args):
        from ciml.collect import cache_data
        from ciml.executor import connect

        since = parse_when(parsed_args.since, "--since")
        until = parse_when(parsed_args.until, "--until")
        filters = {}
        for item in parsed_args.filter:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"bad --filter {item!r}: expected KEY=VALUE")
            filters[key.strip()] = value
        source = build_component("result_source", parsed_args.source, parsed_args)
        metrics = build_component("metric_source", parsed_args.metric_source, parsed_args)
        path = data_path(self, create=True)
        before = _cached_count(path, parsed_args.build_name)
        cluster = connect(parsed_args.scheduler)
        try:
            summary = cache_data(
                path, source, metrics, parsed_args.build_name,
                since=since, until=until, filters=filters or None, limit=parsed_args.limit,
                balanced=parsed_args.balanced, workers=parsed_args.workers,
                retry_unavailable=parsed_args.retry_unavailable,
                retry_incomplete=parsed_args.retry_incomplete,
                processes=parsed_args.processes, cluster=cluster)
        except KeyboardInterrupt:
            # Every run stored before Ctrl-C is complete in the cache (stores
            # are atomic), and a rerun skips it.
            after = _cached_count(path, parsed_args.build_name)
            raise Interrupted(
                f"{max(0, after - before)} runs cached ({after} of "
                f"{parsed_args.build_name} in the cache), rerun to continue") from None
        finally:
            if cluster is not None:
                cluster.close()
        summary["source"] = parsed_args.source
        reasons = summary.pop("reasons")
        columns = ["build_name", "source", "selected", "cached", "skipped_cached",
                   "skipped_unavailable", "unavailable", "transient", "completed",
                   "incomplete", "total_cached",
                   "total_unavailable", "workers", "processes", "elapsed_s", "runs_per_s",
                   "data_path"]
        if summary.get("scheduler"):
            columns.insert(columns.index("processes"), "scheduler")
            columns.insert(columns.index("processes"), "batches")
        values = [summary[c] for c in columns]
        columns.append("reasons")
        values.append(dict(reasons or {}))
        return columns, values


__all__ = ["CacheData", "parse_when"]
