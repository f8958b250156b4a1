"""``ciml train-model`` and ``ciml model list|show|plot|compare|delete``."""

import argparse

from cliff.command import Command
from cliff.lister import Lister
from cliff.show import ShowOne

from ciml.commands.base import column_name, data_path
from ciml.errors import ConfigError, Interrupted


def _add_model_arguments(parser):
    """``--dataset`` and ``--experiment``: which trained model a command is about."""
    parser.add_argument("--dataset", metavar="NAME", required=True, help="Dataset name")
    parser.add_argument("--experiment", metavar="NAME", required=True, help="Experiment name")


def _fmt(value):
    return "-" if value is None else f"{value:.4f}"


def _num(value):
    """A metric as a number (JSON/YAML keep it one), rounded as the table shows it."""
    return None if value is None else round(float(value), 4)


class _MetricsTable(ShowOne):
    """A ShowOne whose table form is (metric, model, baseline) rows.

    ``-f json``/``yaml`` print the metrics dict itself (``accuracy``,
    ``macro_f1``, ``per_class``, ``confusion_matrix``, ``baseline``...);
    a Field/Value table cannot put a model beside its baseline, so the
    table form is a list.
    """

    _rows = None

    def produce_output(self, parsed_args, column_names, data):
        if parsed_args.formatter == "table" and self._rows is not None:
            rows = self._rows
            if parsed_args.columns:
                # -c picks metrics, by the names the other formats give them.
                wanted = set(parsed_args.columns)
                rows = [r for r in rows if column_name(r[0]) in wanted
                        or "baseline_" + column_name(r[0]) in wanted]
                names = [column_name(r[0]) for r in self._rows]
                unknown = wanted - set(names) - {"baseline_" + n for n in names}
                if unknown:
                    raise ConfigError(
                        "no such column: " + ", ".join(sorted(unknown)) + "; columns: "
                        + ", ".join(column_name(r[0]) for r in self._rows))
            self.formatter.emit_list(("metric", "model", "baseline"), rows,
                                     self.app.stdout, parsed_args)
            return 0
        return super().produce_output(parsed_args, column_names, data)

    def metrics_output(self, parsed_args, metrics):
        from ciml.metrics import metric_rows

        if parsed_args.formatter in ("json", "yaml"):
            keys = sorted(metrics)
            return keys, [metrics[k] for k in keys]
        self._rows = metric_rows(metrics)
        flat = [(f"{name}", value) for name, value, _ in self._rows]
        flat += [(f"baseline {name}", base) for name, _, base in self._rows]
        return [k for k, _ in flat], [v for _, v in flat]


class TrainModel(_MetricsTable):
    """Train an experiment on a dataset; evaluate it beside a majority-class baseline"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--dataset", metavar="NAME", default="dataset",
                            help="Dataset to train on (default: dataset)")
        parser.add_argument("--experiment", metavar="NAME", default="experiment",
                            help="Experiment to run (default: experiment)")
        parser.add_argument("--eval-dataset", metavar="NAME", action="append", default=[],
                            help="Also evaluate on this dataset's test split (same "
                            "features); repeatable")
        parser.add_argument("--seed", default=None, metavar="N|random",
                            help="Random seed: the same seed gives the same model on CPU "
                            "(default: the experiment's, else 0); 'random' draws one "
                            "(recorded in the model)")
        from ciml.commands.operating import add_operating_point_options

        add_operating_point_options(parser)
        parser.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=None,
                            help="Require a GPU (--gpu) or hide every GPU (--no-gpu) for "
                            "this training: sets the estimator's gpu parameter; default: "
                            "the experiment's, else TensorFlow's choice")
        parser.add_argument("--keep-on-interrupt", action="store_true",
                            help="On Ctrl-C, evaluate and save the best model so far "
                            "(default: save nothing)")
        return parser

    _interrupted = None

    def run(self, parsed_args):
        result = super().run(parsed_args)
        if self._interrupted:
            # The user pressed Ctrl-C: exit as interrupted, the kept model said.
            raise Interrupted(self._interrupted)
        return result

    def take_action(self, parsed_args):
        from ciml.model import train_model

        try:
            metrics = train_model(data_path(self), parsed_args.dataset, parsed_args.experiment,
                                  eval_datasets=parsed_args.eval_dataset,
                                  seed=parsed_args.seed, gpu=parsed_args.gpu,
                                  keep_on_interrupt=parsed_args.keep_on_interrupt,
                                  calibration=parsed_args.calibration,
                                  min_precision=parsed_args.min_precision,
                                  max_false_alarm_rate=parsed_args.max_false_alarm_rate)
        except Interrupted:
            raise
        except KeyboardInterrupt:
            raise Interrupted("nothing was saved") from None
        path = data_path(self).model(parsed_args.dataset, parsed_args.experiment)
        # Only an estimator that wrote event files has curves for TensorBoard to show.
        logs = path / "logs"
        hint = (f" (tensorboard --logdir {logs})"
                if logs.is_dir() and any(logs.rglob("*tfevents*")) else "")
        self.app.stderr.write(f"model saved in {path}{hint}\n")
        if metrics.get("interrupted"):
            stopped = metrics["interrupted"]
            self._interrupted = (f"training stopped after {stopped.get('epochs_run')} "
                                 f"epoch(s); kept the model of epoch "
                                 f"{stopped.get('best_epoch')}, the best so far, in {path}")
        for name, other in (metrics.get("eval_datasets") or {}).items():
            self.app.stderr.write(
                f"eval on {name}: accuracy {_fmt(other.get('accuracy'))} (baseline "
                f"{_fmt(other['baseline'].get('accuracy'))}), macro_f1 "
                f"{_fmt(other.get('macro_f1'))} (baseline "
                f"{_fmt(other['baseline'].get('macro_f1'))})\n")
        return self.metrics_output(parsed_args, metrics)


class ModelList(Lister):
    """List the trained models with their headline metrics"""

    def take_action(self, parsed_args):
        from ciml.model import list_models

        rows = []
        for m in list_models(data_path(self)):
            meta, metrics = m["metadata"], m["metrics"]
            base = metrics.get("baseline") or {}
            rows.append((m["dataset"], m["experiment"], meta.get("estimator"),
                         _num(metrics.get("accuracy")), _num(metrics.get("macro_f1")),
                         _num(base.get("macro_f1")), meta.get("seed"),
                         meta.get("trained", "")))
        return ("dataset", "experiment", "estimator", "accuracy", "macro_f1",
                "baseline_macro_f1", "seed", "trained"), rows


class ModelShow(_MetricsTable):
    """Show a trained model's test metrics beside the majority-class baseline"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        _add_model_arguments(parser)
        parser.add_argument("--eval-dataset", metavar="NAME", default=None,
                            help="Show the metrics on this eval dataset instead")
        parser.add_argument("--split", choices=("test", "dev"), default="test",
                            help="Which split's metrics (default: test)")
        return parser

    def take_action(self, parsed_args):
        from ciml.errors import NotFoundError
        from ciml.model import read_metadata, read_metrics

        metrics = read_metrics(data_path(self), parsed_args.dataset, parsed_args.experiment)
        if parsed_args.eval_dataset:
            evals = metrics.get("eval_datasets") or {}
            if parsed_args.eval_dataset not in evals:
                raise NotFoundError(
                    f"model {parsed_args.dataset}/{parsed_args.experiment} was not evaluated "
                    f"on {parsed_args.eval_dataset!r} (evaluated on: "
                    + (", ".join(evals) or "none") + ")")
            metrics = evals[parsed_args.eval_dataset]
        elif parsed_args.split == "dev":
            if not metrics.get("dev"):
                raise NotFoundError("this model has no dev-split metrics")
            metrics = metrics["dev"]
        if parsed_args.formatter in ("json", "yaml"):
            meta = read_metadata(data_path(self), parsed_args.dataset, parsed_args.experiment)
            metrics = dict(metrics, model={k: meta.get(k) for k in (
                "dataset", "experiment", "estimator", "estimator_distribution",
                "estimator_version", "dataset_fingerprint", "seed", "training_time_s",
                "ciml_version", "trained")})
        return self.metrics_output(parsed_args, metrics)


