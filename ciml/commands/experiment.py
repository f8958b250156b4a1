"""``ciml setup-experiment`` and ``ciml experiment list|show|delete``."""

from cliff.command import Command
from cliff.lister import Lister
from cliff.show import ShowOne

from ciml.commands.base import (
    add_component_options,
    component_options,
    data_path,
    parse_key_values,
)
from ciml.errors import ConfigError


def _params(params):
    """The hyper-parameters that are set, sorted (a dict: JSON keeps it one)."""
    return {k: v for k, v in sorted(params.items()) if v is not None}


def _experiment_data(exp):
    columns = ["name", "estimator", "params", "created", "ciml_version"]
    values = [exp.name, exp.estimator, _params(exp.params), exp.created, exp.ciml_version]
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
                            "one (see 'ciml plugin list --kind estimator'; default: dnn)")
        parser.add_argument("-o", "--option", dest="options", metavar="KEY=VALUE",
                            action="append", default=[],
                            help="A hyper-parameter as key=value, repeatable: the same as "
                            "its option below (see 'ciml plugin show estimator NAME')")
        parser.add_argument("--dataset", metavar="NAME", default=None,
                            help="Dataset the experiment is meant for, recorded as the "
                            "original ciml did (ciml-train-model then defaults to it); "
                            "'ciml train-model' still trains it on any dataset")
        parser.add_argument("--force", action="store_true",
                            help="Replace an existing experiment of the same name")
        # Every hyper-parameter of every installed estimator is an option;
        # the chosen estimator takes those it declares, the others are refused.
        group = add_component_options(
            parser, "estimator",
            "estimator hyper-parameters (each applies to the estimators named in brackets)")
        self._estimator_options = [(a.dest, a.option_strings[0])
                                   for a in group._group_actions]
        return parser

    def take_action(self, parsed_args):
        from ciml.experiment import Experiment
        from ciml.plugins import get_manager

        cls = get_manager().get("estimator", parsed_args.estimator)
        params = component_options(cls, parsed_args)
        taken = {p.name for p in cls.parameters}
        for dest, option in getattr(self, "_estimator_options", ()):
            name = dest.rsplit(":", 1)[-1]
            if getattr(parsed_args, dest, None) is None:
                continue
            if name not in taken or (":" in dest and not dest.startswith(
                    f"estimator:{cls.name}:")):
                raise ConfigError(
                    f"{option} is not a hyper-parameter of estimator {cls.name!r}; it takes: "
                    + ", ".join(p.option for p in cls.parameters))
        params.update(parse_key_values(parsed_args.options))
        exp = Experiment.create(parsed_args.experiment, parsed_args.estimator, params,
                                dataset=parsed_args.dataset)
        path = data_path(self, create=True)
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

        rows = [(e.name, e.estimator, _params(e.params), e.created)
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
