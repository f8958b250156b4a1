"""The original ciml's console scripts, kept so that old scripts keep working.

Each one runs the matching ``ciml`` command.  Options the original took that
are now global (``--data-path``) are moved in front of the command.
"""

import sys

from ciml.errors import CimlError
from ciml.shell import main

_GLOBAL_WITH_VALUE = ("--data-path",)


def run_legacy(command, argv=None, extra=()):
    """Run ``ciml <command...> <argv>`` with global options hoisted."""
    argv = list(sys.argv[1:] if argv is None else argv)
    globals_, rest = [], []
    it = iter(argv)
    for arg in it:
        name = arg.split("=", 1)[0]
        if name in _GLOBAL_WITH_VALUE:
            globals_.append(arg)
            if "=" not in arg:
                globals_.append(next(it, ""))
        else:
            rest.append(arg)
    return main(globals_ + list(command) + list(extra) + rest)


def cache_data(argv=None):
    """``ciml-cache-data``: ``ciml cache-data`` (subunit2sql source by default)."""
    args = list(sys.argv[1:] if argv is None else argv)
    extra = [] if any(a.split("=")[0] == "--source" for a in args) else ["--source", "subunit2sql"]
    return run_legacy(["cache-data"], args, extra)


def build_dataset(argv=None):
    """``ciml-build-dataset``: ``ciml build-dataset``, with the original's options.

    ``--force/--no-force`` and ``--visualize/--no-visualize`` keep their
    negative forms; ``--data-plots-folder`` is where ``--visualize`` writes;
    ``--target-data-path`` is the data path (there is one for raw data and
    datasets); S3 storage is gone.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    out, data_path, target = [], None, None
    it = iter(args)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name in ("--no-force", "--no-visualize"):
            continue
        if name in ("--data-path", "--target-data-path", "--data-plots-folder",
                    "--s3-profile", "--s3-url"):
            value = value if eq else next(it, "")
            if name == "--data-path":
                data_path = value
            elif name == "--target-data-path":
                target = value
            elif name == "--data-plots-folder":
                out += ["--plot-dir", value]
            elif name == "--s3-profile" or not value.startswith("https://s3.eu-geo"):
                # --s3-url had a default in the original; only a chosen one matters.
                sys.stderr.write(f"ciml-build-dataset: {name} is not supported: datasets "
                                 "are stored under the local data path\n")
                return 2
            continue
        out.append(arg)
    if data_path and target and data_path != target:
        sys.stderr.write("ciml-build-dataset: --data-path and --target-data-path must be "
                         "the same folder: it holds both the raw cache and the datasets\n")
        return 2
    if data_path or target:
        out = ["--data-path", data_path or target] + out
    return run_legacy(["build-dataset"], out, _original_shape(out))


def _original_shape(args):
    """The original's 5500 s examples and per-cell scaling, unless asked otherwise."""
    names = [a.split("=")[0] for a in args]
    extra = [] if "--scale-per" in names else ["--scale-per", "cell"]
    if "--fixed-length" in names or "--aggregation-functions" in names:
        return extra
    interval = None
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name == "--sample-interval":
            interval = value if eq else (args[i + 1] if i + 1 < len(args) else None)
    from ciml_plugins.normalizers.builtin import normalized_length

    try:
        length = normalized_length(interval)
    except CimlError:
        return extra  # build-dataset reports the bad interval itself
    return extra + ["--fixed-length", str(length)]


#: The original's ``--estimator`` values (TensorFlow 1 class names) to plugin names.
_SEED_ESTIMATORS = {
    "tf.estimator.DNNClassifier": "dnn",
    "tf.estimator.LinearClassifier": "linear-svm",
    "svm": "linear-svm",
    "SVM": "linear-svm",
}


def _seed_training_args(prog, argv):
    """The original's setup-experiment/train-model options, translated.

    ``--no-force``/``--no-debug`` were defaults; ``--debug`` is the global
    option; S3 storage is gone (the data path is local); TensorFlow 1
    estimator class names become plugin names.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    out, front = [], []
    it = iter(args)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name in ("--no-force", "--no-debug"):
            continue
        if name == "--debug":
            front.append("--debug")
        elif name in ("--s3-profile", "--s3-url"):
            value = value if eq else next(it, "")
            if name == "--s3-profile" or not value.startswith("https://s3.eu-geo"):
                sys.stderr.write(f"{prog}: {name} is not supported: experiments and "
                                 "models are stored under the local data path\n")
                return None, None
        elif name == "--estimator":
            value = value if eq else next(it, "")
            out += ["--estimator", _SEED_ESTIMATORS.get(value, value)]
        else:
            out.append(arg)
    return front, out


def setup_experiment(argv=None):
    """``ciml-setup-experiment``: ``ciml setup-experiment``, with the original's options."""
    front, args = _seed_training_args("ciml-setup-experiment", argv)
    if args is None:
        return 2
    return run_legacy(front + ["setup-experiment"], args)


def train_model(argv=None):
    """``ciml-train-model``: ``ciml train-model``, with the original's options."""
    front, args = _seed_training_args("ciml-train-model", argv)
    if args is None:
        return 2
    return run_legacy(front + ["train-model"], args)


def plot_data(argv=None):
    """``ciml-plot-data``: ``ciml model compare``."""
    return run_legacy(["model", "compare"], argv)


def _seed_online_args(prog, argv):
    """Translate the original's predict/mqtt options into ``ciml predict``/``watch`` ones.

    ``--db-uri`` names the subunit2sql result source; ``--mqtt-hostname`` is
    ``--mqtt-host``; ``--sample-interval`` is the dataset's own (ignored, as
    the model must see examples made exactly as in training); ``--debug`` is
    the global option.
    """
    args = list(sys.argv[1:] if argv is None else argv)
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


def db_predict(argv=None):
    """``ciml-db-predict``: ``ciml predict``, with the original's options."""
    front, args = _seed_online_args("ciml-db-predict", argv)
    return run_legacy(front + ["predict"], args)


def mqtt_predict(argv=None):
    """``ciml-mqtt-predict``: ``ciml watch --trigger mqtt``, with the original's options."""
    front, args = _seed_online_args("ciml-mqtt-predict", argv)
    return run_legacy(front + ["watch"], args, ["--trigger", "mqtt"])


def mqtt_trainer(argv=None):
    """``ciml-mqtt-trainer``: ``ciml watch --trigger mqtt --learn``."""
    front, args = _seed_online_args("ciml-mqtt-trainer", argv)
    return run_legacy(front + ["watch"], args, ["--trigger", "mqtt", "--learn"])
