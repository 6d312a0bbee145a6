"""deploy/: the CloudFormation template lints clean and agrees with the code it deploys; the image
runs `processor daemon` under tini as a non-root user."""
from __future__ import annotations

import fnmatch
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any

import yaml

from processor.analytics import layout
from processor.cli import main
from processor.config import Settings, load_settings
from processor.daemon import ENVIRONMENT_OVERRIDES, read_properties
from processor.dynamodb.deadletter_table import DynamoDeadLetters
from processor.dynamodb.item import KEY, TTL
from processor.adapters.jsonpath import compile_path
from processor.adapters.genesys import GenesysAdapter
from processor.engine import ShardEngine
from processor.store import ShardStore
from tests.conftest import detail_event, records, sample, wrap_websocket_frame

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "template.yaml"
#: the task's retention variables, the template parameter each comes from, and the setting it sets
RETENTION_VARIABLES = {
    "PROCESSOR_RETENTION_DAYS": ("ConversationRetentionDays", "retention_days"),
    "PROCESSOR_INACTIVE_RETENTION_DAYS": ("InactiveConversationRetentionDays", "inactive_retention_days"),
    "PROCESSOR_DEAD_LETTER_RETENTION_DAYS": ("DeadLetterRetentionDays", "dead_letter_retention_days"),
    "PROCESSOR_METRICS_RETENTION_DAYS": ("MetricsRetentionDays", "metrics_retention_days"),
}
#: the DynamoDB tables of the template (logical id) and the names the tests below give them
TABLES = {"ConversationTable": "conversations", "DeadLetterTable": "dead-letters", "MetricsTable": "metrics"}
#: DynamoDB actions that change data or tables: none of them on the metrics table for readers
WRITE_ACTIONS = re.compile(r"dynamodb:(\*|Put|Update|Delete|BatchWrite|TransactWrite|Create|Restore|Import|"
                           r"PartiQL(Insert|Update|Delete))")


