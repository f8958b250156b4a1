"""``ciml train-model``: the seed and operating-point options parse as documented."""

import io

import pytest

from ciml.commands.model import TrainModel
from ciml.errors import ConfigError
from ciml.model import DEFAULT_SEED, resolve_seed
from ciml.shell import CimlApp


@pytest.fixture
def parser():
    app = CimlApp()
    app.stdout, app.stderr = io.StringIO(), io.StringIO()
    return TrainModel(app, None).get_parser("ciml train-model")


def test_defaults(parser):
    args = parser.parse_args([])
    assert (args.seed, args.calibration, args.min_precision, args.max_false_alarm_rate) == \
        (None, "auto", None, None)


def test_operating_point_options(parser):
    args = parser.parse_args(["--seed", "random", "--calibration", "isotonic",
                              "--min-precision", "0.95"])
    assert (args.seed, args.calibration, args.min_precision) == ("random", "isotonic", 0.95)
    assert parser.parse_args(["--max-false-alarm-rate", "0.01"]).max_false_alarm_rate == 0.01
    for bad in (["--min-precision", "1.5"], ["--min-precision", "x"],
                ["--calibration", "magic"],
                ["--min-precision", "0.9", "--max-false-alarm-rate", "0.1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_seed_resolution():
    assert resolve_seed(None) == DEFAULT_SEED == 0
    assert resolve_seed(None, 5) == 5
    assert resolve_seed("7", 5) == 7
    drawn = resolve_seed("random")
    assert isinstance(drawn, int) and 0 <= drawn < 2**31
    with pytest.raises(ConfigError, match="integer or 'random'"):
        resolve_seed("often")
