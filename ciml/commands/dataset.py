"""``ciml build-dataset`` and ``ciml dataset list|show|delete|plot``."""

import argparse
import json

from cliff.command import Command
from cliff.lister import Lister
from cliff.show import ShowOne

from ciml.commands.base import data_path


def _interval_option(value):
    from ciml.base.component import interval

    try:
        return interval(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_build_options(parser):
    """The build-dataset options (shared with the legacy ``ciml-build-dataset``)."""
    parser.add_argument("--dataset", metavar="NAME", default="dataset",
                        help="Name of the dataset to build (default: dataset)")
    parser.add_argument("--build-name", metavar="NAME", default="tempest-full",
                        help="Job (build name) whose cached runs are used "
                        "(default: tempest-full)")
    parser.add_argument("--slicer", metavar="START:STOP", default=":",
                        help="Python slice of the cached runs, oldest first: :100 "
                        "the oldest 100, --slicer=-50: the newest 50 (default: all)")
    parser.add_argument("--features-regex", metavar="RE", default=None,
                        help="Keep the metric columns whose name matches (re.search), "
                        "e.g. '^(cpu|mem)_'; default: all columns. Only columns "
                        "present in every run are kept, sorted by name")
    parser.add_argument("--sample-interval", metavar="INTERVAL", default=None,
                        type=_interval_option,
                        help="Resample to this interval (mean): 10s, 1min, ...; "
                        "default: the raw 1 s samples")
    parser.add_argument("--aggregation-functions", metavar="FUNC", nargs="+",
                        default=None,
                        help="Instead of the time axis, one row per numpy reduction: "
                        "mean std max min median ..., pNN for a percentile (p95), "
                        "length (samples), diff_std (jitter), peak_at (when the "
                        "maximum came, 0-1); suggested: mean std min max p5 median "
                        "p95 diff_std peak_at length")
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
    parser.add_argument("--scale-per", choices=("auto", "cell", "feature"), default="auto",
                        help="Scaling statistics per (time step, feature) cell or per "
                        "feature over all time steps; auto: feature for time series, "
                        "cell for aggregates (default: auto)")
    parser.add_argument("--fixed-length", metavar="STEPS", type=_positive, default=None,
                        help="Time steps per example (time series): runs are cut or "
                        "zero-padded to it (default: the 95th percentile of the training "
                        "runs' lengths, stored in the dataset)")
    parser.add_argument("--force", action="store_true",
                        help="Replace an existing dataset of the same name")
    parser.add_argument("--visualize", action="store_true",
                        help="Also write the dataset's plots (see 'dataset plot')")
    parser.add_argument("--plot-dir", metavar="DIR", default=None,
                        help="Where --visualize writes its PNGs (default: "
                        "<data path>/plots/datasets/<name>)")
    return parser


def _positive(text):
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("expected a positive number of time steps")
    return value


def _balance_text(balance):
    return ", ".join(f"{k}={v}" for k, v in balance.items())


def _structured(parsed_args):
    """Whether the output format keeps lists and dicts (json, yaml) as they are."""
    return getattr(parsed_args, "formatter", None) in ("json", "yaml")


def _shape_value(shape, parsed_args):
    """An array shape: a list in JSON/YAML, ``60x31`` as text."""
    shape = [int(n) for n in shape]
    return shape if _structured(parsed_args) else "x".join(map(str, shape))


def _nested_value(value, parsed_args):
    """A dict of dicts (per split counts): as it is in JSON/YAML, ``split: k=v; ...`` as text."""
    if _structured(parsed_args):
        return value
    return "; ".join(f"{k}: {_balance_text(v)}" for k, v in value.items())


def _chain_text(chain):
    """``filter(31 columns) -> resample(1min) -> ...``: the stored steps, short."""
    parts = []
    for spec in chain:
        params = {k: v for k, v in (spec.get("params") or {}).items() if v is not None}
        if spec["name"] == "filter" and params.get("columns"):
            params["columns"] = f"{len(params['columns'])} columns"
        args = ", ".join(str(v) if not isinstance(v, list) else " ".join(map(str, v))
                         for v in params.values())
        parts.append(f"{spec['name']}({args})" if args else spec["name"])
    return " -> ".join(parts)


def _steps_text(config, steps, axis):
    if axis == "aggregate":
        return list(steps)
    return f"{len(steps)} x {config.get('sample_interval') or '1s'}"


class BuildDataset(ShowOne):
    """Build a normalized, split dataset from the cached runs of a job"""

    _epilog = (
        "Features are the metric columns (matching --features-regex) present in "
        "every selected run, sorted by name; columns only some runs have (dstat "
        "0.7.2's cpu_hiq and cpu_siq, 0.7.3's cpu_stl) are left out and listed as "
        "dropped_features. Runs that cannot be used (unreadable series, no label, "
        "no matching column) are left out and counted by reason: -v lists them one "
        "by one, 'ciml dataset show NAME' keeps the list.")

    def get_parser(self, prog_name):
        from ciml.executor import add_scheduler_option

        return add_scheduler_option(add_build_options(super().get_parser(prog_name)))

    def take_action(self, parsed_args):
        from ciml.dataset import build_dataset, store
        from ciml.errors import Interrupted
        from ciml.executor import connect

        path = data_path(self)
        existed = store.is_dataset(path.dataset(parsed_args.dataset))
        cluster = connect(parsed_args.scheduler)
        try:
            summary = build_dataset(
                path, parsed_args.dataset, parsed_args.build_name,
                slicer=parsed_args.slicer, features_regex=parsed_args.features_regex,
                sample_interval=parsed_args.sample_interval,
                aggregation_functions=parsed_args.aggregation_functions,
                class_label=parsed_args.class_label, tdt_split=parsed_args.tdt_split,
                split=parsed_args.split, seed=parsed_args.seed, force=parsed_args.force,
                scale=parsed_args.scale, visualize=parsed_args.visualize,
                scale_per=parsed_args.scale_per, fixed_length=parsed_args.fixed_length,
                plot_dir=parsed_args.plot_dir, cluster=cluster)
        except KeyboardInterrupt:
            # The build writes into a staging folder it removes on the way out.
            raise Interrupted(
                f"nothing was written; dataset {parsed_args.dataset!r} "
                + ("is unchanged" if existed else "was not created")
                + ", rerun build-dataset to build it") from None
        finally:
            if cluster is not None:
                cluster.close()
        # Skipped runs and dropped features were logged once by the build.
        columns = ["name", "path", "runs", "examples", "skipped", "skipped_by_reason",
                   "example_shape", "classes", "class_balance", "features",
                   "dropped_features", "fingerprint", "elapsed_s"]
        data = [summary["name"], str(summary["path"]), summary["runs_selected"],
                dict(summary["splits"]), len(summary["skipped"]),
                dict(summary["skipped_by_reason"]),
                _shape_value(summary["example_shape"], parsed_args),
                list(summary["classes"]),
                _nested_value(summary["class_balance"], parsed_args),
                len(summary["features"]), list(summary["dropped_features"]),
                summary["fingerprint"], summary["elapsed_s"]]
        if summary.get("plots"):
            columns.append("plots")
            data.append([str(p) for p in summary["plots"]])
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
                         list(ds.classes), {s: int(counts.get(s, 0)) for s in ds.splits},
                         _steps_text(ds.config, ds.steps, ds.axis), len(ds.features),
                         len(ds.attrs.get("skipped", [])),
                         ds.provenance.get("created", "")))
        return ("name", "build_name", "class_label", "classes", "examples", "steps",
                "features", "skipped", "created"), rows