class _CloudFormationLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref, !Sub, …) read as plain values."""


_CloudFormationLoader.add_multi_constructor("!", lambda loader, tag, node: (
    loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else
    loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode) else loader.construct_mapping(node)))


def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=_CloudFormationLoader)


def test_cfn_lint_is_clean():
    cfn_lint = shutil.which("cfn-lint", path=os.path.dirname(sys.executable))
    assert cfn_lint, "cfn-lint is in the test extra"
    result = subprocess.run([cfn_lint, str(TEMPLATE)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_task_stops_slower_than_the_daemon_shuts_down_and_gets_the_settings_the_code_reads():
    resources = template()["Resources"]
    container = resources["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    grace_ms = int(read_properties(ROOT / "kcl.properties")["shutdownGraceMillis"])
    assert container["StopTimeout"] * 1000 > grace_ms  # children flush and checkpoint before SIGKILL
    environment = {entry["Name"]: "x" for entry in container["Environment"]}
    assert set(ENVIRONMENT_OVERRIDES) <= set(environment)
    environment.update({name: "7" for name in RETENTION_VARIABLES})  # numbers, not "x"
    settings = load_settings(environ={**environment, "PROCESSOR_TABLE": "t", "PROCESSOR_DEAD_LETTER_TABLE": "d"})
    assert (settings.table, settings.dead_letter_table, settings.retention_days) == ("t", "d", 7.0)
    table = resources["ConversationTable"]["Properties"]
    assert table["KeySchema"][0]["AttributeName"] == KEY and table["TimeToLiveSpecification"]["AttributeName"] == TTL


def container_environment() -> dict[str, Any]:
    container = template()["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    return {entry["Name"]: entry["Value"] for entry in container["Environment"]}


def test_every_retention_is_a_parameter_passed_to_the_task_and_dead_letters_expire():
    """Dead letters hold raw payloads (PII): their table expires them on `_ttl` like the conversations."""
    parsed = template()
    dead_letters = parsed["Resources"]["DeadLetterTable"]["Properties"]
    assert dead_letters["TimeToLiveSpecification"] == {"AttributeName": TTL, "Enabled": True}
    environment, defaults = container_environment(), Settings()
    for variable, (parameter, setting) in RETENTION_VARIABLES.items():
        assert environment[variable] == parameter  # !Ref, read as the plain name
        assert parsed["Parameters"][parameter]["Default"] == getattr(defaults, setting)


def test_the_task_retention_variables_are_read_by_the_settings():
    # NEEDS processor/config.py: load_settings must read PROCESSOR_METRICS_RETENTION_DAYS into
    # `[analytics] retention_days` (fails until it does; until then the task's value is ignored)
    environ = {variable: str(n) for n, variable in enumerate(RETENTION_VARIABLES, 3)}
    settings = load_settings(environ=environ)
    assert {variable: getattr(settings, setting) for variable, (_, setting) in RETENTION_VARIABLES.items()} == {
        variable: float(value) for variable, value in environ.items()}


def test_eventbridge_partition_keys_are_the_conversation_ids_the_adapter_reads():
    resources = template()["Resources"]
    adapter = GenesysAdapter()
    cases = {"DetailEventsRule": sample("customer.end"),
             "SnapshotEventsRule": wrap_websocket_frame(sample("callBackConnectMsg"))}
    for rule, envelope in cases.items():
        path = resources[rule]["Properties"]["Targets"][0]["KinesisParameters"]["PartitionKeyPath"]
        assert compile_path(path)(envelope) == adapter.partition_key(envelope) != ""


def test_the_image_runs_the_daemon_under_tini_as_a_non_root_user_with_official_kclpy():
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.MULTILINE)) == 2  # build stage, runtime stage
    assert '".[kcl]"' in dockerfile  # the official amazon-kclpy (pyproject extra `kcl`)
    assert 'ENTRYPOINT ["/usr/bin/tini", "--"]' in dockerfile
    assert re.search(r"^USER processor$", dockerfile, re.MULTILINE)
    assert 'CMD ["processor", "daemon"' in dockerfile
    # the wheel compiles the hot path (gcc in the build stage), and the build refuses a partial compile
    assert "setup.py" in dockerfile and " gcc " in dockerfile and "assert compiled_modules() == list(HOT_PATH)" in dockerfile


def test_a_module_taken_off_the_hot_path_leaves_no_earlier_build_to_ship(tmp_path):
    """bdist_wheel packs all of build/lib: an earlier build of a module no longer compiled would ship
    and shadow its source (hostile review: a wheel built from a checkout did)."""
    spec = importlib.util.spec_from_file_location("processor_setup", ROOT / "setup.py")
    setup_py = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup_py)  # setup() runs only when setuptools runs the file
    built = ["processor/engine", "processor/limits", "processor/adapters/__init__"]
    for module in built:
        (tmp_path / module).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"{module}{EXTENSION_SUFFIXES[0]}").write_bytes(b"")
    (tmp_path / "processor" / "limits.py").write_text("")
    removed = setup_py.remove_stale_builds(str(tmp_path), {"processor.engine", "processor.adapters"})
    assert removed == ["processor.limits"]
    left = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file())
    assert left == sorted(["processor/limits.py"] + [f"{module}{EXTENSION_SUFFIXES[0]}" for module in built
                                                     if module != "processor/limits"])
    assert {setup_py.extension(module).name for module in setup_py.HOT_PATH} >= {"processor.engine",
                                                                                 "processor.adapters.__init__"}


def test_processor_daemon_renders_the_tasks_stream_application_and_region(tmp_path, monkeypatch, capsys):
    rendered = tmp_path / "kcl.properties"
    for name, value in {"KCL_STREAM_NAME": "prod-events", "KCL_APPLICATION_NAME": "prod-processor",
                        "AWS_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(name, value)
    code = main(["daemon", "--properties", str(ROOT / "kcl.properties"), "--rendered", str(rendered), "--dry-run"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert not rendered.exists()  # a dry run writes nothing
    shown = tmp_path / "shown.properties"
    shown.write_text(printed.out)
    properties = read_properties(shown)
    assert (properties["streamName"], properties["applicationName"], properties["regionName"]) == (
        "prod-events", "prod-processor", "eu-west-1")
    assert properties["executableName"] == "processor kcl"
    assert "software.amazon.kinesis.multilang.MultiLangDaemon" in printed.out


# ---- the metrics table (ANALYTICS.md): its keys, who may do what on it, its alarms ------------------

def test_the_metrics_table_is_keyed_and_expires_as_the_layout_writes_it():
    resources = template()["Resources"]
    table, conversations = resources["MetricsTable"], resources["ConversationTable"]["Properties"]
    properties = table["Properties"]
    assert properties["KeySchema"] == [{"AttributeName": layout.KEY, "KeyType": "HASH"}]
    assert properties["AttributeDefinitions"] == [{"AttributeName": layout.KEY, "AttributeType": "S"}]
    assert properties["TimeToLiveSpecification"] == {"AttributeName": layout.TTL, "Enabled": True}
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["PointInTimeRecoverySpecification"] == conversations["PointInTimeRecoverySpecification"]
    assert properties["SSESpecification"] == {"SSEEnabled": True}
    assert "GlobalSecondaryIndexes" not in properties  # never an index keyed by a bare queue id (I13)
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"


def test_the_task_is_given_the_metrics_table_and_the_settings_read_it():
    environment = container_environment()
    assert environment["PROCESSOR_METRICS_TABLE"] == "MetricsTable"  # !Ref, read as the plain name
    assert load_settings(environ={"PROCESSOR_METRICS_TABLE": "m"}).metrics_table == "m"


def task_statements() -> list[dict[str, Any]]:
    role = template()["Resources"]["TaskRole"]["Properties"]
    return [statement for policy in role["Policies"] for statement in policy["PolicyDocument"]["Statement"]]


def listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def granted(statements: list[dict[str, Any]], logical_id: str) -> set[str]:
    """The actions these statements allow on one table of the template (by its !GetAtt ….Arn)."""
    return {action for statement in statements if statement["Effect"] == "Allow"
            and f"{logical_id}.Arn" in listed(statement["Resource"]) for action in listed(statement["Action"])}


def test_the_task_role_may_only_update_the_metrics_table():
    """TransactWriteItems has no IAM action: its Update needs UpdateItem, its Put PutItem (on the
    conversation table). No Scan, Query, PutItem or DeleteItem on the metrics table, not even
    through the KCL statement's wildcards."""
    statements = task_statements()
    assert granted(statements, "MetricsTable") == {"dynamodb:UpdateItem"}
    assert "dynamodb:PutItem" in granted(statements, "ConversationTable")
    metrics_arn = ("arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/"
                   + template()["Resources"]["MetricsTable"]["Properties"]["TableName"])
    for statement in statements:
        if any(action.startswith("dynamodb:") for action in listed(statement["Action"])):
            assert not any(fnmatch.fnmatchcase(metrics_arn, pattern) for pattern in listed(statement["Resource"])
                           if "*" in pattern), statement["Sid"]


