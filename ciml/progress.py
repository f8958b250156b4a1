"""Progress of long work: a bar on a terminal, a line per step in a pipe, nothing with -q.

The CLI sets the verbosity once (:func:`set_verbosity`); plugins report
through :class:`EpochProgress` (estimators) so that every command behaves
the same.  Lines go through the ``ciml.progress`` logger at INFO, which is
what ``-q`` silences and what a log file records.
"""

import logging
import sys

LOG = logging.getLogger("ciml.progress")

_state = {"verbosity": 1}


def set_verbosity(level):
    """0 with ``-q``, 1 by default, 2 and more with ``-v``."""
    _state["verbosity"] = int(level)


def verbosity():
    return _state["verbosity"]


def _metrics_text(logs, keys):
    return ", ".join(f"{k} {float(logs[k]):.4f}" for k in keys if k in logs)


class EpochProgress:
    """Report training epochs: ``update(epoch, logs)`` after each, ``close()`` at the end.

    On a terminal a bar with the latest loss and val_loss; elsewhere (a
    pipe, a log file) one line per epoch; with ``-q`` nothing.
    """

    keys = ("loss", "val_loss")

    def __init__(self, total, desc="training", stream=None):
        self.total = int(total)
        self.desc = desc
        stream = stream if stream is not None else sys.stderr
        self.bar = None
        from ciml.native_logs import is_terminal

        if verbosity() >= 1 and is_terminal(stream):
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=desc, unit="epoch", file=stream,
                            leave=False)

    def update(self, epoch, logs):
        """``epoch`` counts from 1; ``logs`` holds ``loss``, ``val_loss``..."""
        logs = logs or {}
        if self.bar is not None:
            self.bar.set_postfix({k: f"{float(logs[k]):.4f}" for k in self.keys if k in logs})
            self.bar.update(1)
        else:
            LOG.info("%s: epoch %d/%d: %s", self.desc, epoch, self.total,
                     _metrics_text(logs, self.keys))

    def close(self, message=None):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if message:
            LOG.info("%s", message)
