"""Benchmark ``cache-data`` from each CI system's fake server: runs/s and requests per run.

Usage::

    python benchmarks/bench_ci_sources.py                  # 200 runs, 20 ms a request
    python benchmarks/bench_ci_sources.py --runs 500 --latency 0.05 --workers 16

One generated history (one job, 10-30 minute dstat files) is served four
ways: as Zuul builds with a log tree (the dstat source tries its paths
under the log URL), as GitHub Actions jobs with zip artifacts (a 302 to a
storage URL each), as GitLab CI jobs with zip artifacts, and as Jenkins
builds with archived files.  Each system's ``cache_data`` runs in this
process on an empty data path with ``--processes 0`` (the fetch path is
what differs between the systems, not the parse), and reports runs/s, the
server requests per cached run (listing included) and the latency-bound
limit ``workers / (latency x fetch requests per run)``.
"""

import argparse
import pathlib
import sys
import tempfile
import time

JOB = "tempest-full"


def _zuul(history, latency):
    import json

    from ciml.testing.servers import CIServer

    root = history.logs_dir.parent.parent
    server = CIServer(root=root, builds=history.zuul_builds, latency=latency).start()
    prefix = str(root.resolve()) + "/"
    builds = json.loads(history.zuul_builds.read_text())
    for build in builds:
        if build.get("log_url"):
            build["log_url"] = server.url + build["log_url"].split(prefix, 1)[1]
    server.builds = builds
    from ciml_plugins.sources.zuul import ZuulResultSource

    return server, ZuulResultSource(zuul_url=server.zuul_url, tenant="openstack",
                                    inventory_path=""), JOB


def _github(history, latency):
    from ciml.testing.forges import GitHubServer
    from ciml_plugins.sources.github import GitHubResultSource

    server = GitHubServer.from_history(history, token="t", latency=latency).start()
    return server, GitHubResultSource(github_url=server.api_url, repo="octo/ci",
                                      github_token="t"), JOB


def _gitlab(history, latency):
    from ciml.testing.forges import GitLabServer
    from ciml_plugins.sources.gitlab import GitLabResultSource

    server = GitLabServer.from_history(history, token="t", latency=latency).start()
    return server, GitLabResultSource(gitlab_url=server.api_url, project="group/ci",
                                      gitlab_token="t"), JOB


def _jenkins(history, latency):
    from ciml.testing.forges import JenkinsServer
    from ciml_plugins.sources.jenkins import JenkinsResultSource

    server = JenkinsServer.from_history(history, user="u", token="t", latency=latency).start()
    return server, JenkinsResultSource(jenkins_url=server.api_url, jenkins_user="u",
                                       jenkins_token="t"), "ci/" + JOB


SYSTEMS = {"zuul": _zuul, "github": _github, "gitlab": _gitlab, "jenkins": _jenkins}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    args = parser.parse_args(argv)

    from ciml.collect import cache_data
    from ciml.generator import generate_history
    from ciml.paths import DataPath
    from ciml_plugins.metrics.dstat import DstatMetricSource

    with tempfile.TemporaryDirectory(prefix="ciml-bench-ci-") as tmp:
        tmp = pathlib.Path(tmp)
        history = generate_history(tmp / "hist", runs=args.runs, seed=3, jobs=(JOB,),
                                   tests=False, bad_fraction=0.0)
        print(f"{args.runs} runs, {args.workers} workers, {args.latency * 1000:.0f} ms a "
              "request")
        print(f"{'system':8} {'runs/s':>8} {'cached':>7} {'req/run':>8} {'fetch req/run':>14} "
              f"{'limit runs/s':>13}")
        for name in args.systems:
            server, source, build_name = SYSTEMS[name](history, args.latency)
            try:
                listing = len(list(source.list_runs(build_name)))
                list_requests = len(server.requests)
                started = time.monotonic()
                summary = cache_data(DataPath(tmp / f"data-{name}"), source,
                                     DstatMetricSource(), build_name, workers=args.workers,
                                     processes=0, progress=False)
                elapsed = time.monotonic() - started
                total = len(server.requests) - list_requests
                fetch = (total - list_requests) / max(1, listing)
                limit = args.workers / (args.latency * fetch) if args.latency and fetch else 0
                print(f"{name:8} {summary['cached'] / elapsed:8.1f} {summary['cached']:7d} "
                      f"{total / max(1, summary['cached']):8.2f} {fetch:14.2f} {limit:13.1f}")
            finally:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