class DatasetShow(ShowOne):
    """Show a dataset: configuration, shapes, class balance per split, features"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME", help="Dataset name")
        return parser

    def take_action(self, parsed_args):
        from ciml.dataset import Dataset
        from ciml.dataset.build import skipped_by_reason

        ds = Dataset.open(data_path(self), parsed_args.name)
        structured = _structured(parsed_args)

        def show(value):
            """Lists and dicts as they are; nested ones as JSON text outside json/yaml."""
            if structured or not isinstance(value, (list, dict)):
                return value
            flat = all(not isinstance(v, (list, dict))
                       for v in (value.values() if isinstance(value, dict) else value))
            return value if flat else json.dumps(value)

        skipped = ds.attrs.get("skipped", [])
        rows = [
            ("name", ds.name), ("path", str(ds.path)), ("fingerprint", ds.fingerprint),
            ("classes", list(ds.classes)), ("axis", ds.axis),
            ("steps", list(ds.steps) if ds.axis == "aggregate"
             else _steps_text(ds.config, ds.steps, ds.axis)),
            ("feature_count", len(ds.features)),
            ("features", list(ds.features)),
            ("dropped_features", list(ds.attrs.get("dropped_features", []))),
            ("chain", _chain_text(ds.attrs.get("chain", []))),
        ]
        rows += [(f"config.{key}", show(value)) for key, value in ds.config.items()]
        balance = ds.attrs.get("class_balance", {})
        for split in ds.splits:
            rows.append((f"{split}.shape", _shape_value(ds.split(split).X.shape, parsed_args)))
            rows.append((f"{split}.classes", dict(balance.get(split, {}))))
        rows.append(("skipped", len(skipped)))
        rows.append(("skipped_by_reason", dict(skipped_by_reason(skipped))))
        from ciml.dataset.profile import threshold

        profile = ds.profile
        rows.append(("unusual_profile", (
            f"{profile['runs']} {profile.get('reference', 'training runs')}, "
            f"{len(profile['labels'])} summary values; "
            f"score median {threshold(profile, 50):.2f}, 99th percentile "
            f"{threshold(profile, 99):.2f}") if profile
            else "none (built before ciml scored unusual runs: rebuild with --force)"))
        rows += [(f"provenance.{key}", show(value)) for key, value in ds.provenance.items()]
        return tuple(zip(*rows))


class DatasetDelete(Command):
    """Delete a dataset"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME", help="Dataset name")
        return parser

    def take_action(self, parsed_args):
        from ciml.dataset import delete_dataset
        from ciml.model import list_models

        path = delete_dataset(data_path(self), parsed_args.name)
        self.app.stdout.write(f"deleted dataset {parsed_args.name} ({path})\n")
        # A model replays its dataset's normalizers: it cannot predict any more.
        orphans = [m["experiment"] for m in list_models(data_path(self))
                   if m["dataset"] == parsed_args.name]
        if orphans:
            self.app.stderr.write(
                f"{len(orphans)} model(s) trained on {parsed_args.name} can no longer "
                f"predict: {', '.join(orphans)}; remove them with ciml model delete "
                f"--dataset {parsed_args.name} --experiment NAME\n")


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
