"""The Grafana dashboard and its provisioning: every query is valid PromQL, reads the provisioned
Prometheus, and names only metrics that genserve's processes really export (checked against a
running stack's /metrics)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from genserve.commands.serve import RoleName
from tests.deploy.test_container import COMPOSE_SPEC, promtool
from tests.test_stack import start_up

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = json.loads((GRAFANA / "dashboards" / "genserve.json").read_text())
ROLES = {r.value for r in RoleName}

# PromQL words that are not metric names: aggregations, keywords, set operators.
PROMQL_WORDS = {
    *("sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk"),
    *("quantile", "limitk", "limit_ratio", "by", "without", "on", "ignoring", "group_left", "group_right"),
    *("bool", "and", "or", "unless", "offset", "atan2", "inf", "nan"),
}
# A family's series are named by these suffixes: histograms' buckets, sums and counts, counters' totals.
SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        yield from panels(item.get("panels", []))


def queries() -> list[str]:
    return [t["expr"] for p in panels(DASHBOARD["panels"]) for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # strings (label values, regexes)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery windows
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", text):
        word = match.group(0)
        if word.lower() in PROMQL_WORDS or text[match.end() :].lstrip().startswith("("):
            continue  # a keyword or a function call
        names.add(word)
    return names


def test_metric_names_are_read_out_of_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (method, le) (rate(genserve_request_seconds_bucket{role="gateway", '
        'code!~"OK|x"}[$__rate_interval]))) / on (method) group_left max(genserve_jobs_queued) offset 5m '
        "+ 1e3 * sum(changes(process_start_time_seconds[1h])) > bool 0"
    )
    assert metric_names(expr) == {
        "genserve_request_seconds_bucket",
        "genserve_jobs_queued",
        "process_start_time_seconds",
    }


def test_dashboard_reads_the_provisioned_prometheus() -> None:
    (source,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in COMPOSE_SPEC["services"]
    (provider,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "genserve.yml").read_text())["providers"]
    mounts = COMPOSE_SPEC["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    ids = [p["id"] for p in panels(DASHBOARD["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(DASHBOARD["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel["title"]
    for expr in queries():
        for role in re.findall(r'role="([^"]*)"', expr):
            assert role in ROLES, f"{expr}: no role {role!r} (deploy/prometheus/prometheus.yml sets role)"


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses PromQL in rule files: each query becomes a recording rule.
    rules = [
        {"record": f"dashboard:query{i}", "expr": expr.replace("$__rate_interval", "1m").replace("$__range", "1h")}
        for i, expr in enumerate(queries())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout, result.stdout


def exposition(text: str) -> tuple[dict[str, str], set[str]]:
    """A /metrics page's families (name → type, from `# TYPE`) and the names of its samples."""
    families = {}
    samples = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            families[name] = kind
        elif line and not line.startswith("#"):
            samples.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return families, samples


def exported(name: str, families: dict[str, str], samples: set[str]) -> bool:
    """Whether `name` is a series of the page: a sample, or a family whose labelled children have
    no samples yet (its `# HELP`/`# TYPE` lines are there all the same)."""
    if name in samples or name in families:
        return True
    for suffix in SUFFIXES:
        family = name.removesuffix(suffix)
        if family != name and family in families:
            return suffix != "_bucket" or families[family] == "histogram"
    return False


def test_every_metric_the_dashboard_queries_is_exported_by_a_running_stack(tmp_path: Path) -> None:
    wanted = set().union(*(metric_names(expr) for expr in queries()))
    assert len(wanted) > 20, wanted
    process, ports, output = start_up(tmp_path)
    try:
        pages = {}
        for role in ROLES:
            url = f"http://127.0.0.1:{ports[f'{role.upper()}_METRICS']}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:
                pages[role] = exposition(response.read().decode())
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
        output.append(rest)
    assert process.returncode == 0, "".join(output)
    for role, (_, samples) in pages.items():
        # the restart and replica panels need it from every role
        assert "process_start_time_seconds" in samples, role
    missing = {
        name for name in wanted if not any(exported(name, families, samples) for families, samples in pages.values())
    }
    assert not missing, f"the dashboard queries metrics no genserve process exports: {sorted(missing)}"
