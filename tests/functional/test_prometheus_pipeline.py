"""cache-data from GitHub Actions jobs with their runners' metrics in Prometheus, by the CLI.

The github source reads the jobs from the fake GitHub API, the prometheus
source each job's runner from the Prometheus-API test server: unknown
nodes and bad answers are recorded with their reason, transient failures
(a refused token) are not, and no output holds a token.
"""

import json

import pytest

JOB = "tempest-full"
TOKEN = "pr0m-T0KEN-for-tests"


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    from ciml.generator import generate_history

    return generate_history(tmp_path_factory.mktemp("gh-prom") / "hist", runs=36, seed=5,
                            jobs=(JOB,), duration=(120, 240), tests=False, bad_fraction=0.2,
                            prometheus=True)


@pytest.fixture
def servers(history):
    from ciml.testing.forges import GitHubServer
    from ciml.testing.prometheus import PrometheusServer

    with GitHubServer.from_history(history) as github, \
            PrometheusServer.from_history(history, token=TOKEN) as prometheus:
        yield github, prometheus


def _cache(run_ciml, data_path, github, prometheus, env=None, *extra):
    argv = ["--data-path", str(data_path.root), "cache-data", "--source", "github",
            "--github-url", github.api_url, "--repo", "octo/ci", "--build-name", JOB,
            "--metric-source", "prometheus", "--prometheus-url", prometheus.url,
            "--retries", "0", "-f", "json", *extra]
    return run_ciml(argv, env=env)


def test_cache_data_records_unknown_nodes_and_keeps_answers(run_ciml, data_path, servers,
                                                            history):
    from ciml.cache import RawCache

    github, prometheus = servers
    rc, out, err = _cache(run_ciml, data_path, github, prometheus,
                          {"CIML_PROMETHEUS_TOKEN": TOKEN})
    assert rc == 0, err
    summary = json.loads(out)
    missing = [r for r in history.runs if r["defect"] == "missing"]
    assert missing, "the history should hold runs Prometheus never knew"
    assert summary["unavailable"] == len(missing)
    assert summary["reasons"] == {"unknown-node": len(missing)}
    assert summary["cached"] == len(history.runs) - len(missing)
    with RawCache(data_path) as cache:
        run = cache.runs(JOB)[0]
        assert cache.info(run.id)["fetched_name"] == "prometheus.json"
        assert cache.raw_file(run.id).name.startswith("prometheus.json")
        assert cache.fetched_content(run.id)[:1] in (b"{", b"[")
        assert {"cpu_usr", "mem_used", "net_recv"} <= set(cache.frame(run.id).columns)
    assert TOKEN not in out + err
    assert all(a == f"Bearer {TOKEN}" for a in prometheus.authorizations)


def test_refused_token_is_transient_and_never_shown(run_ciml, data_path, servers):
    github, prometheus = servers
    rc, out, err = _cache(run_ciml, data_path, github, prometheus,
                          {"CIML_PROMETHEUS_TOKEN": "an-0ld-t0ken"})
    summary = json.loads(out)
    # Nothing recorded: the runs are fetched again once the token is fixed.
    assert summary["cached"] == 0 and summary["unavailable"] == 0
    assert summary["transient"] == summary["selected"] > 0
    assert summary["reasons"] == {"auth": summary["selected"]}
    assert "an-0ld-t0ken" not in out + err
    rc, out, err = run_ciml(["--data-path", str(data_path.root), "run", "list",
                             "--unavailable", "-f", "json"])
    assert json.loads(out) == []


def test_html_answers_are_recorded(run_ciml, data_path, servers):
    github, prometheus = servers
    prometheus.fault(html=True)
    rc, out, err = _cache(run_ciml, data_path, github, prometheus,
                          {"CIML_PROMETHEUS_TOKEN": TOKEN}, "--limit", "3")
    summary = json.loads(out)
    assert summary["unavailable"] == 3 and summary["reasons"] == {"html": 3}
    rc, out, err = run_ciml(["--data-path", str(data_path.root), "run", "list",
                             "--unavailable", "-f", "json"])
    recorded = json.loads(out)
    assert len(recorded) == 3
    assert all("HTML page" in json.dumps(r) for r in recorded)
