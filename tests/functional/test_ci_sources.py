"""cache-data -> build-dataset -> train-model -> predict from GitHub Actions, GitLab CI, Jenkins.

Each system's fake server (:mod:`ciml.testing.forges`) serves a generated
history the way that system does (its REST API, paging, its artifacts: a
zip for GitHub and GitLab, plain files for Jenkins), with a token it
checks.  The whole pipeline runs through the real CLI, and nothing any
command prints holds the token.
"""

import json

import pytest

JOB = "tempest-full"
REGEX = "^(cpu_usr|cpu_sys|cpu_idl|mem_|load_1m)"
TOKEN = "s3cr3t-T0KEN-4-tests"


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    from ciml.generator import generate_history

    return generate_history(tmp_path_factory.mktemp("forge") / "hist", runs=40, seed=11,
                            jobs=(JOB, "grenade"), duration=(60, 120), tests=False,
                            bad_fraction=0.1)


def _github(history):
    from ciml.testing.forges import GitHubServer

    server = GitHubServer.from_history(history, token=TOKEN, enterprise=True)
    server.start()
    return server, ["--source", "github", "--github-url", server.api_url, "--repo", "octo/ci"], \
        {"CIML_GITHUB_TOKEN": TOKEN}


def _gitlab(history):
    from ciml.testing.forges import GitLabServer

    server = GitLabServer.from_history(history, token=TOKEN)
    server.start()
    return server, ["--source", "gitlab", "--gitlab-url", server.api_url, "--project",
                    "group/ci"], {"CIML_GITLAB_TOKEN": TOKEN}


def _jenkins(history):
    from ciml.testing.forges import JenkinsServer

    server = JenkinsServer.from_history(history, user="ciml-bot", token=TOKEN)
    server.start()
    return server, ["--source", "jenkins", "--jenkins-url", server.api_url], \
        {"CIML_JENKINS_USER": "ciml-bot", "CIML_JENKINS_TOKEN": TOKEN}


SYSTEMS = {"github": _github, "gitlab": _gitlab, "jenkins": _jenkins}


@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_the_whole_pipeline_from_a_ci_system(system, history, run_ciml, data_path, centroid):
    server, source_args, env = SYSTEMS[system](history)
    root = str(data_path.root)
    outputs = []

    def ciml(*args, ok=True):
        rc, out, err = run_ciml(["--data-path", root, *args], env=env)
        outputs.append(out + err)
        if ok:
            assert rc == 0, err
        return rc, out, err

    try:
        truth = [r for r in history.runs if r["build_name"] == JOB]
        # Newest first: the oldest runs stay out of the cache, for predict.
        keep = len(truth) - 3
        job = "ci/" + JOB if system == "jenkins" else JOB
        _, out, _ = ciml("cache-data", *source_args, "--build-name", job, "--limit",
                         str(keep), "--workers", "2", "--processes", "0", "-f", "json")
        summary = json.loads(out)
        assert summary["selected"] == keep
        broken = [r for r in sorted(truth, key=lambda r: r["start"], reverse=True)[:keep]
                  if r["defect"] is not None]
        assert summary["cached"] == keep - len(broken)
        assert summary["unavailable"] == len(broken) and summary["transient"] == 0

        ciml("build-dataset", "--dataset", system, "--build-name", job,
             "--sample-interval", "10s", "--features-regex", REGEX, "-f", "json")
        ciml("setup-experiment", "--experiment", "cent", "--estimator", "nearest-centroid")
        _, out, _ = ciml("train-model", "--dataset", system, "--experiment", "cent",
                         "--no-gpu", "-f", "json")
        assert "accuracy" in json.loads(out)

        # The oldest good run is not cached: predict finds it through the source
        # and reads its metrics from the system's artifacts.
        old = [r for r in sorted(truth, key=lambda r: r["start"])[:3] if r["defect"] is None]
        assert old, "the history has no good old run"
        _, out, _ = ciml("predict", "--dataset", system, *source_args,
                         _run_id(system, server, old[0]), "-f", "json")
        [row] = json.loads(out)
        assert row["predicted"] in ("passed", "failed")

        # The poll trigger watches the system through the same source.
        # The APIs give times to the second (Jenkins: the millisecond).
        newest = max(r["start"] for r in truth if r["defect"] is None).replace(microsecond=0)
        _, out, err = ciml("watch", "--dataset", system, "--trigger", "poll", *source_args,
                         "--build-name", job, "--once", "--status-interval", "0",
                         "--since", newest.isoformat())
        assert out.strip(), err
        [line] = out.splitlines()
        assert json.loads(line)["predicted"] in ("passed", "failed")

        # An expired token: a clear error, and nothing recorded as unavailable.
        rc, out, err = run_ciml(["--data-path", root, "cache-data", *source_args,
                                 "--build-name", job],
                                env={**env, **{k: "expired-token" for k in env
                                               if k.endswith("TOKEN")}})
        outputs.append(out + err)
        assert rc != 0 and "credentials" in err and "expired" in err, err
        _, out, _ = ciml("cache-data", *source_args, "--build-name", job, "-f", "json")
        again = json.loads(out)
        oldest = sorted(truth, key=lambda r: r["start"])[:len(truth) - keep]
        assert again["total_unavailable"] == summary["total_unavailable"] + sum(
            r["defect"] is not None for r in oldest)
        assert again["total_cached"] + again["total_unavailable"] == len(truth)
    finally:
        server.stop()
    for text in outputs:
        assert TOKEN not in text


