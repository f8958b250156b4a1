"""Class labels for runs."""

import pytest

from ciml.dataset import run_label
from ciml.dataset.labels import class_names
from ciml.records import RunRecord


def run(status="passed", **meta):
    return RunRecord(id="r", build_name="b", status=status, metadata=meta)


@pytest.mark.parametrize("status,label", [("passed", "passed"), ("failed", "failed"),
                                          ("Success", "passed"), ("0", "passed"),
                                          ("FAILURE", "failed"), ("", None)])
def test_status(status, label):
    assert run_label(run(status), "status") == label


@pytest.mark.parametrize("raw,family", [("rax-dfw", "rax"), ("ovh-bhs1", "ovh"),
                                        ("vexxhost-ca-ymq-1", "vexxhost"),
                                        ("inap-mtl01", "inap"),
                                        ("limestone-regionone", "limestone"),
                                        ("citycloud-lon1", "citycloud")])
def test_node_provider_families(raw, family):
    r = run(node_provider=raw)
    assert run_label(r, "node_provider") == family
    assert run_label(r, "node_provider_all") == raw


def test_metadata_key_and_missing():
    r = run(node_provider="rax-ord", queue="gate")
    assert run_label(r, "queue") == "gate"
    assert run_label(r, "nosuch") is None
    assert run_label(run(), "node_provider") is None


def test_class_names():
    assert class_names("status", ["failed"]) == ["passed", "failed"]
    assert class_names("node_provider", ["rax", "ovh", None, "rax"]) == ["ovh", "rax"]
