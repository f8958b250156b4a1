"""``ciml example runs``: the extra command this package adds to ciml."""

import itertools

from cliff.lister import Lister


class ExampleRuns(Lister):
    """List the runs of a JSON-Lines file, through the jsonl result source"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("path", metavar="FILE", help="JSON-Lines file of runs")
        parser.add_argument("--build-name", metavar="NAME",
                            help="Only runs of this job (default: every job)")
        parser.add_argument("--limit", type=int, metavar="N", help="At most N runs")
        return parser

    def take_action(self, parsed_args):
        # Through ciml's registry, as any command uses any plugin.
        from ciml.plugins import get_manager

        source = get_manager().get("result_source", "jsonl")(path=parsed_args.path)
        if parsed_args.build_name:
            runs = source.list_runs(parsed_args.build_name, limit=parsed_args.limit)
        else:
            runs = itertools.islice(source.all_runs(), parsed_args.limit)
        columns = ("id", "build_name", "status", "start", "duration", "artifacts_url")
        rows = [(r.id, r.build_name, r.status, r.start.isoformat() if r.start else "",
                 "" if r.duration is None else r.duration, r.artifacts_url or "") for r in runs]
        return columns, rows
