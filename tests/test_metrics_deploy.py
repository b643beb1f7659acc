"""The monitoring part of the deployment: Prometheus's scrape config, Grafana's provisioning
and dashboard, their compose services, and nginx keeping /metrics private. (Grafana is not
run here: the dashboard is checked against the metrics the code exports.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import channels_layer.metrics  # noqa: F401 - registers the layer's metrics
import consumers.metrics  # noqa: F401 - registers the consumers' metrics
from tests.test_deploy import command, environment, mounts, needs_nginx, site  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "consumers.json"
# A metric in a PromQL expression: ours, or prometheus_client's process figures.
METRIC_NAME = re.compile(r"\b((?:consumers|process)_[a-z_]+)")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def exported_families() -> set[str]:
    """The metric families the process exports (with or without samples yet)."""
    text = generate_latest(REGISTRY).decode()
    return {family.name for family in text_string_to_metric_families(text)}


def family(name: str) -> str:
    """A sample's family: ``x_total`` and a histogram's ``x_bucket``/``x_count`` are ``x``."""
    return re.sub(r"_(total|bucket|count|sum|created)$", "", name)


def test_prometheus_scrapes_each_process_at_its_own_address(compose):
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in config["scrape_configs"]
    }
    services = compose["services"]
    # Daphne answers /metrics on the port it serves: one target per web service.
    daphne_port = command(services["web1"])[command(services["web1"]).index("-p") + 1]
    assert sorted(targets["daphne"]) == [f"web1:{daphne_port}", f"web2:{daphne_port}"]
    worker_port = environment(services["worker"])["METRICS_PORT"]
    assert targets["worker"] == [f"worker:{worker_port}"]
    # On the compose network only (its port is not published).
    assert environment(services["worker"])["METRICS_ADDRESS"] == "0.0.0.0"  # noqa: S104
    assert all(job["metrics_path"] == "/metrics" for job in config["scrape_configs"])


def test_the_stack_runs_prometheus_and_grafana_on_loopback_only(compose):
    services = compose["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert mounts(prometheus)["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    grafana_mounts = mounts(grafana)
    assert grafana_mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    assert grafana_mounts["/var/lib/grafana/dashboards"] == "./deploy/grafana/dashboards"
    assert "prometheus" in grafana["depends_on"]
    for service in (prometheus, grafana):
        assert all(str(port).startswith("127.0.0.1:") for port in service["ports"])
    # No default admin password.
    password = environment(grafana)["GF_SECURITY_ADMIN_PASSWORD"]
    assert password.startswith("${GRAFANA_ADMIN_PASSWORD:?")
    # The Daphne ports stay on the compose network: /metrics is not reachable from outside.
    for name in ("web1", "web2", "worker"):
        assert "ports" not in services[name], name
        networks = environment(services[name])["METRICS_ALLOWED_NETWORKS"]
        assert "0.0.0.0/0" not in networks and "::/0" not in networks


def test_grafana_provisions_the_datasource_and_dashboard_the_panels_use():
    provisioning = DEPLOY / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    [source] = sources["datasources"]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")
    providers = yaml.safe_load((provisioning / "dashboards" / "dashboards.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["panels"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"], panel["title"]


def test_every_metric_the_dashboard_queries_is_exported():
    exported = exported_families()
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in map(family, METRIC_NAME.findall(target["expr"]))
    }
    assert len(queried) >= 18
    assert queried - exported == set()


def test_the_dashboard_shows_what_an_operator_asks_first():
    titles = {panel["title"] for panel in json.loads(DASHBOARD.read_text())["panels"]}
    for wanted in (
        "Open WebSockets per process",
        "Handshakes /s",
        "Closes /s by code",
        "Handler time p99 by consumer",
        "Sync pool threads",
        "Layer call p99",
        "Layer queues",
        "Messages dropped /s by reason",
        "Redis outages",
        "Slow clients dropped /s",
    ):
        assert wanted in titles, wanted


@needs_nginx
def test_nginx_never_passes_metrics_on(site):  # noqa: F811
    status, _, _ = site.get("/metrics")
    assert status == 404
    assert site.requests() == []
