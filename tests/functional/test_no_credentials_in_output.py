"""No credential ever reaches output: every command, run with credential-bearing URLs and tokens.

Credentials come in URLs (``http://user:password@host``: the Zuul web root,
the log server, a GitHub Enterprise or Jenkins root) and as tokens
(options or environment variables).  Each command below runs with
``-v --debug`` (log messages and tracebacks included), on the happy path
and on the failing ones (a refused token, a server error, a server that is
not there), and everything it prints is scanned.
"""

import json
import socket

from ciml.testing.servers import CIServer

SECRETS = ("ZuulPw-SEKRIT", "LogPw-SEKRIT", "ApiTok-SEKRIT", "GhTok-SEKRIT", "GhPw-SEKRIT",
           "GlTok-SEKRIT", "JkTok-SEKRIT")
JOB = "tempest-full"


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_every_command_keeps_credentials_out_of_its_output(tmp_path, data_path, run_ciml,
                                                           centroid):
    from ciml.generator import generate_history

    root = tmp_path / "logs-root"
    root.mkdir()
    outputs = []
    base = ["--data-path", str(data_path.root), "-v", "--debug"]

    def ciml(*args, ok=True, env=None):
        rc, out, err = run_ciml([*base, *args], env=env)
        outputs.append((args, out + err))
        if ok is True:
            assert rc == 0, err
        elif ok is False:
            assert rc != 0, out
        return rc, out, err

    with CIServer(root=root, token="ApiTok-SEKRIT") as server:
        # The log server needs basic auth: its URLs carry the credentials.
        logs = server.url.replace("http://", "http://logs:LogPw-SEKRIT@")
        history = generate_history(root / "hist", runs=24, seed=2, jobs=(JOB,),
                                   duration=(60, 90), tests=False, base_url=logs + "hist/logs",
                                   bad_fraction=0.1)
        server.builds = json.loads(history.zuul_builds.read_text())
        zuul_url = server.zuul_url.replace("http://", "http://zuul:ZuulPw-SEKRIT@")
        zuul = ["--source", "zuul", "--zuul-url", zuul_url, "--tenant", "openstack",
                "--backoff", "0", "--retries", "1"]
        newest = sorted(history.runs, key=lambda r: r["start"])[-1]

        # cache-data: the happy path, with the token as an option, then faults.
        ciml("cache-data", *zuul, "--api-token", "ApiTok-SEKRIT", "--build-name", JOB,
             "--until", newest["start"].isoformat(), "--workers", "2", "--processes", "0")
        ciml("cache-data", *zuul, "--api-token", "wrong-ApiTok-SEKRIT", "--build-name", JOB,
             ok=False)
        server.fault("*/dstat-csv_log.txt*", status=500)
        server.fault("*/inventory.yaml", status=401)
        ciml("cache-data", *zuul, "--build-name", JOB, "--retry-unavailable",
             env={"CIML_ZUUL_API_TOKEN": "ApiTok-SEKRIT"})
        server.clear_faults()
        gone = f"http://zuul:ZuulPw-SEKRIT@127.0.0.1:{_closed_port()}"
        ciml("cache-data", "--source", "zuul", "--zuul-url", gone, "--tenant", "t",
             "--retries", "0", "--build-name", JOB, ok=False)

        # What was cached, shown.
        _, out, _ = ciml("run", "list", "--build-name", JOB, "-f", "json")
        cached = [r["id"] for r in json.loads(out)]
        ciml("run", "show", cached[0])
        ciml("run", "list", "--unavailable", ok=None)
        ciml("plugin", "show", "result_source", "zuul")

        # Train, then predict a run that is not cached through the source.
        ciml("build-dataset", "--dataset", "d", "--build-name", JOB, "--sample-interval",
             "10s", "--features-regex", "^(cpu_|mem_)")
        ciml("setup-experiment", "--experiment", "c", "--estimator", "nearest-centroid")
        ciml("train-model", "--dataset", "d", "--experiment", "c", "--no-gpu")
        env = {"CIML_ZUUL_API_TOKEN": "ApiTok-SEKRIT"}
        ciml("predict", "--dataset", "d", *zuul, newest["build_uuid"], "-f", "json", env=env)
        ciml("predict", "--dataset", "d", *zuul, "no-such-build", ok=False, env=env)
        server.fault("*/dstat-csv_log.txt*", status=403)
        ciml("predict", "--dataset", "d", *zuul, newest["build_uuid"], ok=None, env=env)
        server.clear_faults()
        _, out, _ = ciml("watch", "--dataset", "d", "--trigger", "poll", *zuul, "--build-name",
                         JOB, "--once", "--status-interval", "0", "--since",
                         newest["start"].replace(microsecond=0).isoformat(), env=env)
        assert json.loads(out.splitlines()[0])["artifacts_url"].startswith("http://127.0.0.1")

    # The REST sources: tokens from the environment, credentials in their URLs.
    from ciml.testing.forges import GitHubServer, GitLabServer, JenkinsServer

    with GitHubServer.from_history(history, token="GhTok-SEKRIT", enterprise=True) as gh:
        url = gh.api_url.replace("http://", "http://octo:GhPw-SEKRIT@")
        for token in ("GhTok-SEKRIT", "expired-GhTok-SEKRIT"):
            ciml("cache-data", "--source", "github", "--github-url", url, "--repo", "octo/ci",
                 "--build-name", JOB, "--limit", "3", "--processes", "0", ok=None,
                 env={"CIML_GITHUB_TOKEN": token})
        gh.fault("*/artifacts/*", status=502)
        ciml("cache-data", "--source", "github", "--github-url", url, "--repo", "octo/ci",
             "--build-name", JOB, "--retries", "0", "--retry-unavailable", ok=None,
             env={"CIML_GITHUB_TOKEN": "GhTok-SEKRIT"})
    with GitLabServer.from_history(history, token="GlTok-SEKRIT") as gl:
        for token in ("GlTok-SEKRIT", "bad-GlTok-SEKRIT"):
            ciml("cache-data", "--source", "gitlab", "--gitlab-url", gl.api_url, "--project",
                 "group/ci", "--gitlab-token", token, "--build-name", JOB, "--limit", "3",
                 "--processes", "0", ok=None)
    with JenkinsServer.from_history(history, user="bot", token="JkTok-SEKRIT") as jk:
        url = jk.api_url.replace("http://", "http://bot:JkTok-SEKRIT@")
        ciml("cache-data", "--source", "jenkins", "--jenkins-url", url, "--build-name",
             f"ci/{JOB}", "--limit", "3", "--processes", "0")
        ciml("cache-data", "--source", "jenkins", "--jenkins-url", jk.api_url,
             "--jenkins-user", "bot", "--jenkins-token", "old-JkTok-SEKRIT",
             "--build-name", f"ci/{JOB}", ok=False)

    assert len(outputs) >= 20
    for args, text in outputs:
        for secret in SECRETS:
            where = text.find(secret)
            assert where < 0, (f"{secret} printed by ciml {' '.join(args)}: "
                               f"...{text[max(0, where - 300):where + 100]}...")
