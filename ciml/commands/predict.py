"""``ciml predict``: predict the class of given runs with a trained model."""

from cliff.lister import Lister

from ciml.commands.base import add_component_options, build_component, data_path


def add_model_options(parser):
    """The options ``predict`` shares with ``watch``: the model, the sources, the URL policy."""
    parser.add_argument("--dataset", metavar="NAME", required=True,
                        help="Dataset the model was trained on (its normalizers are replayed)")
    parser.add_argument("--experiment", metavar="NAME", default=None,
                        help="Experiment whose trained model predicts (default: the "
                             "dataset's only trained model)")
    parser.add_argument("--source", metavar="NAME", default=None,
                        help="Result source to look runs up in (e.g. subunit2sql, zuul)")
    parser.add_argument("--build-name", metavar="JOB", default=None,
                        help="Job whose runs are predicted (default: the dataset's)")
    parser.add_argument("--unusual-percentile", metavar="P", type=_percentile, default=None,
                        help="A run scoring at or above this percentile of the dataset's "
                             "training runs is reported unusual (default: 99)")
    parser.add_argument("--metric-source", metavar="NAME", default=None,
                        help="Metric source that reads new runs (default: the one the "
                             "dataset's runs were cached with, with the same options; "
                             "options given here override them).  Another source than the "
                             "dataset's works where both give the common column names "
                             "(dstat, pcp, prometheus)")
    parser.add_argument("--allow-scheme", metavar="SCHEME", action="append", default=[],
                        help="Also fetch artifacts URLs of this scheme (e.g. file) when they "
                             "come from an event or the result source; http and https "
                             "always are.  Repeatable")
    parser.add_argument("--allow-host", metavar="HOST", action="append", default=[],
                        help="Fetch artifacts URLs from events and the result source only "
                             "from this host; a leading dot (.example.org) allows every "
                             "host under a domain.  Repeatable (default: any host)")
    from ciml.commands.prediction import add_storing_options

    add_storing_options(parser)
    add_component_options(parser, "result_source", title="result source options")
    add_component_options(parser, "metric_source", title="metric source options")


def _percentile(text):
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"a percentile is between 0 and 100, not {text}")
    return value


def url_policy(parsed_args):
    from ciml.urlpolicy import UrlPolicy

    return UrlPolicy(schemes=parsed_args.allow_scheme or (),
                     hosts=parsed_args.allow_host or None)


def check_names(parsed_args):
    """Refuse misspelled plugin names before anything heavy is loaded."""
    from ciml.plugins import get_manager

    manager = get_manager()
    if parsed_args.source:
        manager.get("result_source", parsed_args.source)
    if parsed_args.metric_source:
        manager.get("metric_source", parsed_args.metric_source)


def load_predictor(cmd, parsed_args, lazy=False):
    """The predictor of ``--dataset``/``--experiment``; ``lazy``: the estimator loads on use."""
    from ciml import online
    from ciml.commands.base import component_options

    path = data_path(cmd)
    experiment = parsed_args.experiment or online.default_experiment(path, parsed_args.dataset)
    predictor = online.Predictor.load(
        path, parsed_args.dataset, experiment, metric_source=parsed_args.metric_source,
        metric_options=lambda cls: component_options(cls, parsed_args), lazy=lazy)
    predictor.unusual_percentile = parsed_args.unusual_percentile
    if parsed_args.build_name:
        predictor.build_name = parsed_args.build_name
    return predictor


def build_source(parsed_args):
    if not parsed_args.source:
        return None
    return build_component("result_source", parsed_args.source, parsed_args)


class Predict(Lister):
    """Predict the class of runs (run ids, build uuids or local dstat files)"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        add_model_options(parser)
        parser.add_argument("runs", metavar="RUN", nargs="+",
                            help="A run id or build uuid (looked up in the raw cache, then "
                                 "the result source), or the path of a dstat file")
        parser.add_argument("--plot", metavar="DIR", default=None,
                            help="Also draw, per run, its top features against the passed "
                                 "runs' typical band, the windows that mattered shaded")
        from ciml.executor import add_scheduler_option

        return add_scheduler_option(parser)

    def take_action(self, parsed_args):
        from ciml import online
        from ciml.commands.prediction import storing

        check_names(parsed_args)
        # The estimator (TensorFlow) loads only once a run's metrics were read.
        predictor = load_predictor(self, parsed_args, lazy=True)
        source = build_source(parsed_args)
        from ciml.executor import connect

        # --plot draws from the metrics predict already read: no second fetch.
        frames = [] if parsed_args.plot else None
        cluster = None
        try:
            cluster = connect(parsed_args.scheduler)
            with storing(self, parsed_args):
                records = online.predict_runs(data_path(self), parsed_args.dataset,
                                              predictor.experiment_name, parsed_args.runs,
                                              source=source, predictor=predictor,
                                              url_policy=url_policy(parsed_args),
                                              frames=frames, cluster=cluster)
            if parsed_args.plot:
                from ciml.explain_plot import plot_records

                for path in plot_records(predictor, records, frames, parsed_args.plot):
                    self.app.stderr.write(f"plot written to {path}\n")
        finally:
            if cluster is not None:
                cluster.close()
            if source is not None:
                source.close()
        self._errors = [r for r in records if r.get("error")]
        for record in self._errors:
            self.app.stderr.write(f"cannot predict {record['run_id']}: {record['error']}\n")
        return online.prediction_table(records, predictor.classes)

    def run(self, parsed_args):
        self._errors = []
        rc = super().run(parsed_args)
        # Exit non-zero when a run could not be predicted, after printing the others.
        return rc or (1 if self._errors else 0)
