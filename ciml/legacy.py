"""The original ciml's console scripts, kept so that its README and old scripts keep working.

Each script runs the matching ``ciml`` command after translating the
original's options: ``--data-path`` and ``--debug`` become global options,
click's ``--no-force``/``--no-visualize``/``--no-debug`` switches are read,
TensorFlow 1 estimator class names become plugin names, and the original's
defaults that the new commands lack (a build name, a dataset) are filled
in.  ``-h``/``--help`` describe the script itself: the command's options
under the script's name, and the original's spellings that are translated.

The first time a script creates the data path it says where that is: the
original kept its data in a ``data/`` folder of the source tree, ciml keeps
it under one data path (``--data-path``, ``CIML_DATA_PATH``, by default
``~/.local/share/ciml``).
"""

import argparse
import re
import sys
import textwrap

from ciml import paths
from ciml.errors import CimlError
from ciml.shell import main

#: The original's ``--estimator`` values (TensorFlow 1 class names) to plugin names.
_SEED_ESTIMATORS = {
    "tf.estimator.DNNClassifier": "dnn",
    "tf.estimator.LinearClassifier": "linear-svm",
    "tf.contrib.learn.SVM": "linear-svm",
    "svm": "linear-svm",
    "SVM": "linear-svm",
}

# What each script's --help lists under "options of the original ciml": the
# original's spellings that the script translates, with what they become.
_GLOBAL_HELP = (
    ("--data-path", "PATH", "Folder holding the raw cache, datasets, experiments and "
     f"models (env {paths.ENV_VAR}; default ~/.local/share/ciml), or s3://bucket/prefix "
     f"as in the original (then give --catalog-uri or {paths.CATALOG_ENV_VAR})"),
    ("--catalog-uri", "URL", "SQLAlchemy URL of the raw cache's catalog, needed with an "
     "s3:// data path (see ciml --help)"),
    ("--debug", None, "Show debug logging and tracebacks"),
    ("--no-debug", None, "The default; accepted as the original did"),
)
_S3_HELP = (
    ("--s3-profile", "PROFILE", "AWS profile of an s3:// data path (--storage-option "
     "profile=PROFILE); ignored with a local data path"),
    ("--s3-url", "URL", "Endpoint of an s3:// data path (--storage-option "
     "endpoint_url=URL); ignored with a local data path"),
)
_FORCE_HELP = (("--no-force", None, "The default: keep what exists"),)
_ONLINE_HELP = (
    ("--db-uri", "URI", "subunit2sql database to look runs up in (selects the subunit2sql "
     "result source; env CIML_DB_URI)"),
    ("--sample-interval", "INTERVAL", "Ignored: the dataset's own sample interval is used, "
     "so that runs are normalized exactly as in training"),
)
_MQTT_HELP = (
    ("--mqtt-hostname", "HOST", "MQTT broker host (the same as --mqtt-host)"),
)


# -- shared plumbing -----------------------------------------------------------


def _argv(argv):
    return list(sys.argv[1:] if argv is None else argv)


def _wants_help(args):
    for arg in args:
        if arg == "--":
            return False
        if arg in ("-h", "--help"):
            return True
    return False


def _take(args, names):
    """``({name: [values...]}, rest)``: the values of ``names`` (options with a value).

    Both ``--name value`` and ``--name=value`` are read.
    """
    taken, rest = {}, []
    it = iter(args)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name in names:
            taken.setdefault(name, []).append(value if eq else next(it, ""))
        else:
            rest.append(arg)
    return taken, rest


def _switch(args, name, default=False):
    """The value of a click ``--name/--no-name`` switch (the last one wins), and the rest."""
    value, rest = default, []
    for arg in args:
        if arg == f"--{name}":
            value = True
        elif arg == f"--no-{name}":
            value = False
        else:
            rest.append(arg)
    return value, rest


def _fail(prog, message):
    sys.stderr.write(f"{prog}: {message}\n")
    return 2


class _Refused(Exception):
    """An option of the original that ciml cannot honour; the message says why."""


