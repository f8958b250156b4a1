"""``ciml build-dataset`` and ``ciml dataset list|show|delete|plot``."""

import json

from cliff.command import Command
from cliff.lister import Lister
from cliff.show import ShowOne

from ciml.commands.base import data_path


def add_build_options(parser):
    """The build-dataset options (shared with the legacy ``ciml-build-dataset``)."""
    parser.add_argument("--dataset", metavar="NAME", default="dataset",
                        help="Name of the dataset to build (default: dataset)")
    parser.add_argument("--build-name", metavar="NAME", default="tempest-full",
                        help="Job (build name) whose cached runs are used "
                        "(default: tempest-full)")
    parser.add_argument("--slicer", metavar="START:STOP", default=":",
                        help="Slice of the cached runs, oldest first (default: all)")
    parser.add_argument("--features-regex", metavar="RE", default=None,
                        help="Keep the metric columns whose name matches (re.search); "
                        "default: all numeric columns")
    parser.add_argument("--sample-interval", metavar="INTERVAL", default=None,
                        help="Resample to this interval (mean): 10s, 1min, ...; "
                        "default: the raw 1 s samples")
    parser.add_argument("--aggregation-functions", metavar="FUNC", nargs="+",
                        default=None,
                        help="Instead of the time axis, one row per numpy reduction: "
                        "mean std max min median ...")
    parser.add_argument("--class-label", metavar="LABEL", default="status",
                        help="status (passed/failed), node_provider (provider family), "
                        "node_provider_all (raw provider) or any run-metadata key "
                        "(default: status)")
    parser.add_argument("--tdt-split", metavar="N", nargs=3, type=int, default=[6, 2, 2],
                        help="Training, dev and test shares, summing to 10 "
                        "(default: 6 2 2)")
    parser.add_argument("--split", choices=("random", "time"), default="random",
                        help="random (seeded) or time: train on the oldest runs, "
                        "test on the newest (default: random)")
    parser.add_argument("--seed", type=int, default=0,
                        help="Seed of the random split (default: 0)")
    parser.add_argument("--scale", choices=("range", "zscore", "none"), default="range",
                        help="Scaling fitted on the training split: range = "
                        "(x - mean) / (max - min) as the original, zscore, or none "
                        "(default: range)")
    parser.add_argument("--force", action="store_true",
                        help="Replace an existing dataset of the same name")
    parser.add_argument("--visualize", action="store_true",
                        help="Also write the dataset's plots (see 'dataset plot')")
    parser.add_argument("--plot-dir", metavar="DIR", default=None,
                        help="Where --visualize writes its PNGs (default: "
                        "<data path>/plots/datasets/<name>)")
    return parser


def _balance_text(balance):
    return ", ".join(f"{k}={v}" for k, v in balance.items())


class BuildDataset(ShowOne):
    """Build a normalized, split dataset from the cached runs of a job"""

    def get_parser(self, prog_name):
        return add_build_options(super().get_parser(prog_name))

    def take_action(self, parsed_args):
        from ciml.dataset import build_dataset

        summary = build_dataset(
            data_path(self), parsed_args.dataset, parsed_args.build_name,
            slicer=parsed_args.slicer, features_regex=parsed_args.features_regex,
            sample_interval=parsed_args.sample_interval,
            aggregation_functions=parsed_args.aggregation_functions,
            class_label=parsed_args.class_label, tdt_split=parsed_args.tdt_split,
            split=parsed_args.split, seed=parsed_args.seed, force=parsed_args.force,
            scale=parsed_args.scale, visualize=parsed_args.visualize,
            plot_dir=parsed_args.plot_dir)
        for skip in summary["skipped"]:
            self.app.stderr.write(f"skipped {skip['run_id']}: {skip['reason']}: "
                                  f"{skip['message']}\n")
        columns = ["name", "path", "runs", "examples", "skipped", "example_shape",
                   "classes", "class_balance", "features", "fingerprint", "elapsed_s"]
        data = [summary["name"], summary["path"], summary["runs_selected"],
                ", ".join(f"{k}={v}" for k, v in summary["splits"].items()),
                len(summary["skipped"]), "x".join(map(str, summary["example_shape"])),
                ", ".join(summary["classes"]),
                "; ".join(f"{s}: {_balance_text(b)}"
                          for s, b in summary["class_balance"].items()),
                len(summary["features"]), summary["fingerprint"], summary["elapsed_s"]]
        if summary.get("plots"):
            columns.append("plots")
            data.append("\n".join(summary["plots"]))
        return columns, data


class DatasetList(Lister):
    """List the datasets under the data path"""

    def take_action(self, parsed_args):
        from ciml.dataset import Dataset, list_datasets

        rows = []
        for name in list_datasets(data_path(self)):
            ds = Dataset.open(data_path(self), name)
            counts = ds.attrs.get("counts", {})
            rows.append((name, ds.config.get("build_name"), ds.config.get("class_label"),
                         ", ".join(f"{s}={counts.get(s, 0)}" for s in ds.splits),
                         "x".join(map(str, ds.example_shape)),
                         ds.provenance.get("created", "")))
        return ("name", "build_name", "class_label", "examples", "example_shape",
                "created"), rows


class DatasetShow(ShowOne):
    """Show a dataset: configuration, shapes, class balance per split, features"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME", help="Dataset name")
        return parser

    def take_action(self, parsed_args):
        from ciml.dataset import Dataset

        ds = Dataset.open(data_path(self), parsed_args.name)
        columns = ["name", "path", "fingerprint", "classes", "axis", "features", "steps"]
        data = [ds.name, str(ds.path), ds.fingerprint, ", ".join(ds.classes), ds.axis,
                ", ".join(ds.features),
                ", ".join(ds.steps) if ds.axis == "aggregate" else str(len(ds.steps))]
        for key, value in ds.config.items():
            columns.append(f"config.{key}")
            data.append(value if isinstance(value, (str, int, float, type(None)))
                        else json.dumps(value))
        balance = ds.attrs.get("class_balance", {})
        for split in ds.splits:
            X = ds.split(split).X
            columns.append(f"{split}.shape")
            data.append("x".join(map(str, X.shape)))
            columns.append(f"{split}.classes")
            data.append(_balance_text(balance.get(split, {})))
        columns.append("skipped")
        data.append(len(ds.attrs.get("skipped", [])))
        for key, value in ds.provenance.items():
            columns.append(f"provenance.{key}")
            data.append(value if isinstance(value, (str, int, float)) else json.dumps(value))
        return columns, data


class DatasetDelete(Command):
    """Delete a dataset"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME", help="Dataset name")
        return parser

    def take_action(self, parsed_args):
        from ciml.dataset import delete_dataset

        path = delete_dataset(data_path(self), parsed_args.name)
        self.app.stdout.write(f"deleted dataset {parsed_args.name} ({path})\n")


class DatasetPlot(Lister):
    """Plot a dataset: example length, class balance, feature distributions by class"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME", help="Dataset name")
        parser.add_argument("--output-dir", metavar="DIR", default=None,
                            help="Where to write the PNGs (default: "
                            "<data path>/plots/datasets/<name>)")
        return parser

    def take_action(self, parsed_args):
        from ciml.dataset.plot import plot_dataset

        paths = plot_dataset(data_path(self), parsed_args.name,
                             output_dir=parsed_args.output_dir)
        return ("plot",), [(str(p),) for p in paths]
