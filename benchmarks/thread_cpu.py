"""Run ``ciml`` in this process and report, at exit, the CPU seconds of each of its threads.

Used by ``bench_watch.py --thread-cpu`` to see where a watcher's CPU goes
per event: the trigger's thread, the MQTT client's, the workers', and the
native threads of TensorFlow and other libraries (named by the kernel).
Python threads are told apart by name (``threading.Thread.name``); the
figures are sampled every 0.2 s from ``/proc/self/task``, so a thread that
ends keeps its last reading.  On SIGUSR1 the readings so far are kept as
the baseline (``"since_signal"`` in the output counts from then: the
benchmark sends it just before its stream).  Linux only.

Usage: ``python benchmarks/thread_cpu.py OUT.json ciml-arguments...``.
"""

import atexit
import collections
import json
import os
import signal
import sys
import threading


def _task_cpu():
    """``{tid: (comm, cpu seconds)}`` of this process's threads."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as fh:
                text = fh.read()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[int(tid)] = (comm, (int(fields[11]) + int(fields[12])) / tick)
    return out


def main():
    out_path, argv = sys.argv[1], sys.argv[2:]
    names = {}
    latest = {}
    stop = threading.Event()

    def sample():
        while True:
            for thread in threading.enumerate():
                if thread.native_id is not None:
                    names[thread.native_id] = thread.name
            latest.update(_task_cpu())
            if stop.wait(0.2):
                return

    baseline = {}

    def mark(signum, frame):
        baseline.clear()
        baseline.update(_task_cpu())

    signal.signal(signal.SIGUSR1, mark)
    sampler = threading.Thread(target=sample, name="thread-cpu-sampler", daemon=True)
    sampler.start()

    def report():
        stop.set()
        sampler.join(1)
        latest.update(_task_cpu())
        def grouped(since):
            groups = collections.Counter()
            for tid, (comm, cpu) in latest.items():
                name = names.get(tid) or f"native:{comm}"
                cpu -= since.get(tid, (comm, 0.0))[1]
                # Numbered threads (ciml-watch-0, tf_Compute...) add up per kind.
                groups[name.rstrip("0123456789").rstrip("-_ ") or name] += cpu
            return dict(groups.most_common())

        with open(out_path, "w") as fh:
            json.dump({"all": grouped({}), "since_signal": grouped(baseline)}, fh, indent=1)

    atexit.register(report)
    from ciml.shell import main as ciml_main

    sys.exit(ciml_main(argv))


if __name__ == "__main__":
    main()