def _common(prog, args):
    """The options every script shares: ``(global options, remaining args)``.

    The original's object storage maps onto ciml's: ``--data-path
    s3://bucket/prefix`` is the data path, ``--s3-profile`` the AWS profile
    and ``--s3-url`` the endpoint (``--storage-option profile=…``,
    ``endpoint_url=…``); with a local data path those two are ignored, as
    the original ignored them.  ``--catalog-uri`` passes through.
    """
    taken, rest = _take(args, ("--data-path", "--s3-profile", "--s3-url", "--catalog-uri"))
    debug, rest = _switch(rest, "debug")
    front = ["--debug"] if debug else []
    data_paths = taken.get("--data-path", [])
    remote = bool(data_paths) and data_paths[-1].startswith(("s3://", "s3a://"))
    if data_paths:
        _check_scheme(data_paths[-1], "--data-path")
        front += ["--data-path", data_paths[-1]]
    if remote:
        for value in taken.get("--s3-profile", [])[-1:]:
            front += ["--storage-option", f"profile={value}"]
        for value in taken.get("--s3-url", [])[-1:]:
            front += ["--storage-option", f"endpoint_url={value}"]
    for value in taken.get("--catalog-uri", [])[-1:]:
        front += ["--catalog-uri", value]
    return front, rest


def _check_scheme(value, option):
    # The original knew local folders and s3://; any other URL is a typo
    # here, or an fsspec protocol better named through ``ciml`` itself.
    if "://" in value and not value.startswith(("s3://", "s3a://", "file://")):
        raise _Refused(f"{option} {value} is not supported: give a local folder or "
                       "s3://bucket/prefix")


def _root(front):
    """The data path the global options in ``front`` choose."""
    from ciml.storage import parse_storage_options

    options = parse_storage_options(
        front[i + 1] for i, arg in enumerate(front) if arg == "--storage-option")
    catalog = front[front.index("--catalog-uri") + 1] if "--catalog-uri" in front else None
    if "--data-path" in front:
        return paths.DataPath(front[front.index("--data-path") + 1], options, catalog)
    return paths.DataPath(None, options, catalog)


def _run(prog, front, command, args):
    """``ciml <front> <command> <args>``; says where the data path is when it is new."""
    if "--data-path" in front and "://" in front[front.index("--data-path") + 1]:
        return main(front + list(command) + list(args))
    root = _root(front).root
    existed = root.exists()
    try:
        return main(front + list(command) + list(args))
    finally:
        if not existed and root.exists():
            sys.stderr.write(
                f"{prog}: ciml keeps its data in {root} (created now; the original used "
                f"./data; choose the folder with --data-path or {paths.ENV_VAR})\n")


def run_legacy(command, argv=None, extra=(), prog="ciml"):
    """Run ``ciml <command...> <extra> <argv>`` with the shared options translated."""
    try:
        front, rest = _common(prog, _argv(argv))
    except _Refused as exc:
        return _fail(prog, str(exc))
    return _run(prog, front, command, list(extra) + rest)


def _fill(text):
    """Wrap each paragraph; an indented one (a command to copy) stays as it is."""
    return "\n\n".join(
        part if part.startswith(" ") else
        textwrap.fill(part, 79, break_on_hyphens=False, break_long_words=False)
        for part in text.split("\n\n"))


