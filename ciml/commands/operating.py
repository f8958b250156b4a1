"""Options of the operating point and calibration, shared by train-model and the demo."""

import argparse


def _share(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, not {text}")
    return value


def add_operating_point_options(parser):
    group = parser.add_argument_group("operating point (chosen on the dev split)")
    group.add_argument("--calibration", choices=("auto", "none", "platt", "isotonic"),
                       default="auto",
                       help="Calibrate probabilities on dev: auto uses platt or isotonic "
                       "only where a two-fold check on dev says it helps (default: auto)")
    which = group.add_mutually_exclusive_group()
    which.add_argument("--min-precision", type=_share, default=None, metavar="P",
                       help="Two classes: the threshold with the most recall whose dev "
                       "precision for the failed class is at least P; more classes: a "
                       "run less sure than the floor where dev accuracy reaches P is "
                       "'uncertain' (default: 0.9)")
    which.add_argument("--max-false-alarm-rate", type=_share, default=None, metavar="R",
                       help="Two classes: the threshold with the most recall that flags "
                       "at most this share of the dev runs that passed")