def _run_id(system, server, run):
    """The id the system's source gives a generated run."""
    stamp = run["start"].strftime("%Y-%m-%dT%H:%M:%SZ")
    if system == "gitlab":
        for job in server.jobs:
            if job["name"] == JOB and job["started_at"] == stamp:
                return str(job["id"])
    if system == "jenkins":
        for build in server.jobs[JOB]:
            if build["timestamp"] == int(run["start"].timestamp() * 1000):
                return f"ci/{JOB}#{build['number']}"
    if system == "github":
        for jobs in server.jobs.values():
            for job in jobs:
                if job["name"] == JOB and job["started_at"] == run["start"].strftime(
                        "%Y-%m-%dT%H:%M:%SZ"):
                    return str(job["id"])
    raise KeyError(run["run_id"])


def test_a_refused_log_is_tried_again_not_recorded_missing(history, run_ciml, data_path):
    """A 401/403 from the log server is an expired credential, not a fact about the run."""
    from ciml.testing.servers import CIServer

    good = [r for r in history.runs if r["build_name"] == JOB and r["defect"] is None]
    with_file = [r for r in history.runs if r["build_name"] == JOB and r["dstat_path"]]
    with CIServer(root=history.logs_dir.parent.parent, builds=history.zuul_builds) as server:
        # The generated log URLs are file:// ones: serve them over HTTP instead.
        for build in server.builds:
            if build.get("log_url"):
                build["log_url"] = server.url + build["log_url"].split(
                    str(history.logs_dir.parent.parent.resolve()) + "/", 1)[1]
        args = ["--data-path", str(data_path.root), "cache-data", "--source", "zuul",
                "--zuul-url", server.zuul_url, "--tenant", "openstack", "--build-name", JOB,
                "--inventory-path", "", "--retries", "0", "--processes", "0", "-f", "json"]
        server.fault("*/dstat-csv_log.txt*", status=401)
        rc, out, err = run_ciml(args)
        assert rc == 0, err
        first = json.loads(out)
        # Every fetch was refused: nothing is recorded, everything is retried.
        assert first["cached"] == first["unavailable"] == 0
        assert first["transient"] == first["selected"] >= len(with_file)
        assert first["reasons"] == {"auth": first["selected"]}
        server.clear_faults()
        rc, out, err = run_ciml(args)
        assert rc == 0, err
        assert json.loads(out)["cached"] == len(good)
