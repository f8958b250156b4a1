"""Native log chatter on fd 2 goes to the debug log; everything else passes through."""

import subprocess
import sys
import textwrap

from ciml.native_logs import is_native

CHILD = textwrap.dedent("""
    import logging, os, sys
    logging.basicConfig(filename=sys.argv[1], level=logging.DEBUG, format="%(message)s")
    from ciml import native_logs
    native_logs.enable()
    tty = os.isatty(2)
    assert native_logs.install()
    assert not os.isatty(2) and native_logs.is_terminal(sys.stderr) == tty
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                b"written to STDERR\\n")
    os.write(2, b"I0000 00:00:1796186954.793223   11534 port.cc:153] oneDNN custom "
                b"operations are on.\\n")
    os.write(2, b"E0000 00:00:1796186964.768937   11534 node_def_util.cc:682] NodeDef "
                b"mentions attribute use_unbounded_threadpool\\n")
    os.write(2, b"F0000 00:00:1796186964.768937   11534 check.cc:1] Check failed: x\\n")
    sys.stderr.write("a real error from ciml\\n")
    sys.stderr.write("\\rtraining:  50%|#####     | 1/2")
    sys.stderr.flush()
    raise SystemExit(3)
""")


def test_native_lines_go_to_the_debug_log_and_the_rest_to_stderr(tmp_path):
    log = tmp_path / "ciml.log"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(log)], capture_output=True,
                          timeout=60)
    assert proc.returncode == 3
    err = proc.stderr.decode()
    assert "a real error from ciml" in err
    assert "Check failed: x" in err  # fatal native lines still surface
    assert "\rtraining:  50%|#####     | 1/2" in err
    assert "use_unbounded_threadpool" not in err and "oneDNN" not in err
    assert "absl::InitializeLog" not in err
    logged = log.read_text()
    assert "native: E0000" in logged and "use_unbounded_threadpool" in logged
    assert "native: I0000" in logged


def test_the_filter_is_off_unless_the_cli_runs_on_a_real_stderr():
    from ciml import native_logs

    native_logs.enable()  # under pytest, stderr is captured: not the process's own
    assert native_logs.install() is False


def test_line_patterns():
    assert is_native(b"W0000 00:00:1796186954.793223   11534 cpu_feature_guard.cc:1] x")
    assert is_native(b"2024-01-01 12:00:00.123456: I tensorflow/core/util/port.cc:113] x")
    assert not is_native(b"F0000 00:00:1796186954.793223   11534 check.cc:1] boom")
    assert not is_native(b"Error: no model trained")
    assert not is_native(b"interrupted: 3 runs cached")