class AcceptingDynamoDB:
    """A DynamoDB client that accepts every call and records the IAM action each one needs, per
    table: a transaction needs the action of each of its parts (Put: PutItem, Update: UpdateItem, …)."""

    PARTS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem"}

    def __init__(self) -> None:
        self.needed: set[tuple[str, str]] = set()

    def __getattr__(self, name: str) -> Any:
        action = "dynamodb:" + "".join(part.title() for part in name.split("_"))

        def call(**kwargs: Any) -> dict[str, Any]:
            if name == "transact_write_items":
                self.needed |= {(f"dynamodb:{self.PARTS[kind]}", body["TableName"])
                                for part in kwargs["TransactItems"] for kind, body in part.items()}
            else:
                tables = listed(kwargs["TableName"]) if "TableName" in kwargs else list(kwargs["RequestItems"])
                self.needed |= {(action, table) for table in tables}
            if name == "describe_table":
                return {"Table": {"TableName": kwargs["TableName"], "TableStatus": "ACTIVE"}}
            if kwargs.get("ReturnValues") == "UPDATED_NEW":  # the writer's epoch counter
                return {"Attributes": {name: {"N": "1"} for name in kwargs["ExpressionAttributeNames"].values()}}
            return {"Responses": {}, "UnprocessedKeys": {}, "UnprocessedItems": {}} if name.startswith("batch_") else {}

        return call


