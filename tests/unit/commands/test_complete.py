"""``ciml complete`` and bare ``ciml``: what a user meets at the prompt."""

import shutil
import subprocess

import pytest

from ciml.testing import make_dataset


def test_bare_ciml_prints_the_help_and_no_interactive_shell(run_ciml):
    rc, out, err = run_ciml([], stdin="dataset list\n")
    assert rc == 0
    assert out.startswith("usage: ciml") and "Commands:" in out and "train-model" in out
    assert "(ciml)" not in out  # cliff's interactive prompt


@pytest.fixture
def completion(run_ciml, data_path):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    make_dataset(data_path, "cause-5", n=30)
    make_dataset(data_path, "status", n=30)
    (data_path.experiments).mkdir(parents=True, exist_ok=True)
    (data_path.experiments / "dnn-small.json").write_text("{}")
    rc, script, err = run_ciml(["complete"])
    assert rc == 0, err
    assert "_get_comp_words_by_ref" not in script  # bash alone is enough

    def complete(*words, env=None):
        line = " ".join(f"'{w}'" for w in words)
        probe = (script + f"\nCOMP_WORDS=(ciml {line}); COMP_CWORD={len(words)}; _ciml; "
                 'printf "%s\\n" "${COMPREPLY[@]}"\n')
        done = subprocess.run([bash, "--norc", "--noprofile"], input=probe, text=True,
                              capture_output=True, timeout=30, env=env)
        assert done.returncode == 0 and not done.stderr, done.stderr
        return done.stdout.split()

    complete.root = str(data_path.root)
    return complete


def test_completes_commands_options_and_plugin_names(completion):
    assert completion("data") == ["dataset"]
    assert completion("dataset", "") == ["delete", "list", "plot", "show"]
    assert "--sample-interval" in completion("build-dataset", "--sa")
    estimators = ["cnn", "dnn", "gbdt", "linear-svm"]
    assert completion("setup-experiment", "--estimator", "") == estimators
    assert completion("watch", "--trigger", "") == ["mqtt", "poll"]
    assert "estimator" in completion("plugin", "show", "")
    assert completion("plugin", "show", "estimator", "") == estimators
    assert completion("plugin", "list", "--kind", "tr") == ["trigger"]


def test_completes_dataset_and_experiment_names_from_the_data_path(completion):
    root = completion.root
    assert completion("--data-path", root, "dataset", "show", "") == ["cause-5", "status"]
    assert completion("--data-path", root, "model", "show", "--dataset", "st") == ["status"]
    assert completion("--data-path", root, "train-model", "--experiment", "") == [
        "dnn-small"]
    assert completion("--data-path", root, "experiment", "delete", "d") == ["dnn-small"]
    # $CIML_DATA_PATH when --data-path is not on the line.
    assert completion("dataset", "plot", "c", env={"CIML_DATA_PATH": root,
                                                   "PATH": "/usr/bin:/bin"}) == ["cause-5"]


def test_no_file_names_where_a_name_is_expected(completion, tmp_path):
    root = completion.root
    assert completion("--data-path", root, "model", "show", "--split", "") == []
    assert completion("--data-path", root, "dataset", "show", "cause-5", "") == []
    # After an option that takes a path, paths.
    assert root in completion("--data-path", root[:-3])