def _print_help(prog, command, summary, original=(), hidden=(), defaults=None,
                epilog=None, other_components=()):
    """The script's own help: the command's parser named after the script, plus the
    original's spellings it translates.

    ``hidden``: options the script sets itself; ``defaults``: ``{option:
    text}`` for options the command requires but the script fills in;
    ``other_components``: ``(kind, name)`` whose options do not apply here.
    """
    from ciml.plugins import get_manager
    from ciml.shell import CimlApp

    app = CimlApp()
    factory, name, _ = app.command_manager.find_command(list(command))
    parser = factory(app, None, cmd_name=name).get_parser(prog)
    parser.description = _fill(summary)
    parser.epilog = _fill((epilog + "\n\n" if epilog else "") + (
        f"{prog} runs 'ciml {' '.join(command)}'; 'ciml help {' '.join(command)}' "
        "describes the same options."))
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    defaults = defaults or {}
    manager = get_manager()
    unused = set()
    for kind, keep in other_components:
        unused |= {n for n in manager.names(kind) if n != keep}
    owners = {id(entry["action"]): {n for n, _ in entry["owners"]} for entry in
              parser.__dict__.get("_ciml_component_options", {}).values()}
    for action in parser._actions:
        options = set(action.option_strings)
        if options & set(hidden) or (id(action) in owners and owners[id(action)] <= unused):
            action.help = argparse.SUPPRESS
        for option in options & set(defaults):
            action.required = False
            action.help = re.sub(r"\s*\(default: [^)]*\)", "", action.help or "")
            action.help += f" ({defaults[option]})"
    group = parser.add_argument_group("options of the original ciml (translated)")
    for option, metavar, text in tuple(original) + _GLOBAL_HELP + _S3_HELP:
        action = parser._option_string_actions.get(option)
        if action is not None:
            action.help = f"{action.help}; {text[0].lower()}{text[1:]}"
            continue
        if metavar:
            group.add_argument(option, metavar=metavar, help=text)
        else:
            group.add_argument(option, action="store_true", help=text)
    parser.print_help(sys.stdout)
    return 0


# -- ciml-cache-data -----------------------------------------------------------


def cache_data(argv=None):
    """``ciml-cache-data``: ``ciml cache-data`` from a subunit2sql database."""
    prog, args = "ciml-cache-data", _argv(argv)
    if _wants_help(args):
        return _print_help(
            prog, ["cache-data"],
            "Cache the runs of a job (build name) from a subunit2sql database, and their "
            "dstat files from the log server, in the raw cache. Running it again extends "
            "the cache with the runs it does not have yet.",
            original=(("--limit", "N", "At most N runs; 0, the original's default, means "
                       "no limit"),),
            defaults={"--build-name": "default: tempest-full, as in the original"},
            epilog="Example:\n\n  ciml-cache-data --build-name tempest-full --db-uri "
                   "mysql+pymysql://query:query@HOST/subunit2sql")
    try:
        front, rest = _common(prog, args)
    except _Refused as exc:
        return _fail(prog, str(exc))
    taken, rest = _take(rest, ("--limit",))
    limits = taken.get("--limit", [])
    if limits and limits[-1].strip() not in ("0", ""):
        rest += ["--limit", limits[-1]]
    extra = []
    if not any(a.split("=", 1)[0] == "--source" for a in rest):
        extra += ["--source", "subunit2sql"]
    if not any(a.split("=", 1)[0] == "--build-name" for a in rest):
        extra += ["--build-name", "tempest-full"]  # the original's default
    return _run(prog, front, ["cache-data"], extra + rest)


# -- ciml-build-dataset --------------------------------------------------------


