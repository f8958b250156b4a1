"""``ciml run list``, ``show`` and ``upgrade-series``: what the raw cache holds."""

from cliff.lister import Lister
from cliff.show import ShowOne

from ciml.commands.base import data_path


def _start(run):
    return run.start.isoformat() if run.start is not None else ""


class RunList(Lister):
    """List the runs in the raw cache (or, with --unavailable, those that failed and why)"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--build-name", metavar="NAME", help="only runs of this job")
        parser.add_argument("--unavailable", action="store_true",
                            help="list the runs recorded as unavailable, with the reason")
        parser.add_argument("--labelled", action="store_true",
                            help="only runs a person labelled (ciml run label), with "
                            "their labels")
        return parser

    def take_action(self, parsed_args):
        from ciml.cache import RawCache

        cache = RawCache(data_path(self))
        if not cache.exists():
            return (("id", "build_name", "status", "provider", "start", "samples",
                     "incomplete"), [])
        with cache:
            if parsed_args.unavailable:
                columns = ("id", "build_name", "reason", "message", "time")
                from ciml.http import redact_text

                # Reasons recorded by older versions may name URLs with passwords.
                rows = [(u["run_id"], u["build_name"], u["reason"], redact_text(u["message"]),
                         u["time"]) for u in cache.unavailable(parsed_args.build_name)]
                return columns, rows
            # "incomplete": why optional metadata is missing for now; the next
            # cache-data completes it.
            columns = ("id", "build_name", "status", "provider", "start", "samples",
                       "incomplete")
            if parsed_args.labelled:
                from ciml.human_labels import labels_of

                human = labels_of(cache)
                columns += ("human_labels",)
            rows = []
            for entry in cache.entries(parsed_args.build_name):
                run = entry["run"]
                if parsed_args.labelled and run.id not in human:
                    continue
                rows.append((run.id, run.build_name, run.status,
                             run.metadata.get("node_provider", ""), _start(run),
                             entry["samples"], run.incomplete or ""))
                if parsed_args.labelled:
                    rows[-1] += (dict(sorted(human[run.id].items())),)
            return columns, rows


class RunShow(ShowOne):
    """Show a cached run's record and metric columns"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("id", metavar="ID", help="the run id")
        return parser

    def take_action(self, parsed_args):
        from ciml.cache import UNAVAILABLE, RawCache
        from ciml.errors import NotFoundError

        cache = RawCache(data_path(self))
        if not cache.exists():
            raise NotFoundError(f"run {parsed_args.id!r} is not in the raw cache "
                                f"(no cache under {data_path(self).root})")
        with cache:
            if cache.state(parsed_args.id) == UNAVAILABLE:
                for entry in cache.unavailable():
                    if entry["run_id"] == parsed_args.id:
                        from ciml.http import redact_text

                        return (("id", "build_name", "state", "reason", "message", "time"),
                                (entry["run_id"], entry["build_name"], UNAVAILABLE,
                                 entry["reason"], redact_text(entry["message"]),
                                 entry["time"]))
            run = cache.record(parsed_args.id)
            info = cache.info(parsed_args.id)
            data = run.to_dict()
            metadata = data.pop("metadata") or {}
            from ciml.http import redact_url

            if data.get("artifacts_url"):
                data["artifacts_url"] = redact_url(data["artifacts_url"])
            columns = list(data)
            values = [data[c] if data[c] is not None else "" for c in columns]
            sizes = cache.sizes(parsed_args.id)
            columns += ["state", "samples", "first", "last", "raw_file", "raw_packed",
                        "fetched_from", "bytes_fetched", "bytes_raw", "bytes_series",
                        "bytes_on_disk", "disk_per_fetched", "metric_columns", "metadata"]
            values += ["cached", info.get("samples"), info.get("first") or "",
                       info.get("last") or "", str(cache.raw_file(parsed_args.id)),
                       info.get("raw_packed") or "as-fetched",
                       redact_url(info.get("url") or ""), sizes["fetched"], sizes["raw"],
                       sizes["series"], sizes["total"],
                       round(sizes["total"] / sizes["fetched"], 3) if sizes["fetched"] else "",
                       list(info.get("columns") or ()), dict(sorted(metadata.items()))]
            from ciml.human_labels import labels_of

            human = labels_of(cache, {parsed_args.id}).get(parsed_args.id)
            columns.append("human_labels")
            values.append(dict(sorted(human.items())) if human else {})
            return columns, values


class RunUpgradeSeries(ShowOne):
    """Rewrite the series.npz of runs cached by an older ciml as compressed series.bin,
    and pack the fetched files it kept as fetched"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--build-name", metavar="NAME", help="only runs of this job")
        return parser

    def take_action(self, parsed_args):
        from tqdm import tqdm

        from ciml import rawpack
        from ciml.cache import RawCache
        from ciml.errors import MetricsUnavailable

        cache = RawCache(data_path(self))
        upgraded = unreadable = saved = packed = saved_files = 0
        if cache.exists():
            with cache:
                runs = cache.runs(parsed_args.build_name)
                with tqdm(total=len(runs), desc="upgrading series", unit="run",
                          disable=None, leave=False) as bar:
                    for run in runs:
                        try:
                            gained = cache.upgrade_series(run.id)
                        except MetricsUnavailable as exc:
                            # Left as it is: the build reports it when it reads it.
                            self.log.warning("%s", exc)
                            unreadable += 1
                        else:
                            if gained is not None:
                                upgraded += 1
                                saved += gained
                        try:
                            gained = cache.pack_fetched(run.id)
                        except (OSError, rawpack.RawPackError) as exc:
                            self.log.warning("run %s: fetched file not packed: %s", run.id, exc)
                        else:
                            if gained is not None:
                                packed += 1
                                saved_files += gained
                        bar.update(1)
        return (("upgraded", "unreadable", "bytes_saved", "files_packed", "bytes_saved_files"),
                (upgraded, unreadable, saved, packed, saved_files))
