"""``ciml demo``: the whole pipeline on a generated CI history, with nothing else installed."""

import os
import shutil
import sys
import time

from cliff.command import Command

from ciml.errors import CimlError

#: The run-metadata key under which the generator records each run's true
#: cause (passed, test-failure, oom, timeout, network).  Real CI systems keep
#: such a label only where someone classifies failures (elastic-recheck did).
CAUSE_KEY = "failure_cause"


class Demo(Command):
    """Run the whole pipeline offline on a generated CI history

    Generates a realistic CI history (a SQLite subunit2sql database and a log
    tree of dstat files), then runs the real commands on it: cache-data,
    build-dataset, setup-experiment, train-model, model show and the plots.
    With ``--ci github`` the same history is served as GitHub Actions runs
    and jobs (a local GitHub API) with each runner's metrics in Prometheus
    (a local Prometheus API).  The data path is left in place to explore
    with the other commands.
    """

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument(
            "--runs", type=int, default=360, metavar="N",
            help="Runs to generate across all jobs (default: 360).")
        parser.add_argument(
            "--seed", type=int, default=0, help="Seed of the history and the split.")
        parser.add_argument(
            "--build-name", default="tempest-full",
            help="The job whose runs are learned from (default: tempest-full).")
        parser.add_argument(
            "--epochs", type=int, default=100,
            help="Most training epochs; early stopping usually ends sooner (default: 100).")
        parser.add_argument(
            "--no-plots", dest="plots", action="store_false",
            help="Skip writing the PNG plots.")
        parser.add_argument(
            "--ci", choices=("openstack", "github"), default="openstack",
            help="The CI system the history is served as: openstack (a subunit2sql "
                 "database and dstat logs, the default) or github (GitHub Actions jobs "
                 "through a local GitHub API, node metrics through a local Prometheus "
                 "API).")
        parser.add_argument(
            "--work-dir", metavar="DIR",
            help="A local folder for the generated history (its SQLite database and "
                 "log files) and the plots: by default the data path itself, or "
                 "~/.cache/ciml/demo when the data path is on object storage.")
        return parser

    def take_action(self, parsed_args):
        from ciml.generator import generate_history

        if parsed_args.runs < 30:
            raise CimlError("--runs must be at least 30 for a meaningful split")
        if parsed_args.ci == "github":
            return _GitHubDemo(self.app, parsed_args).run()
        data_path = self.app.data_path
        out = self.app.stdout
        work_dir = _work_dir(data_path, parsed_args)
        history_dir = work_dir / "demo-history"
        step = _Steps(out)

        step.title(f"1. Generating a CI history of {parsed_args.runs} runs in {history_dir}")
        if history_dir.exists():
            shutil.rmtree(history_dir)
        history = generate_history(history_dir, runs=parsed_args.runs, seed=parsed_args.seed,
                                   cause_key=CAUSE_KEY)
        jobs = {}
        for run in history.runs:
            jobs[run["build_name"]] = jobs.get(run["build_name"], 0) + 1
        step.say("jobs: " + ", ".join(f"{k} ({v} runs)" for k, v in sorted(jobs.items())))
        step.say(f"subunit2sql database: {history.db_uri}")
        step.say(f"logs: {history.logs_dir}")
        build = parsed_args.build_name
        if build not in jobs:
            raise CimlError(f"no runs of {build!r} in the history; jobs: {', '.join(jobs)}")

        status_ds, cause_ds, provider_ds = "demo-status", "demo-cause", "demo-provider"
        exp = "demo-dnn"
        # Trees are the stronger default on aggregates (benchmarks/bench_quality.py).
        trees = "demo-gbdt"
        exp_of = {status_ds: exp, cause_ds: trees, provider_ds: trees}
        seed = ["--seed", str(parsed_args.seed)]
        from ciml_plugins.normalizers.builtin import SUGGESTED_AGGREGATES

        aggregates = ["--aggregation-functions", *SUGGESTED_AGGREGATES]
        plan = [
            ("2. Caching runs and their dstat metrics (subunit2sql + dstat plugins)",
             ["cache-data", "--source", "subunit2sql", "--db-uri", history.db_uri,
              "--build-name", build]),
            ("3. Building a dataset: did the run fail? (1 min time series, scaled on training)",
             ["build-dataset", "--dataset", status_ds, "--build-name", build,
              "--sample-interval", "1min", "--class-label", "status", *seed, "--force"]),
            ("4. Building a dataset: why did it fail? (aggregates per feature; the label is "
             f"the generator's recorded cause, run metadata key {CAUSE_KEY!r})",
             ["build-dataset", "--dataset", cause_ds, "--build-name", build, *aggregates,
              "--class-label", CAUSE_KEY, *seed, "--force"]),
            ("5. Building a dataset: which provider ran it? (aggregates per feature)",
             ["build-dataset", "--dataset", provider_ds, "--build-name", build, *aggregates,
              "--class-label", "node_provider", *seed, "--force"]),
            ("6. Setting up experiments: dnn for the time series, gbdt (gradient-boosted "
             "trees) for the aggregates, with their defaults",
             ["setup-experiment", "--experiment", exp, "--estimator", "dnn",
              "--epochs", str(parsed_args.epochs), "--force"]),
            (None, ["setup-experiment", "--experiment", trees, "--estimator", "gbdt",
                    "--force"]),
        ]
        for number, dataset in enumerate((status_ds, cause_ds, provider_ds), start=7):
            plan.append((f"{number}. Training {exp_of[dataset]} on {dataset}: operating "
                         "point and calibration chosen on dev, evaluated on test",
                         ["train-model", "--dataset", dataset, "--experiment",
                          exp_of[dataset], *seed]))
        plan.append(("10. All models: test metrics beside the majority-class baseline",
                     ["model", "list"]))
        _run_plan(self.app, step, plan)

        # One held-out run of each failure cause: the model says why it
        # failed, and the dataset's profile whether it is unusual.
        from ciml.dataset import Dataset

        cause_of = {r["run_id"]: r["cause"] for r in history.runs}
        picked = {}
        for run_id in Dataset.open(data_path, cause_ds).split("test").ids:
            picked.setdefault(cause_of.get(run_id), run_id)
        plot_dir = work_dir / "demo-plots"
        step.title("11. Predicting held-out runs: why they failed (the evidence), and are "
                   "they unusual?")
        explained = ["--plot", str(plot_dir / "explained")] if parsed_args.plots else []
        _run_plan(self.app, step, [(None, [
            "predict", "--dataset", cause_ds, "--experiment", trees, "--source",
            "subunit2sql", "--db-uri", history.db_uri, "-c", "run", "-c", "actual",
            "-c", "predicted", "-c", "why", "-c", "unusual", "-c", "percentile",
            "-c", "unusual_features", *explained,
            *[picked[c] for c in sorted(picked, key=str)]])])
        # One prediction record in full: what watch prints and hooks receive.
        _run_plan(self.app, step, [(None, [
            "predict", "--dataset", cause_ds, "--experiment", trees, "--source",
            "subunit2sql", "--db-uri", history.db_uri, "-f", "json",
            "-c", "run", "-c", "predicted", "-c", "why",
            picked.get("oom") or next(iter(picked.values()))])])

        plan = []
        if parsed_args.plots:
            plan += [
                ("12. Plots",
                 ["dataset", "plot", status_ds, "--output-dir", str(plot_dir / status_ds)]),
                (None,
                 ["dataset", "plot", cause_ds, "--output-dir", str(plot_dir / cause_ds)]),
            ]
            plan += [(None, ["model", "plot", "--dataset", dataset, "--experiment",
                             exp_of[dataset],
                             "--output-dir", str(plot_dir / f"{dataset}-{exp_of[dataset]}")])
                     for dataset in (status_ds, cause_ds, provider_ds)]
        _run_plan(self.app, step, plan)

        if parsed_args.plots:
            pngs = sorted(p.relative_to(plot_dir) for p in plot_dir.rglob("*.png"))
            step.say(f"{len(pngs)} plots under {plot_dir}:")
            for png in pngs:
                step.say(f"  {png}")
        dp = _data_path_argv(data_path)
        step.title(f"Done in {step.elapsed():.0f} s. Keep exploring:")
        run_id = next(r["run_id"] for r in reversed(history.good_runs(build)))
        # The last few runs, so that the poll example has something to predict.
        starts = sorted(_iso(r["start"]) for r in history.runs if r["build_name"] == build)
        since = starts[-5]
        for line in (
                f"{dp}run list --build-name {build}",
                f"{dp}dataset show {status_ds}",
                f"{dp}model show --dataset {cause_ds} --experiment {trees} -f json",
                f"{dp}predict --dataset {status_ds} --experiment {exp} "
                f"--source subunit2sql --db-uri {history.db_uri} --allow-scheme file {run_id}",
                # The demo's logs are local files: a URL ciml fetches only when told.
                f"{dp}watch --trigger poll --once --since {since} --dataset {cause_ds} "
                f"--experiment {trees} --source subunit2sql --db-uri {history.db_uri} "
                "--allow-scheme file",
                f"tensorboard --logdir {data_path.model(status_ds, exp) / 'logs'}"):
            step.say("  " + line)
        _say_serve(step, dp, data_path)