def build_dataset(argv=None):
    """``ciml-build-dataset``: ``ciml build-dataset``, with the original's options.

    ``--force/--no-force`` and ``--visualize/--no-visualize`` keep their
    negative forms; ``--data-plots-folder`` is where ``--visualize`` writes;
    ``--target-data-path`` is the data path (there is one for raw data and
    datasets); a repeated ``--aggregation-functions`` (click's way) is one
    list.  ``--visualize`` on a dataset that exists, without ``--force``,
    draws its plots without rebuilding it.
    """
    prog, args = "ciml-build-dataset", _argv(argv)
    if _wants_help(args):
        return _print_help(
            prog, ["build-dataset"],
            "Build a normalized dataset, split into training, dev and test, from the "
            "cached runs of a job. With --visualize on a dataset that exists (and no "
            "--force), draw its plots (sizes_by_result.png, class balance, feature "
            "distributions) without rebuilding it.",
            original=(
                ("--target-data-path", "PATH", "Where datasets are stored: the data path, "
                 "which also holds the raw cache, so it must be the same as --data-path"),
                ("--data-plots-folder", "DIR", "Where --visualize writes its plots (the "
                 "same as --plot-dir; default <data path>/plots/datasets/<name>)"),
                ("--no-visualize", None, "The default: no plots"),
            ) + _FORCE_HELP,
            epilog="Example:\n\n  ciml-build-dataset --dataset tempest-usr --build-name "
                   "tempest-full --features-regex '(usr|used|1m)'")
    try:
        front, rest = _common(prog, args)
        functions, rest = _take_list(rest, "--aggregation-functions")
        taken, rest = _take(rest, ("--target-data-path", "--data-plots-folder",
                                   "--plot-dir", "--dataset"))
        for value in taken.get("--target-data-path", []):
            _check_scheme(value, "--target-data-path")
    except _Refused as exc:
        return _fail(prog, str(exc))
    target = (taken.get("--target-data-path") or [None])[-1]
    if target:
        if "--data-path" in front and front[front.index("--data-path") + 1] != target:
            return _fail(prog, "--data-path and --target-data-path must be the same folder: "
                         "it holds both the raw cache and the datasets")
        if "--data-path" not in front:
            front += ["--data-path", target]
    force, rest = _switch(rest, "force")
    visualize, rest = _switch(rest, "visualize")
    plots = (taken.get("--data-plots-folder", []) + taken.get("--plot-dir", []) or [None])[-1]
    name = (taken.get("--dataset") or ["dataset"])[-1]
    if visualize and not force and _dataset_exists(front, name):
        sys.stderr.write(f"{prog}: dataset {name!r} exists: drawing its plots without "
                         "rebuilding it (--force rebuilds it)\n")
        return _run(prog, front, ["dataset", "plot", name],
                    ["--output-dir", plots] if plots else [])
    out = ["--dataset", name] + rest
    if functions:
        out += ["--aggregation-functions", *functions]
    if force:
        out.append("--force")
    if visualize:
        out.append("--visualize")
    if plots:
        out += ["--plot-dir", plots]
    return _run(prog, front, ["build-dataset"], out + _original_shape(out))


def _original_shape(args):
    """The original's 5500 s examples and per-cell scaling, unless asked otherwise."""
    names = [a.split("=")[0] for a in args]
    if "--aggregation-functions" in names:
        return []  # aggregates have no time axis; they are scaled per cell anyway
    extra = [] if "--scale-per" in names else ["--scale-per", "cell"]
    if "--fixed-length" in names:
        return extra
    interval = None
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name == "--sample-interval":
            interval = value if eq else (args[i + 1] if i + 1 < len(args) else None)
    from ciml.base.normalizer import normalized_length

    try:
        length = normalized_length(interval)
    except CimlError:
        return extra  # build-dataset reports the bad interval itself
    return extra + ["--fixed-length", str(length)]


def _take_list(args, name):
    """All the values of a list option, however spelled, and the rest of ``args``.

    The original (click, ``multiple=True``) repeats the option for each
    value; ciml takes several words after one option.  Both, and a mix, give
    one list.
    """
    values, rest, taking = [], [], False
    for arg in args:
        option, eq, value = arg.partition("=")
        if option == name:
            taking = not eq
            if eq:
                values.append(value)
        elif taking and not arg.startswith("-"):
            values.append(arg)
        else:
            taking = False
            rest.append(arg)
    return values, rest


def _dataset_exists(front, name):
    try:
        return _root(front).dataset(name).exists()
    except Exception:  # a bad name: build-dataset says why
        return False


# -- ciml-setup-experiment / ciml-train-model ------------------------------------


def _seed_training_args(prog, argv):
    """The original's setup-experiment/train-model options, translated.

    Returns ``(global options, command options)``, or ``(None, None)``
    after saying why an option is refused.
    """
    try:
        front, rest = _common(prog, _argv(argv))
    except _Refused as exc:
        _fail(prog, str(exc))
        return None, None
    force, rest = _switch(rest, "force")
    taken, rest = _take(rest, ("--estimator",))
    out = list(rest)
    for value in taken.get("--estimator", [])[-1:]:
        out += ["--estimator", _SEED_ESTIMATORS.get(value, value)]
    if force:
        out.append("--force")
    return front, out


