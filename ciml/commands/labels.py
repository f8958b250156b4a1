"""``ciml run label``: correct a run's label by hand (or many, from a CSV file)."""

from cliff.lister import Lister

from ciml.commands.base import data_path


class RunLabel(Lister):
    """Label a cached run by hand (key=value ...), e.g. cause=oom or status=passed"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("id", metavar="RUN_ID", nargs="?", default=None,
                            help="the cached run to label")
        parser.add_argument("labels", metavar="KEY=VALUE", nargs="*", default=[],
                            help="labels to set, e.g. cause=oom status=passed; build-dataset "
                            "prefers them to the source's")
        parser.add_argument("--import-labels", metavar="FILE.csv", default=None,
                            help="bulk: a CSV file with a run_id column and one column "
                            "per label key (empty cells are skipped)")
        parser.add_argument("--who", metavar="NAME", default=None,
                            help="who gives the label (default: $CIML_USER, else the "
                            "login name)")
        return parser

    def take_action(self, parsed_args):
        from ciml import human_labels
        from ciml.cache import RawCache
        from ciml.errors import ConfigError

        columns = ("run", "key", "value", "who", "time")
        cache = RawCache(data_path(self))
        with cache:
            if parsed_args.import_labels:
                if parsed_args.id or parsed_args.labels:
                    raise ConfigError("give either RUN_ID KEY=VALUE... or --import-labels, "
                                      "not both")
                count = human_labels.import_csv(cache, parsed_args.import_labels,
                                                who=parsed_args.who)
                self.app.stderr.write(f"{count} label(s) imported from "
                                      f"{parsed_args.import_labels}\n")
                return columns, []
            if not parsed_args.id:
                raise ConfigError("give a RUN_ID and KEY=VALUE labels (or --import-labels)")
            labels = human_labels.parse_assignments(parsed_args.labels)
            rows = human_labels.set_labels(cache, parsed_args.id, labels, who=parsed_args.who)
        return columns, [(r["run_id"], r["key"], r["value"], r["who"], r["time"])
                         for r in rows]