def allowed(statements: list[dict[str, Any]], needed: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (action, table) pairs of `needed` that these statements do not allow."""
    by_table = {name: granted(statements, logical_id) for logical_id, name in TABLES.items()}
    return {(action, table) for action, table in needed if action not in by_table.get(table, set())}


def test_the_task_role_allows_every_call_a_shard_makes(tmp_path):
    """A shard as the task runs it (`processor kcl`: the production sink and dead letters) makes
    only calls the task role allows: reads of new conversations, transactions with metric deltas,
    the directory, dead letters."""
    client, settings, adapter = AcceptingDynamoDB(), Settings(), GenesysAdapter()
    engine = ShardEngine("shardId-000000000000", adapter, ShardStore(str(tmp_path / "state")),
                         settings.build_sink(client, adapter, TABLES["ConversationTable"], TABLES["MetricsTable"]),
                         DynamoDeadLetters(client, TABLES["DeadLetterTable"], settings.dead_letter_retention_seconds),
                         settings.flush_policy)
    engine.process(records([detail_event("c1", "acd.start", 1_000, participantId="a", queueId="q1"),
                            detail_event("c1", "acd.end", 9_000, participantId="a", queueId="q1",
                                         acdOutcome="ANSWERED"), b"not json"]))
    engine.flush(final=True)
    assert {("dynamodb:PutItem", "conversations"), ("dynamodb:UpdateItem", "metrics"),  # the transaction
            ("dynamodb:BatchWriteItem", "dead-letters")} <= client.needed
    assert allowed(task_statements(), client.needed) == set()


def test_the_metrics_read_only_policy_reads_the_metrics_table_and_nothing_else(monkeypatch, capsys):
    parsed = template()
    policy = parsed["Resources"]["MetricsReadOnlyPolicy"]
    assert policy["Type"] == "AWS::IAM::ManagedPolicy"
    assert parsed["Outputs"]["MetricsReadOnlyPolicyArn"]["Value"] == "MetricsReadOnlyPolicy"  # Ref: its ARN
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert {statement["Effect"] for statement in statements} == {"Allow"}
    assert {resource for statement in statements for resource in listed(statement["Resource"])} == {"MetricsTable.Arn"}
    actions = {action for statement in statements for action in listed(statement["Action"])}
    assert {"dynamodb:BatchGetItem", "dynamodb:GetItem"} <= actions
    assert not [action for action in actions if WRITE_ACTIONS.match(action)]
    assert not actions & {"dynamodb:Scan", "dynamodb:Query"}  # readers follow the directory
    # what `processor queues` calls, it may call
    client = AcceptingDynamoDB()
    monkeypatch.setattr("processor.cli.queues.dynamodb_client", lambda endpoint=None, *args, **kwargs: client)
    assert main(["queues", "--json", "--metrics-table", TABLES["MetricsTable"]]) == 0, capsys.readouterr().err
    assert ("dynamodb:BatchGetItem", "metrics") in client.needed
    assert allowed(statements, client.needed) == set()


def alarms() -> dict[str, dict[str, Any]]:
    return {name: resource["Properties"] for name, resource in template()["Resources"].items()
            if resource["Type"] == "AWS::CloudWatch::Alarm"}


def alarm_metrics(properties: dict[str, Any]) -> list[dict[str, Any]]:
    """An alarm's metrics, a plain one or a metric-math one, as {name, dimensions}."""
    if "MetricName" in properties:
        return [{"name": properties["MetricName"], "namespace": properties["Namespace"],
                 "dimensions": {d["Name"]: d["Value"] for d in properties.get("Dimensions", [])}}]
    return [{"name": m["MetricStat"]["Metric"]["MetricName"], "namespace": m["MetricStat"]["Metric"]["Namespace"],
             "dimensions": {d["Name"]: d["Value"] for d in m["MetricStat"]["Metric"].get("Dimensions", [])}}
            for m in properties["Metrics"] if "MetricStat" in m]


def test_the_metrics_table_and_transaction_conflicts_are_alarmed_like_the_other_alarms():
    found = alarms()
    style = found["ThrottledWritesAlarm"]
    watching: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for properties in found.values():
        assert properties["AlarmActions"] == style["AlarmActions"]
        assert properties["TreatMissingData"] == style["TreatMissingData"]
        for metric in alarm_metrics(properties):
            if metric["namespace"] == "AWS/DynamoDB":
                watching.setdefault((metric["name"], metric["dimensions"]["TableName"]), []).append(metric)
    assert ("TransactionConflict", "ConversationTable") in watching
    assert ("TransactionConflict", "MetricsTable") in watching
    # published per table *and* operation: an alarm without Operation would never see a data point
    for name in ("ThrottledRequests", "SystemErrors"):
        operations = {metric["dimensions"].get("Operation") for metric in watching[(name, "MetricsTable")]}
        assert {"TransactWriteItems", "UpdateItem", "BatchGetItem"} <= operations and None not in operations