_TRAINING_HELP = (
    ("--estimator", "NAME", "tf.estimator.DNNClassifier is the dnn estimator, "
     "tf.contrib.learn.SVM, tf.estimator.LinearClassifier and svm are linear-svm"),
)


def setup_experiment(argv=None):
    """``ciml-setup-experiment``: ``ciml setup-experiment``, with the original's options."""
    prog, args = "ciml-setup-experiment", _argv(argv)
    if _wants_help(args):
        return _print_help(
            prog, ["setup-experiment"],
            "Define an experiment: an estimator with its parameters and hyper-parameters, "
            "stored by name. --dataset records the dataset it is meant for (each dataset "
            "can have several experiments); ciml-train-model then defaults to it.",
            original=_TRAINING_HELP + _FORCE_HELP,
            epilog="Example:\n\n  ciml-setup-experiment --dataset tempest-usr --experiment "
                   "dnn-3x10 \\\n    --estimator tf.estimator.DNNClassifier "
                   "--hidden-layers 10/10/10")
    front, out = _seed_training_args(prog, args)
    if out is None:
        return 2
    return _run(prog, front, ["setup-experiment"], out)


def train_model(argv=None):
    """``ciml-train-model``: ``ciml train-model``, with the original's options.

    An experiment set up for a dataset (``ciml-setup-experiment --dataset``)
    trains on it when ``--dataset`` is not given, and on no other, as in the
    original, where experiments lived inside their dataset.
    """
    prog, args = "ciml-train-model", _argv(argv)
    if _wants_help(args):
        return _print_help(
            prog, ["train-model"],
            "Train an experiment on a dataset: fit on the training split, evaluate on the "
            "test split beside a majority-class baseline, predict the dev split, and save "
            "the model with its TensorBoard logs. Without --dataset, the dataset the "
            "experiment was set up for.",
            defaults={"--dataset": "default: the dataset the experiment was set up for, "
                      "else 'dataset', as in the original"},
            epilog="Example:\n\n  ciml-train-model --dataset tempest-usr --experiment dnn-3x10")
    front, out = _seed_training_args(prog, args)
    if out is None:
        return 2
    taken, rest = _take(out, ("--dataset", "--experiment"))
    experiment = (taken.get("--experiment") or ["experiment"])[-1]
    dataset = (taken.get("--dataset") or [None])[-1]
    meant_for = _experiment_dataset(front, experiment)
    if meant_for and dataset and dataset != meant_for:
        return _fail(prog, f"experiment {experiment!r} was set up for dataset {meant_for!r}, "
                     f"not {dataset!r}; set it up for {dataset!r} under another name "
                     f"(ciml-setup-experiment --dataset {dataset} --experiment NAME ...), or "
                     f"train it anyway with ciml train-model --dataset {dataset} "
                     f"--experiment {experiment}")
    dataset = dataset or meant_for or "dataset"  # the original's default
    return _run(prog, front, ["train-model"],
                ["--dataset", dataset, "--experiment", experiment] + rest)


def _experiment_dataset(front, name):
    """The dataset an experiment was set up for, if it exists and names one."""
    from ciml.errors import CimlError
    from ciml.experiment import Experiment

    try:
        return Experiment.load(_root(front), name).dataset
    except CimlError:
        return None  # train-model says what is wrong with it


# -- ciml-plot-data ------------------------------------------------------------


def plot_data(argv=None):
    """``ciml-plot-data``: ``ciml model compare``."""
    prog, args = "ciml-plot-data", _argv(argv)
    if _wants_help(args):
        return _print_help(
            prog, ["model", "compare"],
            "Compare the trained models: one metric per chart, one bar per model.")
    return run_legacy(["model", "compare"], args, prog=prog)


# -- ciml-db-predict / ciml-mqtt-predict / ciml-mqtt-trainer ---------------------