class _GitHubDemo:
    """The pipeline on a history served as GitHub Actions jobs and Prometheus metrics.

    Both servers are the test kit's (:mod:`ciml.testing.forges`,
    :mod:`ciml.testing.prometheus`), on loopback ports for the demo's
    duration: the real ``github`` and ``prometheus`` plugins talk HTTP to
    them exactly as to api.github.com and a Prometheus server.
    """

    repo = "octo/ci"

    def __init__(self, app, args):
        self.app = app
        self.args = args
        self.step = _Steps(app.stdout)

    def run(self):
        from ciml.generator import generate_history
        from ciml.testing.forges import GitHubServer
        from ciml.testing.prometheus import PrometheusServer

        args, step = self.args, self.step
        data_path = self.app.data_path
        history_dir = _work_dir(data_path, args) / "demo-history"
        step.title(f"1. Generating a CI history of {args.runs} runs in {history_dir}, "
                   "served as GitHub Actions jobs with their runners' metrics in Prometheus")
        if history_dir.exists():
            shutil.rmtree(history_dir)
        history = generate_history(history_dir, runs=args.runs, seed=args.seed,
                                   tests=False, prometheus=True)
        build = args.build_name
        jobs = {}
        for run in history.runs:
            jobs[run["build_name"]] = jobs.get(run["build_name"], 0) + 1
        if build not in jobs:
            raise CimlError(f"no runs of {build!r} in the history; jobs: {', '.join(jobs)}")
        with GitHubServer.from_history(history, repo=self.repo) as github, \
                PrometheusServer.from_history(history) as prometheus:
            step.say("GitHub Actions jobs: " + ", ".join(
                f"{k} ({v})" for k, v in sorted(jobs.items())))
            step.say(f"GitHub API (local): {github.api_url}, repository {self.repo}")
            step.say(f"Prometheus API (local): {prometheus.url}, node_exporter series of "
                     f"{len(prometheus.nodes)} runners")
            self._pipeline(github, prometheus, build)
        dp = _data_path_argv(data_path)
        step.title(f"Done in {step.elapsed():.0f} s. Keep exploring (the local servers "
                   "are gone; the raw cache, datasets and models stay):")
        for line in (f"{dp}run list --build-name {build}",
                     f"{dp}dataset show demo-gh-status",
                     f"{dp}model show --dataset demo-gh-conclusion --experiment demo-gbdt "
                     "-f json",
                     f"{dp}predict --dataset demo-gh-status --experiment demo-dnn "
                     f"{self.newest_cached}"):
            step.say("  " + line)
        _say_serve(step, dp, data_path)

    def _pipeline(self, github, prometheus, build):
        args, step = self.args, self.step
        data_path = self.app.data_path
        source = ["--source", "github", "--github-url", github.api_url, "--repo", self.repo]
        metrics = ["--metric-source", "prometheus", "--prometheus-url", prometheus.url,
                   "--step", "10"]
        # The newest few jobs stay out of the cache: step 11 predicts them as new runs,
        # fetched from GitHub and Prometheus at prediction time.
        finished = sorted(
            (j for jobs in github.jobs.values() for j in jobs
             if j["name"] == build and j["status"] == "completed"
             and j["conclusion"] in ("success", "failure", "timed_out")),
            key=lambda j: (j["started_at"], j["id"]))
        if len(finished) < 12:
            raise CimlError(f"only {len(finished)} finished jobs of {build!r}: give more --runs")
        newest = finished[-4:]
        self.held_out = [str(j["id"]) for j in newest]
        # A cached job, for the offline predict suggested at the end.
        self.newest_cached = str(finished[-5]["id"])
        seed = ["--seed", str(args.seed)]
        from ciml_plugins.normalizers.builtin import SUGGESTED_AGGREGATES

        aggregates = ["--aggregation-functions", *SUGGESTED_AGGREGATES]
        status_ds, conclusion_ds, group_ds = ("demo-gh-status", "demo-gh-conclusion",
                                              "demo-gh-runner-group")
        exp = "demo-dnn"
        # As in the default demo: trees for the aggregates (benchmarks/bench_quality.py).
        trees = "demo-gbdt"
        exp_of = {status_ds: exp, conclusion_ds: trees, group_ds: trees}
        plan = [
            ("2. Caching the jobs (github plugin) and their runners' metrics (prometheus "
             "plugin), all but the newest four",
             ["cache-data", *source, "--build-name", build, *metrics,
              "--until", newest[0]["started_at"]]),
            ("3. Building a dataset: did the job fail? (1 min time series, scaled on "
             "training)",
             ["build-dataset", "--dataset", status_ds, "--build-name", build,
              "--sample-interval", "1min", "--class-label", "status", *seed, "--force"]),
            ("4. Building a dataset: its GitHub conclusion (success, failure, timed_out; "
             "aggregates per feature)",
             ["build-dataset", "--dataset", conclusion_ds, "--build-name", build,
              *aggregates, "--class-label", "conclusion", *seed, "--force"]),
            ("5. Building a dataset: which runner group (cloud) ran it?",
             ["build-dataset", "--dataset", group_ds, "--build-name", build, *aggregates,
              "--class-label", "runner_group_name", *seed, "--force"]),
            ("6. Setting up experiments: dnn for the time series, gbdt (gradient-boosted "
             "trees) for the aggregates, with their defaults",
             ["setup-experiment", "--experiment", exp, "--estimator", "dnn",
              "--epochs", str(args.epochs), "--force"]),
            (None, ["setup-experiment", "--experiment", trees, "--estimator", "gbdt",
                    "--force"]),
        ]
        for number, dataset in enumerate((status_ds, conclusion_ds, group_ds), start=7):
            plan.append((f"{number}. Training {exp_of[dataset]} on {dataset}, evaluating on "
                         "its test split",
                         ["train-model", "--dataset", dataset, "--experiment",
                          exp_of[dataset], *seed]))
        plan.append(("10. All models: test metrics beside the majority-class baseline",
                     ["model", "list"]))
        plan.append(("11. Predicting the four newest jobs, fetched now from GitHub and "
                     "Prometheus: did they fail, and are they unusual?",
                     ["predict", "--dataset", status_ds, "--experiment", exp, *source,
                      *metrics, "-c", "run", "-c", "actual", "-c", "predicted",
                      "-c", "unusual", "-c", "percentile", *self.held_out]))
        _run_plan(self.app, step, plan)
        if args.plots:
            plot_dir = _work_dir(data_path, args) / "demo-plots"
            plots = [("12. Plots", ["dataset", "plot", status_ds, "--output-dir",
                                    str(plot_dir / status_ds)])]
            plots += [(None, ["model", "plot", "--dataset", dataset, "--experiment",
                              exp_of[dataset],
                              "--output-dir", str(plot_dir / f"{dataset}-{exp_of[dataset]}")])
                      for dataset in (status_ds, conclusion_ds, group_ds)]
            _run_plan(self.app, step, plots)


