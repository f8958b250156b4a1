"""The original ciml's console scripts, kept so that old scripts keep working.

Each one runs the matching ``ciml`` command.  Options the original took that
are now global (``--data-path``) are moved in front of the command.
"""

import sys

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
    """``ciml-build-dataset``: ``ciml build-dataset``."""
    return run_legacy(["build-dataset"], argv)


def setup_experiment(argv=None):
    """``ciml-setup-experiment``: ``ciml setup-experiment``."""
    return run_legacy(["setup-experiment"], argv)


def train_model(argv=None):
    """``ciml-train-model``: ``ciml train-model``."""
    return run_legacy(["train-model"], argv)


def plot_data(argv=None):
    """``ciml-plot-data``: ``ciml model compare``."""
    return run_legacy(["model", "compare"], argv)


def db_predict(argv=None):
    """``ciml-db-predict``: ``ciml predict``."""
    return run_legacy(["predict"], argv)


def mqtt_predict(argv=None):
    """``ciml-mqtt-predict``: ``ciml watch --trigger mqtt``."""
    return run_legacy(["watch"], argv, ["--trigger", "mqtt"])


def mqtt_trainer(argv=None):
    """``ciml-mqtt-trainer``: ``ciml watch --trigger mqtt --learn``."""
    return run_legacy(["watch"], argv, ["--trigger", "mqtt", "--learn"])
