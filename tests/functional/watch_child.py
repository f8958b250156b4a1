"""A watcher process for the stop-and-restart tests: the real Watcher, trigger and signals.

Only the model and the metric source are fakes (no TensorFlow, no log
server): each fetch takes ``--fetch-seconds``, so a burst of events is still
queued or being fetched when the test signals the process.  Prints one
prediction record per line on stdout, logs on stderr.
"""

import argparse
import logging
import pathlib
import sys
import time

import pandas as pd

# mqtt_helpers lives beside this script and imports tests/subprocesses.py.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from mqtt_helpers import FakeModel  # noqa: E402


def _metric_source(seconds):
    from ciml.base import FetchedMetrics, MetricSource

    class SlowMetrics(MetricSource):
        name = "slow-fake-metrics"

        def fetch(self, run):
            time.sleep(seconds)
            return FetchedMetrics("dstat.csv", b"90" if run.status == "failed" else b"10",
                                  run.artifacts_url or "")

        def parse(self, data, run):
            index = pd.date_range("2026-11-27", periods=3, freq="s", tz="UTC")
            return pd.DataFrame({"cpu_usr": [float(data)] * 3}, index=index)

    return SlowMetrics()


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--trigger", choices=("mqtt", "poll"), required=True)
    parser.add_argument("--data-path", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--topic")
    parser.add_argument("--client-id")
    parser.add_argument("--db-uri")
    parser.add_argument("--since")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--queue-size", type=int, default=100)
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    parser.add_argument("--fetch-seconds", type=float, default=0.05)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from ciml.online import Predictor, Watcher
    from ciml.paths import DataPath
    from ciml.plugins import get_manager

    data_path = DataPath(pathlib.Path(args.data_path))
    predictor = Predictor(FakeModel(), dataset_name="ds", experiment_name="exp",
                          build_name="tempest-full",
                          metric_source=_metric_source(args.fetch_seconds))
    source = None
    if args.trigger == "mqtt":
        trigger = get_manager().get("trigger", "mqtt")(
            mqtt_host=args.host, mqtt_port=args.port, topic=[args.topic],
            client_id=args.client_id, connect_timeout=30)
    else:
        source = get_manager().get("result_source", "subunit2sql")(db_uri=args.db_uri)
        trigger = get_manager().get("trigger", "poll")(interval=0.2, since=args.since)
    trigger.setup(data_path=data_path, build_name="tempest-full", result_source=source)
    watcher = Watcher(predictor, trigger, source=source, data_path=data_path,
                      workers=args.workers, queue_size=args.queue_size, fetch_delay=0.1,
                      drain_timeout=args.drain_timeout, status_interval=0, call_hook=False,
                      stdout=sys.stdout, stderr=sys.stderr)
    try:
        watcher.run()
    finally:
        if source is not None:
            source.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
