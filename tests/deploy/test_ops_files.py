"""Static checks of the monitoring files: the Grafana dashboard, the Prometheus
alert rules and the example Prometheus configuration.

Every PromQL expression may name only the series that orderbot/runtime/metrics.py
exports (so renaming a metric or a label there breaks these tests) and may
filter or group only by labels those series carry. Where `promtool` is
installed (Debian package `prometheus`) it parses the rules, the config and
every dashboard query, and unit-tests the alerts against synthetic series;
those tests are skipped without it, and a lighter PromQL check (balanced
brackets, known functions) always runs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import orderbot.runtime.metrics
from orderbot.config.settings import Settings
from tests.deploy.test_deploy_files import SYSTEMD_DIR, read_unit, unit_environment, unit_value

REPO = Path(__file__).resolve().parents[2]
DASHBOARD_FILE = REPO / "deploy" / "grafana" / "orderbot-dashboard.json"
ALERTS_FILE = REPO / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_FILE = REPO / "deploy" / "prometheus" / "prometheus.yml"
RUNBOOK = REPO / "docs" / "operations.md"

DATASOURCE_UID = "${DS_PROMETHEUS}"
DASHBOARD_ROWS = ["Ingest", "Processing", "Replies & outbox", "Queues"]
SCRAPE_JOBS = ("orderbot-server", "orderbot-worker", "orderbot-outbox-worker")

# The alerts the seeds ask for, plus the operational ones added with them.
REQUIRED_ALERTS = frozenset(
    {
        "OrderbotDLQNotEmpty",
        "OrderbotProcessingErrorRate",
        "OrderbotWebhookErrorRate",
        "OrderbotMessageAgeHigh",
        "OrderbotMessagesNotConsumed",
        "OrderbotOutboxBacklog",
        "OrderbotEdgeSpoolNotEmpty",
        "OrderbotEdgeSpoolFull",
    }
)
SEVERITIES = frozenset({"warning", "critical"})

# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
# Series Prometheus itself writes for every target.
PROMETHEUS_SERIES: dict[str, frozenset[str]] = {"up": frozenset()}

SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}

PROMQL_FUNCTIONS = frozenset(
    {
        # aggregation operators
        *("sum", "min", "max", "avg", "group", "stddev", "stdvar", "count"),
        *("count_values", "bottomk", "topk", "quantile"),
        # functions
        *("abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max"),
        *("clamp_min", "day_of_month", "day_of_week", "day_of_year", "days_in_month"),
        *("delta", "deriv", "exp", "floor", "histogram_quantile", "holt_winters", "hour"),
        *("idelta", "increase", "irate", "label_join", "label_replace", "ln", "log2"),
        *("log10", "minute", "month", "predict_linear", "rate", "resets", "round"),
        *("scalar", "sgn", "sort", "sort_desc", "sqrt", "time", "timestamp", "vector"),
        *("year", "avg_over_time", "min_over_time", "max_over_time", "sum_over_time"),
        *("count_over_time", "quantile_over_time", "stddev_over_time", "stdvar_over_time"),
        *("last_over_time", "present_over_time"),
    }
)
PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}
)


# --- the metrics orderbot exports -------------------------------------------------------------


def exported_series() -> dict[str, frozenset[str]]:
    """Every series name orderbot/runtime/metrics.py exposes -> its label names.

    Built from the module's metric objects, so it follows a rename there.
    """
    series: dict[str, frozenset[str]] = {}
    for value in vars(orderbot.runtime.metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        labels = frozenset(value._labelnames)
        for family in value.describe():
            for suffix in SAMPLE_SUFFIXES[family.type]:
                series[family.name + suffix] = labels
    return series


SERIES = exported_series()
KNOWN_SERIES = {**SERIES, **PROMETHEUS_SERIES}


# --- a small PromQL reader --------------------------------------------------------------------

_STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`")
_RANGE = re.compile(r"\[([^\]]*)\]")
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?")


@dataclass(frozen=True)
class Query:
    """What one PromQL expression refers to."""

    expr: str
    names: frozenset[str]  # series names
    selectors: tuple[tuple[str | None, frozenset[str]], ...]  # (name, matched labels)
    grouping: frozenset[str]  # labels in by/without/on/ignoring/group_* clauses
    functions: frozenset[str]
    ranges: tuple[str, ...]

    @classmethod
    def parse(cls, expr: str) -> Query:
        text = _STRING.sub('""', expr)
        ranges = tuple(_RANGE.findall(text))
        text = _RANGE.sub("", text)
        selectors = tuple(
            (match.group(1), frozenset(_MATCHER.findall(match.group(2))))
            for match in _SELECTOR.finditer(text)
        )
        text = _SELECTOR.sub(lambda match: match.group(1) or "", text)
        grouping = frozenset(
            label.strip()
            for match in _GROUPING.finditer(text)
            for label in match.group(1).split(",")
            if label.strip()
        )
        text = _GROUPING.sub("", text)
        names: set[str] = set()
        functions: set[str] = set()
        for match in _IDENTIFIER.finditer(text):
            word, call = match.groups()
            if call:
                functions.add(word)
            elif word.lower() not in PROMQL_KEYWORDS:
                names.add(word)
        return cls(expr, frozenset(names), selectors, grouping, frozenset(functions), ranges)

    def unknown_names(self) -> set[str]:
        return set(self.names - KNOWN_SERIES.keys())

    def unknown_labels(self) -> set[str]:
        """Labels matched or grouped by that none of the referenced series has."""
        unknown: set[str] = set()
        for name, labels in self.selectors:
            if name is None or name not in KNOWN_SERIES:
                unknown |= {f"{name}{{{label}}}" for label in labels}
                continue
            unknown |= {f"{name}{{{label}}}" for label in labels - allowed_labels(name)}
        available = frozenset().union(*(allowed_labels(name) for name in self.names))
        unknown |= {f"by/on ({label})" for label in self.grouping - available}
        return unknown


def allowed_labels(name: str) -> frozenset[str]:
    labels = KNOWN_SERIES.get(name, frozenset()) | TARGET_LABELS
    return labels | {"le"} if name.endswith("_bucket") else labels


def balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in _STRING.sub('""', expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


# --- the files --------------------------------------------------------------------------------


def load_dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels inside collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries() -> list[tuple[str, str]]:
    return [
        (f"panel {panel['title']!r} {target['refId']}", target["expr"])
        for panel in all_panels(load_dashboard())
        for target in panel.get("targets", [])
    ]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS_FILE)["groups"] for rule in group["rules"]]


def alert_queries() -> list[tuple[str, str]]:
    return [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]


QUERY_SOURCES = {"dashboard": dashboard_queries, "alerts": alert_queries}


def scrape_jobs() -> dict[str, list[str]]:
    """job_name -> its static targets, from the example Prometheus config."""
    return {
        job["job_name"]: [
            target for static in job.get("static_configs", []) for target in static["targets"]
        ]
        for job in load_yaml(PROMETHEUS_FILE)["scrape_configs"]
    }


def target_ports(job: str) -> list[int]:
    return [int(target.rsplit(":", 1)[1]) for target in scrape_jobs()[job]]


# --- promtool ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`)")
    return path


def run_promtool(promtool: str, *args: str | Path, cwd: Path = REPO) -> None:
    done = subprocess.run(
        [promtool, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def check_alert(
    promtool: str,
    tmp_path: Path,
    alertname: str,
    series: dict[str, str],
    expected: dict[str, list[dict[str, str]]],
    interval: str = "1m",
) -> None:
    """`promtool test rules`: feed `series` and expect, at each evaluation time, exactly
    the firing `alertname` alerts with these labels (alertname itself is implied).

    Annotations are dropped from the rules first: they are templates of the value,
    checked by `promtool check rules`, and would make every expectation brittle.
    """
    rules = load_yaml(ALERTS_FILE)
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": interval,
                "input_series": [
                    {"series": name, "values": values} for name, values in series.items()
                ],
                "alert_rule_test": [
                    {
                        "eval_time": at,
                        "alertname": alertname,
                        "exp_alerts": [{"exp_labels": labels} for labels in alerts],
                    }
                    for at, alerts in expected.items()
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test), encoding="utf-8")
    run_promtool(promtool, "test", "rules", "test.yml", cwd=tmp_path)


# --- PromQL of the dashboard and the alerts ---------------------------------------------------


@pytest.mark.parametrize("source", QUERY_SOURCES)
def test_queries_reference_only_metrics_defined_in_orderbot_metrics(source: str) -> None:
    unknown = {
        where: sorted(found)
        for where, expr in QUERY_SOURCES[source]()
        if (found := Query.parse(expr).unknown_names())
    }
    assert unknown == {}, f"not exported by orderbot/runtime/metrics.py: {unknown}"


@pytest.mark.parametrize("source", QUERY_SOURCES)
def test_queries_use_only_labels_the_metrics_carry(source: str) -> None:
    unknown = {
        where: sorted(found)
        for where, expr in QUERY_SOURCES[source]()
        if (found := Query.parse(expr).unknown_labels())
    }
    assert unknown == {}


@pytest.mark.parametrize("source", QUERY_SOURCES)
def test_queries_call_only_known_promql_functions(source: str) -> None:
    unknown = {
        where: sorted(Query.parse(expr).functions - PROMQL_FUNCTIONS)
        for where, expr in QUERY_SOURCES[source]()
        if Query.parse(expr).functions - PROMQL_FUNCTIONS
    }
    assert unknown == {}


@pytest.mark.parametrize("source", QUERY_SOURCES)
def test_queries_have_balanced_brackets(source: str) -> None:
    assert [where for where, expr in QUERY_SOURCES[source]() if not balanced(expr)] == []


@pytest.mark.parametrize("source", QUERY_SOURCES)
def test_histogram_quantiles_keep_the_le_label(source: str) -> None:
    for where, expr in QUERY_SOURCES[source]():
        query = Query.parse(expr)
        if any(name.endswith("_bucket") for name in query.names):
            assert "histogram_quantile" in query.functions, where
            assert "le" in query.grouping, where


def test_the_parser_sees_a_renamed_metric() -> None:
    # Guards the checks above against a reader that finds nothing.
    query = Query.parse('sum by (queue) (rate(orderbot_no_such_total{queue=~".*dlq"}[5m]))')
    assert query.unknown_names() == {"orderbot_no_such_total"}
    assert query.functions == {"sum", "rate"}
    assert query.grouping == {"queue"}


def test_every_exported_metric_is_on_the_dashboard() -> None:
    used = {name for _, expr in dashboard_queries() for name in Query.parse(expr).names}
    missing = {
        family.name
        for value in vars(orderbot.runtime.metrics).values()
        if isinstance(value, MetricWrapperBase)
        for family in value.describe()
        if not any(family.name + suffix in used for suffix in SAMPLE_SUFFIXES[family.type])
    }
    assert missing == set()


# --- the Grafana dashboard --------------------------------------------------------------------


def test_dashboard_uses_a_current_schema_version() -> None:
    assert load_dashboard()["schemaVersion"] >= 38


def test_dashboard_has_a_prometheus_datasource_variable() -> None:
    variables = {var["name"]: var for var in load_dashboard()["templating"]["list"]}
    datasource = variables["DS_PROMETHEUS"]
    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    for panel in all_panels(load_dashboard()):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE_UID, panel["title"]


def test_dashboard_has_job_and_instance_variables_chained() -> None:
    variables = {var["name"]: var for var in load_dashboard()["templating"]["list"]}
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == DATASOURCE_UID
        assert variables[name]["includeAll"] is True
    assert '$job"' in variables["instance"]["definition"]


def test_dashboard_variables_query_exported_metrics() -> None:
    for var in load_dashboard()["templating"]["list"]:
        if var["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["definition"])
        assert match is not None, var["definition"]
        query = Query.parse(match.group(1))
        assert query.unknown_names() == set()
        assert match.group(2) in allowed_labels(next(iter(query.names)))


def test_every_dashboard_selector_filters_by_job_and_instance() -> None:
    for where, expr in dashboard_queries():
        for name, labels in Query.parse(expr).selectors:
            assert {"job", "instance"} <= labels, f"{where}: {name}"
        assert 'job=~"$job"' in expr, where
        assert 'instance=~"$instance"' in expr, where


def test_dashboard_rates_use_five_minute_windows() -> None:
    for where, expr in dashboard_queries():
        assert set(Query.parse(expr).ranges) <= {"5m"}, where


def test_dashboard_rows_are_ingest_processing_replies_and_queues() -> None:
    rows = [panel["title"] for panel in load_dashboard()["panels"] if panel["type"] == "row"]
    assert rows == DASHBOARD_ROWS


def test_every_row_holds_panels() -> None:
    current: str | None = None
    counts: dict[str, int] = {}
    for panel in load_dashboard()["panels"]:
        if panel["type"] == "row":
            current = panel["title"]
            counts[current] = len(panel.get("panels", []))
        else:
            assert current is not None, f"{panel['title']!r} sits above the first row"
            counts[current] += 1
    assert all(counts.values()), counts


def test_dashboard_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in all_panels(load_dashboard())]
    assert len(ids) == len(set(ids))


def test_dashboard_panels_do_not_overlap_and_fit_the_grid() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in load_dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, panel["title"]
        taken |= cells


def test_dashboard_has_an_error_rate_stat() -> None:
    stats = [panel for panel in all_panels(load_dashboard()) if panel["type"] == "stat"]
    assert any("error rate" in panel["title"].lower() for panel in stats)


def test_queue_depth_panel_shows_every_queue_by_name() -> None:
    panels = [
        panel
        for panel in all_panels(load_dashboard())
        for target in panel.get("targets", [])
        if "orderbot_queue_messages" in Query.parse(target["expr"]).names
    ]
    assert panels
    assert all("{{queue}}" in target["legendFormat"] for target in panels[0]["targets"])


def test_promtool_parses_every_dashboard_query(promtool: str, tmp_path: Path) -> None:
    # Recording rules are the one place promtool parses a bare expression offline.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{number}", "expr": expr}
                    for number, (_, expr) in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    run_promtool(promtool, "check", "rules", tmp_path / "dashboard.yml")


# --- the alert rules --------------------------------------------------------------------------


def test_alert_rules_are_groups_of_named_rules() -> None:
    groups = load_yaml(ALERTS_FILE)["groups"]
    assert groups
    for group in groups:
        assert set(group) == {"name", "rules"}
        assert group["rules"]
        for rule in group["rules"]:
            assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule


def test_alert_names_are_unique() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))


def test_the_seed_and_operational_alerts_are_defined() -> None:
    assert {rule["alert"] for rule in alert_rules()} >= REQUIRED_ALERTS


def test_every_alert_has_a_severity() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]


def test_every_alert_has_summary_description_and_runbook() -> None:
    for rule in alert_rules():
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}, rule["alert"]
        assert all(text.strip() for text in rule["annotations"].values()), rule["alert"]


def test_alert_runbooks_point_to_the_alerts_own_heading() -> None:
    for rule in alert_rules():
        runbook = f"docs/operations.md#{rule['alert'].lower()}"
        assert rule["annotations"]["runbook"] == runbook


def test_alert_runbook_anchors_exist_in_the_runbook() -> None:
    headings = [
        line.lstrip("#").strip()
        for line in RUNBOOK.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    ]
    if "Alerts" not in headings:
        pytest.skip("docs/operations.md has no Alerts section yet")
    anchors = {github_anchor(heading) for heading in headings}
    missing = [
        rule["annotations"]["runbook"]
        for rule in alert_rules()
        if rule["annotations"]["runbook"].split("#", 1)[1] not in anchors
    ]
    assert missing == []


def test_alerts_wait_before_firing() -> None:
    for rule in alert_rules():
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]


def test_alerts_name_only_jobs_the_example_config_scrapes() -> None:
    jobs = scrape_jobs()
    for rule in alert_rules():
        for match in re.finditer(r'job(=~|=)"([^"]*)"', rule["expr"]):
            operator, value = match.groups()
            pattern = value if operator == "=~" else re.escape(value)
            assert any(re.fullmatch(pattern, job) for job in jobs), (rule["alert"], value)


def test_promtool_check_rules_accepts_the_alerts(promtool: str) -> None:
    run_promtool(promtool, "check", "rules", ALERTS_FILE)


def test_dlq_alert_fires_after_five_minutes_above_ten(promtool: str, tmp_path: Path) -> None:
    check_alert(
        promtool,
        tmp_path,
        "OrderbotDLQNotEmpty",
        {
            'orderbot_queue_messages{job="orderbot-worker",instance="w1",queue="dlq"}': "0x4 11x20",
            'orderbot_queue_messages{job="orderbot-worker",instance="w1",queue="outbox"}': "50x25",
        },
        {
            "4m": [],
            "9m": [],
            "11m": [{"severity": "warning", "queue": "dlq"}],
        },
    )


def test_outbox_alert_waits_fifteen_minutes_and_ignores_the_delay_tiers(
    promtool: str, tmp_path: Path
) -> None:
    check_alert(
        promtool,
        tmp_path,
        "OrderbotOutboxBacklog",
        {
            'orderbot_queue_messages{job="orderbot-outbox-worker",instance="o",queue="outbox"}': (
                "500x20"
            ),
            'orderbot_queue_messages{job="orderbot-outbox-worker",instance="o",'
            'queue="outbox.delay.60000ms"}': "900x20",
        },
        {"14m": [], "16m": [{"severity": "warning", "queue": "outbox"}]},
    )


def test_no_consumer_alert_fires_when_every_worker_is_down(promtool: str, tmp_path: Path) -> None:
    check_alert(
        promtool,
        tmp_path,
        "OrderbotMessagesNotConsumed",
        {
            'up{job="orderbot-worker",instance="localhost:9821"}': "1x4 0x10",
            'up{job="orderbot-worker",instance="localhost:9822"}': "1x4 0x10",
        },
        {"4m": [], "6m": [], "8m": [{"severity": "critical"}]},
    )


def test_no_consumer_alert_fires_when_messages_wait_without_a_prefetch(
    promtool: str, tmp_path: Path
) -> None:
    check_alert(
        promtool,
        tmp_path,
        "OrderbotMessagesNotConsumed",
        {
            'up{job="orderbot-worker",instance="localhost:9821"}': "1x10",
            'orderbot_queue_messages{job="orderbot-server",instance="s",queue="messages"}': "7x10",
        },
        {"1m": [], "3m": [{"severity": "critical"}]},
    )


def test_no_consumer_alert_stays_quiet_while_a_worker_consumes(
    promtool: str, tmp_path: Path
) -> None:
    check_alert(
        promtool,
        tmp_path,
        "OrderbotMessagesNotConsumed",
        {
            'up{job="orderbot-worker",instance="localhost:9821"}': "1x10",
            'orderbot_queue_messages{job="orderbot-worker",instance="w",queue="messages"}': "7x10",
            'orderbot_consumer_prefetch{job="orderbot-worker",instance="w",queue="messages"}': (
                "10x10"
            ),
        },
        {"5m": []},
    )


def test_no_consumer_alert_stays_quiet_while_a_worker_consumes_the_partitions(
    promtool: str, tmp_path: Path
) -> None:
    check_alert(
        promtool,
        tmp_path,
        "OrderbotMessagesNotConsumed",
        {
            'up{job="orderbot-worker",instance="localhost:9821"}': "1x10",
            'orderbot_queue_messages{job="orderbot-worker",instance="w",queue="messages"}': "7x10",
            'orderbot_consumer_prefetch{job="orderbot-worker",instance="w",'
            'queue="messages.3"}': "10x10",
        },
        {"5m": []},
    )


def test_unowned_partition_alert_fires_for_the_partition_nobody_holds(
    promtool: str, tmp_path: Path
) -> None:
    check_alert(
        promtool,
        tmp_path,
        "OrderbotPartitionUnowned",
        {
            'orderbot_partition_messages{job="orderbot-worker",instance="w",'
            'partition="messages.0"}': "5x10",
            'orderbot_partition_messages{job="orderbot-worker",instance="w",'
            'partition="messages.1"}': "5x10",
            'orderbot_partition_owned{job="orderbot-worker",instance="w",'
            'partition="messages.0"}': "1x10",
            'orderbot_partition_owned{job="orderbot-worker",instance="w",'
            'partition="messages.1"}': "0x10",
        },
        {"1m": [], "3m": [{"severity": "critical", "partition": "messages.1"}]},
    )


def test_messages_backlog_alert_fires_while_the_queue_keeps_growing(
    promtool: str, tmp_path: Path
) -> None:
    check_alert(
        promtool,
        tmp_path,
        "OrderbotMessagesBacklog",
        {'orderbot_queue_messages{job="orderbot-worker",instance="w",queue="messages"}': "0+50x30"},
        {"5m": [], "15m": [{"severity": "warning", "queue": "messages"}]},
    )


def test_processing_error_rate_alert_fires_above_five_percent(
    promtool: str, tmp_path: Path
) -> None:
    check_alert(
        promtool,
        tmp_path,
        "OrderbotProcessingErrorRate",
        {
            'orderbot_messages_processed_total{job="orderbot-worker",instance="w",'
            'queue="messages",outcome="ok"}': "0+100x20",
            'orderbot_messages_failed_total{job="orderbot-worker",instance="w",'
            'queue="messages"}': "0+10x20",
        },
        {"10m": [{"severity": "critical", "queue": "messages"}]},
    )


def test_processing_error_rate_alert_stays_quiet_below_five_percent(
    promtool: str, tmp_path: Path
) -> None:
    check_alert(
        promtool,
        tmp_path,
        "OrderbotProcessingErrorRate",
        {
            'orderbot_messages_processed_total{job="orderbot-worker",instance="w",'
            'queue="messages",outcome="ok"}': "0+100x20",
            'orderbot_messages_failed_total{job="orderbot-worker",instance="w",'
            'queue="messages"}': "0+1x20",
            'orderbot_messages_dead_lettered_total{job="orderbot-worker",instance="w",'
            'queue="messages",reason="poison"}': "0+1x20",
        },
        {"10m": []},
    )


def test_processing_error_rate_alert_fires_when_nothing_was_ever_processed(
    promtool: str, tmp_path: Path
) -> None:
    check_alert(
        promtool,
        tmp_path,
        "OrderbotProcessingErrorRate",
        {
            'orderbot_messages_failed_total{job="orderbot-worker",instance="w",'
            'queue="messages"}': "0+5x20",
        },
        {"10m": [{"severity": "critical", "queue": "messages"}]},
    )


def test_message_age_alert_fires_when_p99_exceeds_ten_seconds(
    promtool: str, tmp_path: Path
) -> None:
    bucket = 'orderbot_message_age_seconds_bucket{job="orderbot-worker",instance="w",le="%s"}'
    check_alert(
        promtool,
        tmp_path,
        "OrderbotMessageAgeHigh",
        {
            bucket % "5": "0x20",
            bucket % "10": "0x20",
            bucket % "30": "0+60x20",
            bucket % "+Inf": "0+60x20",
        },
        {"3m": [], "10m": [{"severity": "warning"}]},
    )


def test_edge_spool_alert_fires_on_two_minutes_of_spooled_messages(
    promtool: str, tmp_path: Path
) -> None:
    check_alert(
        promtool,
        tmp_path,
        "OrderbotEdgeSpoolNotEmpty",
        {'orderbot_spool_messages{job="orderbot-server",instance="s"}': "0x4 5x20"},
        {"2m": [], "7m": [{"severity": "warning", "instance": "s"}]},
    )


def test_edge_spool_full_alert_fires_on_refused_webhooks(promtool: str, tmp_path: Path) -> None:
    check_alert(
        promtool,
        tmp_path,
        "OrderbotEdgeSpoolFull",
        {
            'orderbot_webhooks_rejected_total{job="orderbot-server",instance="s",'
            'provider="twilio",reason="spool_full"}': "0x20 1+1x40",
        },
        {"5m": [], "8m": [{"severity": "critical", "provider": "twilio"}]},
        interval="15s",
    )


def test_recovered_messages_alert_fires_after_ten_minutes_of_recoveries(
    promtool: str, tmp_path: Path
) -> None:
    check_alert(
        promtool,
        tmp_path,
        "OrderbotMessagesRecovered",
        {
            'orderbot_reconcile_recovered_total{job="orderbot-outbox-worker",instance="o",'
            'provider="twilio"}': "0+1x30",
        },
        {"5m": [], "20m": [{"severity": "warning", "provider": "twilio"}]},
    )


def test_disabled_chat2desk_webhook_alert_fires_per_tenant(promtool: str, tmp_path: Path) -> None:
    check_alert(
        promtool,
        tmp_path,
        "OrderbotChat2DeskWebhookDisabled",
        {
            'orderbot_chat2desk_webhooks_disabled{job="orderbot-outbox-worker",instance="o",'
            'tenant="acme"}': "0x2 1x10",
        },
        {"2m": [], "6m": [{"severity": "critical", "tenant": "acme"}]},
    )


def test_webhook_error_rate_alert_fires_on_server_side_rejections(
    promtool: str, tmp_path: Path
) -> None:
    check_alert(
        promtool,
        tmp_path,
        "OrderbotWebhookErrorRate",
        {
            'orderbot_webhooks_received_total{job="orderbot-server",instance="s",'
            'provider="chat2desk"}': "0+100x20",
            'orderbot_webhooks_rejected_total{job="orderbot-server",instance="s",'
            'provider="chat2desk",reason="spool_full"}': "0+10x20",
        },
        {"10m": [{"severity": "critical", "provider": "chat2desk"}]},
    )


def test_webhook_error_rate_alert_ignores_rejections_the_client_caused(
    promtool: str, tmp_path: Path
) -> None:
    check_alert(
        promtool,
        tmp_path,
        "OrderbotWebhookErrorRate",
        {
            'orderbot_webhooks_received_total{job="orderbot-server",instance="s",'
            'provider="chat2desk"}': "0+100x20",
            'orderbot_webhooks_rejected_total{job="orderbot-server",instance="s",'
            'provider="chat2desk",reason="bad_token"}': "0+50x20",
        },
        {"10m": []},
    )


# --- the example Prometheus configuration -----------------------------------------------------


def test_prometheus_config_loads_the_alert_rules() -> None:
    config = load_yaml(PROMETHEUS_FILE)
    rule_files = [PROMETHEUS_FILE.parent / name for name in config["rule_files"]]
    assert ALERTS_FILE in rule_files


def test_prometheus_config_scrapes_server_workers_and_outbox_worker() -> None:
    jobs = scrape_jobs()
    assert set(jobs) == set(SCRAPE_JOBS)
    assert all(jobs.values())


def test_prometheus_config_scrapes_the_metrics_path() -> None:
    for job in load_yaml(PROMETHEUS_FILE)["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"


def test_prometheus_config_scrapes_the_server_on_its_http_port() -> None:
    assert target_ports("orderbot-server") == [Settings.model_fields["http_port"].default]


def test_prometheus_config_scrapes_the_outbox_worker_where_systemd_puts_it() -> None:
    unit = read_unit(SYSTEMD_DIR / "orderbot-outbox-worker.service")
    assert target_ports("orderbot-outbox-worker") == [
        int(unit_environment(unit)["OUTBOX_METRICS_PORT"])
    ]


def test_prometheus_config_scrapes_workers_from_the_default_instance_up() -> None:
    unit = read_unit(SYSTEMD_DIR / "orderbot-worker@.service")
    first = int(unit_value(unit, "Install", "DefaultInstance"))
    ports = target_ports("orderbot-worker")
    assert ports == list(range(first, first + len(ports)))
    assert len(ports) >= 2


def test_promtool_check_config_accepts_the_example(promtool: str) -> None:
    run_promtool(promtool, "check", "config", PROMETHEUS_FILE)