def _seed_online_args(prog, argv):
    """Translate the original's predict/mqtt options into ``ciml predict``/``watch`` ones.

    ``--db-uri`` names the subunit2sql result source; ``--mqtt-hostname`` is
    ``--mqtt-host``; ``--sample-interval`` is the dataset's own (ignored, as
    the model must see examples made exactly as in training); ``--debug`` is
    the global option.  Returns ``(global options, command options)``.
    """
    args = _argv(argv)
    out, front = [], []  # front: global options, placed before the command
    has_source = any(a.split("=", 1)[0] == "--source" for a in args)
    it = iter(args)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name == "--debug":
            front.append("--debug")
        elif name == "--no-debug":
            continue
        elif name in ("--db-uri", "--mqtt-hostname", "--sample-interval"):
            value = value if eq else next(it, "")
            if name == "--db-uri":
                if not has_source:
                    out += ["--source", "subunit2sql"]
                out += ["--db-uri", value]
            elif name == "--mqtt-hostname":
                out += ["--mqtt-host", value]
            else:
                sys.stderr.write(f"{prog}: --sample-interval is ignored: the dataset's own "
                                 "sample interval is used\n")
        else:
            out.append(arg)
    return front, out


def _trained_datasets(root):
    folder = root.models
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if p.is_dir() and not p.name.startswith(".")
                  and any(m.is_dir() and not m.name.startswith(".") for m in p.iterdir()))


def _online(prog, argv, command, extra, summary, original, hidden=()):
    args = _argv(argv)
    if _wants_help(args):
        return _print_help(
            prog, command, summary, original=original + _ONLINE_HELP, hidden=hidden,
            defaults={"--dataset": "default: the only dataset with a trained model, else "
                      "'dataset', as in the original"},
            other_components=(("trigger", "mqtt"),) if "watch" in command else ())
    try:
        front, rest = _common(prog, args)
    except _Refused as exc:
        return _fail(prog, str(exc))
    more, out = _seed_online_args(prog, rest)
    front += more
    if not any(a.split("=", 1)[0] == "--dataset" for a in out):
        # The original's default was "dataset"; a data path with one trained
        # dataset means that one.
        trained = _trained_datasets(_root(front))
        if "dataset" in trained or not trained:
            name = "dataset"
        elif len(trained) == 1:
            name = trained[0]
        else:
            return _fail(prog, "several datasets have a trained model; choose one with "
                         "--dataset: " + ", ".join(trained))
        out = ["--dataset", name] + out
    return _run(prog, front, command, list(extra) + out)


def db_predict(argv=None):
    """``ciml-db-predict``: ``ciml predict``, with the original's options."""
    return _online(
        "ciml-db-predict", argv, ["predict"], [],
        "Predict the class of runs (build uuids or run ids), looked up in the raw cache "
        "and the subunit2sql database, with a trained model. Without --dataset, the only "
        "dataset with a trained model.", ())


def mqtt_predict(argv=None):
    """``ciml-mqtt-predict``: ``ciml watch --trigger mqtt``, with the original's options."""
    return _online(
        "ciml-mqtt-predict", argv, ["watch"], ["--trigger", "mqtt"],
        "Listen to an MQTT broker for finished runs (the firehose's gearman-subunit "
        "messages or Zuul's MQTT reporter) and predict each one with a trained model, one "
        "JSON line per run. Without --dataset, the only dataset with a trained model.",
        _MQTT_HELP, hidden=("--trigger",))


def mqtt_trainer(argv=None):
    """``ciml-mqtt-trainer``: ``ciml watch --trigger mqtt --learn``."""
    return _online(
        "ciml-mqtt-trainer", argv, ["watch"], ["--trigger", "mqtt", "--learn"],
        "Listen to an MQTT broker for finished runs, predict each one, and add the "
        "finished, labelled runs to the raw cache so that the next ciml-build-dataset "
        "learns from them. Without --dataset, the only dataset with a trained model.",
        _MQTT_HELP, hidden=("--trigger", "--learn"))
