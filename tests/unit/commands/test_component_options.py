"""Plugin parameters on the command line: shared options and their owners."""

import argparse

import pytest

from ciml.base import MetricSource, Parameter, ResultSource, parse_bool
from ciml.commands.base import add_component_options, build_component, component_options
from ciml.hookspecs import hookimpl
from ciml.plugins import get_manager


class _Source(ResultSource):
    """A result source with a value option and a list option"""

    name = "opt-source"
    parameters = (
        Parameter("verify", str, help="CA bundle to verify with"),
        Parameter("tags", str, multiple=True, help="tags to match"),
        Parameter("retries", int, default=3, help="tries after a failure"),
    )

    def list_runs(self, build_name, **kwargs):
        return iter(())

    def get_run(self, run_id):
        raise KeyError(run_id)


class _Metrics(MetricSource):
    """A metric source whose verify is a switch and whose tags is one value"""

    name = "opt-metrics"
    parameters = (
        Parameter("verify", parse_bool, default=True, help="check certificates"),
        Parameter("tags", str, help="one tag"),
        Parameter("retries", int, default=5, help="tries after a failure"),
        Parameter("build_name", str, help="shadowed by the command's own option"),
    )

    def fetch(self, run):
        raise NotImplementedError

    def parse(self, data, run):
        raise NotImplementedError


class _Plugin:
    @hookimpl
    def ciml_register_result_sources(self, register):
        register(_Source)

    @hookimpl
    def ciml_register_metric_sources(self, register):
        register(_Metrics)


@pytest.fixture
def parser():
    get_manager().add_plugin(_Plugin(), "opt-test")
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-name")
    names = {"opt-source", "opt-metrics"}
    add_component_options(parser, "result_source", names=names)
    add_component_options(parser, "metric_source", names=names)
    return parser


def _options(parser):
    return {o: a for a in parser._actions for o in a.option_strings}


def test_same_shape_shares_one_option_and_both_take_it(parser):
    args = parser.parse_args(["--retries", "7"])
    assert component_options(_Source, args)["retries"] == "7"
    assert component_options(_Metrics, args)["retries"] == "7"
    help_text = _options(parser)["--retries"].help
    assert help_text == ("tries after a failure (default: 3 for opt-source, "
                         "5 for opt-metrics) [opt-source, opt-metrics]")


def test_defaults_stay_each_components_own(parser):
    args = parser.parse_args([])
    assert build_component("result_source", "opt-source", args).retries == 3
    assert build_component("metric_source", "opt-metrics", args).retries == 5


def test_a_switch_never_takes_over_a_value_option(parser):
    options = _options(parser)
    assert "--verify" in options and "--opt-metrics-verify" in options
    assert "--no-opt-metrics-verify" in options
    args = parser.parse_args(["--verify", "/etc/ca.pem", "--no-opt-metrics-verify"])
    assert build_component("result_source", "opt-source", args).verify == "/etc/ca.pem"
    assert build_component("metric_source", "opt-metrics", args).verify is False
    # The switch's owner never reads the value option, nor the reverse.
    args = parser.parse_args(["--verify", "/etc/ca.pem"])
    assert build_component("metric_source", "opt-metrics", args).verify is True
    args = parser.parse_args(["--no-opt-metrics-verify"])
    assert build_component("result_source", "opt-source", args).verify is None


def test_a_list_and_a_single_value_get_separate_options(parser):
    args = parser.parse_args(["--tags", "a", "b", "--opt-metrics-tags", "c"])
    assert build_component("result_source", "opt-source", args).tags == ["a", "b"]
    assert build_component("metric_source", "opt-metrics", args).tags == "c"
    assert _options(parser)["--opt-metrics-tags"].help == "one tag [opt-metrics]"


def test_the_commands_own_option_is_not_duplicated(parser):
    assert [a.dest for a in parser._actions].count("build_name") == 1
    args = parser.parse_args(["--build-name", "tempest-full"])
    assert component_options(_Metrics, args)["build_name"] == "tempest-full"


def test_builtin_http_options_are_shared_with_one_help_per_meaning():
    from ciml.shell import CimlApp

    app = CimlApp()
    cmd = app.command_manager.find_command(["cache-data"])[0]
    parser = cmd(app, None).get_parser("ciml cache-data")
    help_text = _options(parser)["--connect-timeout"].help
    meanings = sorted(help_text.split("; "))
    assert meanings == [
        "seconds to wait for a connection (default: 10.0) "
        "[github, gitlab, jenkins, zuul, dstat, pcp, prometheus]",
        "seconds to wait for the database server's TCP connection (default: 10.0) "
        "[subunit2sql]"]