#: The port the printed ``ciml serve`` command uses (its default).
SERVE_PORT = 8080


def _data_path_argv(data_path):
    """The start of a command line that reaches this demo's data path (secrets redacted)."""
    from ciml.storage import redact_url

    argv = f"{_program()} --data-path {data_path} "
    if data_path.catalog_uri:
        argv += f"--catalog-uri {redact_url(data_path.catalog_uri)} "
    return argv


def _work_dir(data_path, args):
    """The local folder of the generated history and the plots.

    The history is a SQLite database and a tree of log files that the
    sources read as local files, and the plots are PNGs for a person to
    open: neither can live on an object store, whereas the raw cache,
    datasets and models the demo makes go to the data path wherever it is.
    """
    import pathlib

    if args.work_dir:
        return pathlib.Path(args.work_dir).expanduser().resolve()
    if not data_path.is_remote:
        return data_path.root
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(cache) / "ciml" / "demo"


def _say_serve(step, dp, data_path):
    """The last lines: the command that shows the demo's predictions in a browser."""
    step.say("")
    if data_path.is_remote:
        # The default prediction store is a SQLite file in a local data path.
        step.say("Predictions are stored only in a database when the data path is on object "
                 "storage: give predict, watch and serve --store-uri "
                 "(mysql+pymysql://... or postgresql://...) to keep and see them.")
        return
    step.say("See the predictions, runs and models in a browser (Ctrl-C stops it):")
    step.say(f"  {dp}serve --port {SERVE_PORT}")
    step.say(f"  then open http://127.0.0.1:{SERVE_PORT}/")


