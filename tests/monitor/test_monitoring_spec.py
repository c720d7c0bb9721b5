"""The Monitoring document: defaults, Prometheus's own duration units, loopback only, at most one
per spec set, every mistake located by file and line, and the JSON Schema agreeing with the loader."""

from __future__ import annotations

import jsonschema
import pytest
import yaml

from enova.errors import SpecError
from enova.spec import json_schema, load_specs

HEAD = "apiVersion: enova/v1\nkind: Monitoring\nmetadata: {name: mon}\n"


def load(tmp_path, text: str, name: str = "monitoring.yaml"):
    (tmp_path / name).write_text(text)
    return load_specs(tmp_path)


def issues(tmp_path, text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load(tmp_path, text)
    return [f"{i.line} {i.field}: {i.message}" for i in caught.value.issues]


def test_a_document_without_spec_takes_every_default(tmp_path):
    spec = load(tmp_path, HEAD).monitoring.doc.spec
    assert spec.mode == "local"
    p = spec.prometheus
    assert (p.binary, p.host, p.port, p.scrape_interval, p.retention) == \
        ("prometheus", "127.0.0.1", 9090, 5.0, 15 * 86400.0)


def test_a_spec_set_without_monitoring_has_none(tmp_path):
    assert load(tmp_path, HEAD.replace("Monitoring", "Gateway")).monitoring is None


@pytest.mark.parametrize("written, seconds", [("15d", 15 * 86400.0), ("2w", 14 * 86400.0), ("36h", 36 * 3600.0),
                                              ("1d12h", 36 * 3600.0), (7200, 7200.0)])
def test_retention_is_written_in_prometheus_units(tmp_path, written, seconds):
    spec = load(tmp_path, HEAD + f"spec: {{prometheus: {{retention: {written}}}}}\n").monitoring.doc.spec
    assert spec.prometheus.retention == seconds


def test_each_mistake_is_located_and_explained(tmp_path):
    text = HEAD + ("spec:\n  mode: swarm\n  prometheus:\n    host: 0.0.0.0\n    binary: bin/prometheus\n"
                   "    port: 70000\n    scrape_interval: 500ms\n    retention: 30m\n    scrape_intervall: 5s\n")
    assert issues(tmp_path, text) == [
        "5 spec.mode: must be one of: local, compose (got 'swarm')",
        "7 spec.prometheus.host: must be a loopback address such as 127.0.0.1: Prometheus has no authentication, "
        "so anyone who reached it could read every metric and run any query (got '0.0.0.0')",
        "8 spec.prometheus.binary: must be a name looked up on PATH (prometheus) or an absolute path "
        "(/usr/bin/prometheus) (got 'bin/prometheus')",
        "9 spec.prometheus.port: must be <= 65535 (got 70000)",
        "10 spec.prometheus.scrape_interval: must be at least 1s (got '500ms')",
        "11 spec.prometheus.retention: must be at least 1h (got '30m')",
        "12 spec.prometheus.scrape_intervall: unknown field; expected one of: binary, host, port, retention, "
        "scrape_interval; did you mean 'scrape_interval'?",
    ]


def test_only_one_monitoring_document_is_allowed(tmp_path):
    (tmp_path / "a.yaml").write_text(HEAD)
    assert issues(tmp_path, HEAD.replace("name: mon", "name: other")) == [
        f"2 kind: only one Monitoring document is allowed; first at {tmp_path}/a.yaml:3"]


@pytest.mark.parametrize("prometheus, valid", [
    ({}, True), ({"host": "::1", "port": 19790, "retention": "2w", "scrape_interval": "5s"}, True),
    ({"host": "0.0.0.0"}, False), ({"retention": "15x"}, False), ({"port": 0}, False), ({"bogus": 1}, False)])
def test_the_json_schema_accepts_and_rejects_what_the_loader_does(prometheus, valid):
    document = yaml.safe_load(HEAD)
    document["spec"] = {"prometheus": prometheus}
    validator = jsonschema.Draft202012Validator(json_schema())
    assert validator.is_valid(document) is valid
