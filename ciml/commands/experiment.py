"""``ciml setup-experiment`` and ``ciml experiment list|show|delete``."""

from cliff.command import Command
from cliff.lister import Lister
from cliff.show import ShowOne

from ciml.commands.base import data_path, parse_key_values

#: The original ciml's options, each a hyper-parameter of the estimator.
_SHORTCUTS = (
    ("hidden_layers", "--hidden-layers", "UNITS",
     "Units per hidden layer separated by '/', e.g. 100/100/100"),
    ("steps", "--steps", "N", "Cap on the total number of training steps"),
    ("batch_size", "--batch-size", "N", "Examples per training step"),
    ("epochs", "--epochs", "N", "Most passes over the training examples"),
    ("optimizer", "--optimizer", "NAME", "Adagrad, Adam, Ftrl, RMSProp or SGD"),
    ("learning_rate", "--learning-rate", "X", "Learning rate"),
)


def _params_text(params):
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()) if v is not None)


def _experiment_data(exp):
    columns = ["name", "estimator", "params", "created", "ciml_version"]
    values = [exp.name, exp.estimator, _params_text(exp.params), exp.created or "",
              exp.ciml_version or ""]
    if exp.dataset:
        columns.insert(2, "dataset")
        values.insert(2, exp.dataset)
    return columns, values


class SetupExperiment(ShowOne):
    """Define an experiment: an estimator and its hyper-parameters"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--experiment", metavar="NAME", default="experiment",
                            help="Name of the experiment (default: experiment)")
        parser.add_argument("--estimator", metavar="NAME", default="dnn",
                            help="Estimator plugin: gbdt (suggested for aggregate "
                            "datasets), dnn, cnn (time series), linear-svm or any installed "
                            "one (see 'ciml plugin list estimator'; default: dnn)")
        for dest, option, metavar, help_text in _SHORTCUTS:
            parser.add_argument(option, dest=dest, metavar=metavar, default=None,
                                help=help_text)
        parser.add_argument("-o", "--option", dest="options", metavar="KEY=VALUE",
                            action="append", default=[],
                            help="Any hyper-parameter the estimator declares, repeatable "
                            "(see 'ciml plugin show estimator NAME')")
        parser.add_argument("--dataset", metavar="NAME", default=None,
                            help="Dataset the experiment is meant for, recorded as the "
                            "original ciml did (ciml-train-model then defaults to it); "
                            "'ciml train-model' still trains it on any dataset")
        parser.add_argument("--force", action="store_true",
                            help="Replace an existing experiment of the same name")
        return parser

    def take_action(self, parsed_args):
        from ciml.experiment import Experiment

        params = {dest: getattr(parsed_args, dest) for dest, *_ in _SHORTCUTS
                  if getattr(parsed_args, dest) is not None}
        params.update(parse_key_values(parsed_args.options))
        exp = Experiment.create(parsed_args.experiment, parsed_args.estimator, params,
                                dataset=parsed_args.dataset)
        path = data_path(self)
        if exp.dataset and not path.dataset(exp.dataset).exists():
            # Not an error: an experiment may well be defined before its dataset.
            self.app.stderr.write(f"note: dataset {exp.dataset!r} does not exist yet; "
                                  "build it before training\n")
        exp.save(path, force=parsed_args.force)
        return _experiment_data(exp)


class ExperimentList(Lister):
    """List the saved experiments"""

    def take_action(self, parsed_args):
        from ciml.experiment import list_experiments

        rows = [(e.name, e.estimator, _params_text(e.params), e.created or "")
                for e in list_experiments(data_path(self))]
        return ("name", "estimator", "params", "created"), rows


class ExperimentShow(ShowOne):
    """Show an experiment's estimator and hyper-parameters"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME", help="Experiment name")
        return parser

    def take_action(self, parsed_args):
        from ciml.experiment import Experiment

        exp = Experiment.load(data_path(self), parsed_args.name)
        if parsed_args.formatter in ("json", "yaml"):
            columns = ["name", "estimator", "params", "created", "ciml_version"]
            values = [exp.name, exp.estimator, exp.params, exp.created, exp.ciml_version]
            if exp.dataset:
                columns.insert(2, "dataset")
                values.insert(2, exp.dataset)
            return columns, values
        return _experiment_data(exp)


class ExperimentDelete(Command):
    """Delete a saved experiment (the models trained from it stay)"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME", help="Experiment name")
        return parser

    def take_action(self, parsed_args):
        from ciml.experiment import delete_experiment

        path = delete_experiment(data_path(self), parsed_args.name)
        self.app.stdout.write(f"deleted experiment {parsed_args.name} ({path})\n")