def _run_plan(app, step, plan):
    for title, argv in plan:
        if title:
            step.title(title)
        step.say("$ ciml " + " ".join(_shown(argv)))
        rc = app.run_subcommand(argv)
        if rc:
            raise CimlError(f"demo step failed: ciml {' '.join(_shown(argv))} (exit {rc})")


def _program():
    """How to call this ciml again: plain ``ciml`` when that is what PATH finds."""
    me = shutil.which(sys.argv[0]) or sys.argv[0]
    on_path = shutil.which("ciml")
    if on_path and me and os.path.realpath(on_path) == os.path.realpath(me):
        return "ciml"
    if me and os.path.basename(me) == "ciml":
        return os.path.abspath(me)
    return "ciml"


def _iso(value):
    return value if isinstance(value, str) else value.isoformat()


def _shown(argv):
    """Quote arguments that a shell would split, for the printed command lines."""
    return [a if a and all(c.isalnum() or c in "-_./:=@" for c in a) else repr(a)
            for a in argv]


class _Steps:
    """Prints step headings and lines, and keeps the clock."""

    def __init__(self, out):
        self.out = out
        self.started = time.monotonic()

    def title(self, text):
        self.out.write(f"\n== {text}\n")
        self.out.flush()

    def say(self, text):
        self.out.write(text + "\n")
        self.out.flush()

    def elapsed(self):
        return time.monotonic() - self.started

