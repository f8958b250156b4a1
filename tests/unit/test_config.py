"""The configuration file: where it is found, typed settings per plugin, secrets never shown."""

import json

import pytest

from ciml.base import Secret, Settings, bounded_int, parse_bool, positive_float, settings
from ciml.base.config import MASK, Config, current, use
from ciml.errors import ConfigError

TOML = """
[store]
uri = "mysql+pymysql://ciml:hunter2@db.example.org/ciml"
retention = "90d"

[gerrit]
url = "https://review.example.org"
min_confidence = 0.9
dry_run = "yes"
jobs = ["tempest-full", "nova-live"]
timeout = 30
api_token = "tok-123"

[ciml-foo]
depth = 70
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "ciml.toml"
    path.write_text(TOML)
    return path


@pytest.fixture
def restore():
    previous = current()
    yield
    use(previous)


def test_typed_settings_per_plugin(config_file, restore):
    use(Config.load(config_file))
    conf = settings("gerrit")
    assert conf.get("url") == "https://review.example.org"
    assert conf.get("min_confidence", positive_float) == 0.9
    assert conf.get("dry_run", parse_bool) is True
    assert conf.get("jobs", list) == ["tempest-full", "nova-live"]
    assert conf.get("timeout", float) == 30.0
    assert conf.get("missing", int, 5) == 5
    assert "url" in conf and len(conf) == 6
    # A table nobody wrote is empty, and answers with defaults.
    assert not settings("nothing") and settings("nothing").get("x", int, 3) == 3


def test_wrong_values_name_the_file_the_table_and_the_key(config_file):
    conf = Config.load(config_file).section("ciml-foo")
    with pytest.raises(ConfigError) as info:
        conf.get("depth", bounded_int(1, 64))
    assert str(config_file) in str(info.value) and "[ciml-foo] depth" in str(info.value)
    with pytest.raises(ConfigError, match=r"\[ciml-foo\] width is not set"):
        conf.get("width", int, required=True)
    gerrit = Config.load(config_file).section("gerrit")
    with pytest.raises(ConfigError, match="expected an integer"):
        Settings("x", {"n": True}).get("n", int)
    with pytest.raises(ConfigError, match=r"\[gerrit\] url"):
        gerrit.get("url", float)


def test_secrets_are_masked_wherever_they_are_printed(config_file):
    config = Config.load(config_file)
    gerrit = config.section("gerrit")
    token = gerrit.get("api_token", str, secret=True)
    assert isinstance(token, Secret) and token.reveal() == "tok-123"
    assert str(token) == MASK and "tok-123" not in repr(token) and "tok-123" not in f"{token}"
    # Masked by its name in dumps even when nobody asked for it as a secret.
    dump = json.dumps(config.as_dict())
    assert "tok-123" not in dump and "hunter2" not in dump
    assert "tok-123" not in repr(gerrit)
    assert config.as_dict()["store"]["retention"] == "90d"
    # A bad secret value is refused without showing it.
    with pytest.raises(ConfigError) as info:
        gerrit.get("api_token", int, secret=True)
    assert "tok-123" not in str(info.value)


def test_where_the_file_is_found(tmp_path, config_file, monkeypatch):
    monkeypatch.delenv("CIML_CONFIG", raising=False)
    # In the data path, optional.
    assert Config.load(data_path=tmp_path).path == config_file
    assert Config.load(data_path=tmp_path / "elsewhere").path is None
    assert Config.load().path is None
    # Named, it must exist.
    with pytest.raises(ConfigError, match="does not exist.*--config"):
        Config.load(tmp_path / "missing.toml")
    monkeypatch.setenv("CIML_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=r"\$CIML_CONFIG"):
        Config.load(data_path=tmp_path)
    monkeypatch.setenv("CIML_CONFIG", str(config_file))
    assert Config.load(data_path=tmp_path / "elsewhere").path == config_file


@pytest.mark.parametrize("text,match", [
    ("[gerrit\nurl = 1\n", "not valid TOML"),
    ('url = "https://x"\n[gerrit]\n', "url outside a table"),
    (b"\xff\xfe[x]".decode("latin-1"), "not valid TOML|cannot read"),
])
def test_a_broken_file_is_a_clear_error(tmp_path, text, match):
    path = tmp_path / "ciml.toml"
    path.write_text(text, encoding="latin-1")
    with pytest.raises(ConfigError, match=match) as info:
        Config.load(path)
    assert str(path) in str(info.value)


def test_the_cli_reads_config_and_shows_it_masked(run_ciml, config_file, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rc, out, err = run_ciml(["--data-path", data, "--config", config_file, "config", "show",
                             "-f", "json"])
    assert rc == 0, err
    shown = json.loads(out)
    assert shown["file"] == str(config_file)
    assert shown["gerrit"]["api_token"] == MASK
    assert "hunter2" not in out and "tok-123" not in out
    # The data path's own file, found without --config.
    (data / "ciml.toml").write_text('[gerrit]\nurl = "https://other"\n')
    rc, out, err = run_ciml(["--data-path", data, "config", "show", "-f", "json"],
                            env={"CIML_CONFIG": None})
    assert json.loads(out)["gerrit"] == {"url": "https://other"}


def test_a_broken_config_file_fails_the_command_with_its_name(run_ciml, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[store\n")
    rc, out, err = run_ciml(["--data-path", tmp_path, "--config", bad, "prediction", "list"])
    assert rc != 0 and f"configuration file {bad} is not valid TOML" in err


def test_the_store_uri_comes_from_the_config_file_and_is_never_shown(run_ciml, tmp_path,
                                                                      mariadb_url):
    config = tmp_path / "ciml.toml"
    # The test database has no password: a fake one only shows it is masked.
    config.write_text(f'[store]\nuri = "{mariadb_url}"\nretention = "30d"\n')
    rc, out, err = run_ciml(["--data-path", tmp_path, "--config", config, "prediction",
                             "stats", "-f", "json"], env={"CIML_STORE_URI": None})
    assert rc == 0, err
    stats = json.loads(out)
    from ciml.http import redact_url

    assert stats["store"] == redact_url(mariadb_url) and stats["retention"] == "30d"
    assert not (tmp_path / "predictions.sqlite").exists()
    rc, out, err = run_ciml(["--data-path", tmp_path, "prediction", "stats", "-f", "json"],
                            env={"CIML_STORE_URI": "mysql+pymysql://u:pw-xyz@127.0.0.1:1/x"})
    assert rc != 0 and "pw-xyz" not in out + err and "127.0.0.1:1/x" in err


def test_a_command_s_config_does_not_outlive_it(run_ciml, config_file, tmp_path, restore):
    use(Config())
    rc, out, err = run_ciml(["--data-path", tmp_path, "--config", config_file, "config",
                             "show"])
    assert rc == 0, err
    assert current().path is None and not settings("gerrit")
