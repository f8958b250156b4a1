"""``ciml predict``: predict the class of given runs with a trained model."""

from cliff.lister import Lister

from ciml.commands.base import add_component_options, build_component, data_path


def add_model_options(parser):
    """``--dataset``, ``--experiment`` and ``--source``, shared with ``ciml watch``."""
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
                        help="Metric source that reads the runs (default: the dataset's). "
                             "Another source than the dataset's works where both give the "
                             "common column names (dstat, pcp, prometheus)")
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


def load_predictor(cmd, parsed_args):
    from ciml import online

    path = data_path(cmd)
    experiment = parsed_args.experiment or online.default_experiment(path, parsed_args.dataset)
    metric_source = None
    if parsed_args.metric_source:
        metric_source = build_component("metric_source", parsed_args.metric_source, parsed_args)
    predictor = online.Predictor.load(path, parsed_args.dataset, experiment,
                                      metric_source=metric_source)
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
        return parser

    def take_action(self, parsed_args):
        from ciml import online

        predictor = load_predictor(self, parsed_args)
        source = build_source(parsed_args)
        try:
            records = online.predict_runs(data_path(self), parsed_args.dataset,
                                          predictor.experiment_name, parsed_args.runs,
                                          source=source, predictor=predictor)
            if parsed_args.plot:
                from ciml.explain_plot import plot_records

                for path in plot_records(predictor, parsed_args.runs, records,
                                         parsed_args.plot, data_path=data_path(self),
                                         source=source):
                    self.app.stderr.write(f"plot written to {path}\n")
        finally:
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