class ModelPlot(Lister):
    """Plot a trained model: confusion matrix, training curves, precision-recall curve"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        _add_model_arguments(parser)
        parser.add_argument("--output-dir", metavar="DIR", default=None,
                            help="Where to write the PNGs (default: <model dir>/plots)")
        return parser

    def take_action(self, parsed_args):
        from ciml.model_plot import plot_model

        paths = plot_model(data_path(self), parsed_args.dataset, parsed_args.experiment,
                           parsed_args.output_dir)
        return ("plot", "path"), [(p.stem, str(p)) for p in paths]


class ModelCompare(Lister):
    """Compare one metric across trained models in a bar chart (the original ciml-plot-data)"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--dataset-experiment-label", metavar=("DATASET", "EXPERIMENT",
                                                                   "LABEL"),
                            nargs=3, action="append", default=[],
                            help="A model to chart and its bar label; repeatable")
        parser.add_argument("--dataset-experiment-comp", metavar=("DATASET", "EXPERIMENT"),
                            nargs=2, action="append", default=[],
                            help="A model of a second set, charted beside the model at "
                            "the same position in the first set; repeatable")
        parser.add_argument("--experiment-sets-names", metavar="NAME", nargs="+",
                            default=None, help="Legend names of the first and second set")
        parser.add_argument("-k", "--key", default="accuracy",
                            help="Metric: accuracy, macro_f1, roc_auc, pr_auc or error_rate "
                            "(default: accuracy)")
        parser.add_argument("--output", metavar="PNG", default=None,
                            help="Output file (default: <key>_comparison.png)")
        parser.add_argument("--title", default=None, help="Chart title")
        return parser

    def take_action(self, parsed_args):
        from ciml.model_plot import compare_models

        first = [tuple(e) for e in parsed_args.dataset_experiment_label]
        second = [(d, e, first[i][2] if i < len(first) else f"{d}/{e}")
                  for i, (d, e) in enumerate(parsed_args.dataset_experiment_comp)]
        rows, output = compare_models(data_path(self), [first, second], key=parsed_args.key,
                                      output=parsed_args.output, title=parsed_args.title,
                                      set_names=parsed_args.experiment_sets_names)
        self.app.stderr.write(f"chart written to {output}\n")
        return (("set", "label", "dataset", "experiment", parsed_args.key, "baseline"),
                [(s, lb, d, e, _num(v), _num(b)) for s, lb, d, e, v, b in rows])


class ModelDelete(Command):
    """Delete a trained model (its dataset and experiment stay)"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        _add_model_arguments(parser)
        return parser

    def take_action(self, parsed_args):
        from ciml.model import delete_model

        path = delete_model(data_path(self), parsed_args.dataset, parsed_args.experiment)
        self.app.stdout.write(f"deleted model {parsed_args.dataset}/{parsed_args.experiment} "
                              f"({path})\n")
