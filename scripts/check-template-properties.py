"""Checks the operational and security properties of template.yaml after the SAM transform.

The template is translated with samtranslator (the library `sam validate` runs), so the checks
see what CloudFormation would create, generated resources included. Each property is one
function returning the problems it found; the script prints them and exits 1 if any.

    python scripts/check-template-properties.py template.yaml
    python scripts/check-template-properties.py --mutations template.yaml

`--mutations` proves that every check can fail: it breaks the translated template once per
check (a queue without its DLQ, a function without its concurrency bound, ...) and exits 1
unless each check reports its own breakage. `scripts/lint-template.sh` runs both.

Properties (issue 27):
- iam: every IAM write is scoped to named resources, or is on UNSCOPED_WRITES below;
- concurrency: every function has a concurrency bound, and the bounds' worst case (every
  concurrency parameter at its MaxValue) times the connections per execution environment fits
  the proxy's pool, which fits the database;
- alarms: every alarm has an alarm action in every configuration;
- queues: every queue has a DLQ, or is one (a DLQ or a failure destination) with an alarm;
- logs: every log group has a retention, and every function logs into one of them;
- access-logs: every API stage writes JSON access logs with the fields an operator needs;
- proxy: the functions reach a created database only through an RDS Proxy requiring TLS, and
  the database is encrypted and deletion-protected.
"""

import copy
import json
import os
import re
import sys

from samcli.yamlhelper import yaml_parse
from samtranslator.translator.transform import transform

# Write actions AWS does not let a policy scope to a resource, or that are scoped by design
# to more than this stack's resources. Each needs its reason.
UNSCOPED_WRITES = {
    # X-Ray has no resource-level permissions.
    ("*", "xray:PutTraceSegments"): "X-Ray segments take no resource",
    ("*", "xray:PutTelemetryRecords"): "X-Ray telemetry takes no resource",
    # The account's API Gateway logging role serves every REST API of the region.
    ("ApiGatewayCloudWatchRole", "logs:CreateLogGroup"): "API Gateway's account-wide role",
    ("ApiGatewayCloudWatchRole", "logs:CreateLogStream"): "API Gateway's account-wide role",
    ("ApiGatewayCloudWatchRole", "logs:PutLogEvents"): "API Gateway's account-wide role",
}
READ_ONLY_PREFIXES = ("Describe", "Get", "List")
# Condition keys that pin a wildcard resource to this stack's network.
SCOPING_CONDITION_KEYS = {"ec2:Subnet", "ec2:Vpc"}

# The connection budget (infra/README.md). Aurora PostgreSQL allows at least this many
# connections at the template's smallest DatabaseMaxCapacity (1 ACU).
DATABASE_MIN_CONNECTIONS = 189
# Services holds one connection per execution environment (shared/src/services.rs).
CONNECTIONS_PER_ENVIRONMENT = 1

ACCESS_LOG_FIELDS = {"requestId", "source", "route", "status", "latencyMs"}


def translate(path):
    """The template as CloudFormation would receive it from `sam deploy`."""
    with open(path, encoding="utf-8") as file:
        template = yaml_parse(file.read())
    # As `sam validate` does: the code is uploaded at deploy time.
    template.setdefault("Globals", {}).setdefault("Function", {})["CodeUri"] = "s3://bucket/code"
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

    class NoManagedPolicies:
        def load(self):
            return {}

    return transform(template, {}, NoManagedPolicies())


def of_type(template, kind):
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if resource.get("Type") == kind
    }


def branches(node):
    """Every value `node` may take: both sides of each `Fn::If`, without `AWS::NoValue`."""
    if isinstance(node, dict) and "Fn::If" in node:
        for side in node["Fn::If"][1:]:
            yield from branches(side)
    elif isinstance(node, dict) and node.get("Ref") == "AWS::NoValue":
        return
    else:
        yield node


def items(node):
    """The elements of a list that may hold `Fn::If`s, each branch taken."""
    for value in branches(node):
        if isinstance(value, list):
            for item in value:
                yield from branches(item)
        else:
            yield value


def is_no_value(node):
    return isinstance(node, dict) and node.get("Ref") == "AWS::NoValue"


def may_be_absent(node):
    """Whether some configuration leaves `node` out (an `Fn::If` with a NoValue side)."""
    if node is None or is_no_value(node):
        return True
    if isinstance(node, dict) and "Fn::If" in node:
        return any(may_be_absent(side) for side in node["Fn::If"][1:])
    return False


def refs_in(node):
    """Every resource or parameter name referenced (`Ref`, `Fn::GetAtt`, `${...}`)."""
    if isinstance(node, list):
        for item in node:
            yield from refs_in(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                yield value
            elif key == "Fn::GetAtt":
                yield value[0] if isinstance(value, list) else value.split(".")[0]
            elif key == "Fn::Sub":
                text = value[0] if isinstance(value, list) else value
                yield from (m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text))
                if isinstance(value, list):
                    yield from refs_in(value[1])
            else:
                yield from refs_in(value)


# ---------------------------------------------------------------------------------- iam
def policy_documents(template):
    """(owner, statement) for every inline or managed policy statement in the template."""
    for name, role in of_type(template, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for statement in items(policy["PolicyDocument"]["Statement"]):
                yield name, statement
    for name, policy in of_type(template, "AWS::IAM::ManagedPolicy").items():
        for statement in items(policy["Properties"]["PolicyDocument"]["Statement"]):
            yield name, statement


def is_wildcard_resource(resource):
    """`*`, or an ARN whose resource part is only a wildcard (`...:log-group:*`, `.../*`)."""
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        resource = resource["Fn::Sub"]
        resource = resource[0] if isinstance(resource, list) else resource
    if not isinstance(resource, str):
        return False  # a Ref or GetAtt names one resource; Split/Join build named ARNs
    if resource == "*":
        return True
    parts = resource.split(":", 5)
    if len(parts) < 6:
        return False
    return re.fullmatch(r"([a-z-]+[:/])?\*", parts[5]) is not None


def check_iam(template):
    problems = []
    for owner, statement in policy_documents(template):
        if statement.get("Effect") != "Allow":
            continue
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = list(items(statement.get("Resource", [])))
        if not any(is_wildcard_resource(r) for r in resources):
            continue
        conditions = statement.get("Condition", {})
        pinned = any(
            key in SCOPING_CONDITION_KEYS for test in conditions.values() for key in test
        )
        if pinned:
            continue
        for action in actions:
            verb = action.split(":", 1)[-1]
            if verb.startswith(READ_ONLY_PREFIXES):
                continue
            if ("*", action) in UNSCOPED_WRITES or (owner, action) in UNSCOPED_WRITES:
                continue
            problems.append(
                f"{owner} statement {statement.get('Sid', '?')}: {action} on every resource"
            )
    return problems


# ---------------------------------------------------------------------------------- concurrency
def worst_case(template, value, what):
    """A number, or a parameter's MaxValue (the most an operator can set)."""
    if isinstance(value, (int, float)):
        return value, None
    if isinstance(value, str) and value.isdigit():
        return int(value), None
    if isinstance(value, dict) and "Ref" in value:
        parameter = template.get("Parameters", {}).get(value["Ref"], {})
        if "MaxValue" in parameter:
            return parameter["MaxValue"], None
        return None, f"{what}: parameter {value['Ref']} has no MaxValue, so no bound"
    return None, f"{what}: {value!r} is not a number or a bounded parameter"


def check_concurrency(template):
    problems = []
    total = 0
    functions = of_type(template, "AWS::Lambda::Function")
    for name, function in sorted(functions.items()):
        reserved = function["Properties"].get("ReservedConcurrentExecutions")
        if reserved is None or may_be_absent(reserved):
            problems.append(f"{name} has no ReservedConcurrentExecutions")
            continue
        bound, problem = worst_case(template, reserved, name)
        if problem:
            problems.append(problem)
            continue
        total += bound * CONNECTIONS_PER_ENVIRONMENT
    for name, mapping in of_type(template, "AWS::Lambda::EventSourceMapping").items():
        maximum = mapping["Properties"].get("ScalingConfig", {}).get("MaximumConcurrency")
        function = next(iter(refs_in(mapping["Properties"]["FunctionName"])), None)
        reserved = functions.get(function, {}).get("Properties", {}).get(
            "ReservedConcurrentExecutions"
        )
        if maximum is not None and reserved is not None and maximum != reserved:
            # SQS pollers beyond the reserved concurrency are throttled and retried in a loop.
            problems.append(f"{name}: MaximumConcurrency differs from {function}'s reserved")
    pools = [
        group["Properties"].get("ConnectionPoolConfigurationInfo", {}).get("MaxConnectionsPercent", 100)
        for group in of_type(template, "AWS::RDS::DBProxyTargetGroup").values()
    ]
    if not pools:
        problems.append("no RDS Proxy target group: nothing bounds the database connections")
    for percent in pools:
        pool = DATABASE_MIN_CONNECTIONS * percent // 100
        if total > pool:
            problems.append(
                f"the functions may hold {total} connections, more than the proxy's pool "
                f"({percent}% of {DATABASE_MIN_CONNECTIONS} = {pool})"
            )
    return problems


# ---------------------------------------------------------------------------------- alarms
def check_alarms(template):
    problems = []
    for name, alarm in sorted(of_type(template, "AWS::CloudWatch::Alarm").items()):
        actions = alarm["Properties"].get("AlarmActions")
        if actions is None or may_be_absent(actions):
            problems.append(f"{name} has no alarm action in some configuration")
            continue
        for value in branches(actions):
            if not isinstance(value, list) or not value or any(
                may_be_absent(item) for item in value
            ):
                problems.append(f"{name}: an alarm action may be missing")
                break
    return problems


# ---------------------------------------------------------------------------------- queues
def check_queues(template):
    problems = []
    queues = of_type(template, "AWS::SQS::Queue")
    terminal = {}  # queue -> what sends to it
    for name, queue in queues.items():
        redrive = queue["Properties"].get("RedrivePolicy")
        if redrive:
            for target in refs_in(redrive.get("deadLetterTargetArn")):
                terminal[target] = f"{name}'s DLQ"
    for name, config in of_type(template, "AWS::Lambda::EventInvokeConfig").items():
        failure = config["Properties"].get("DestinationConfig", {}).get("OnFailure", {})
        for target in refs_in(failure.get("Destination")):
            terminal[target] = f"{name}'s failure destination"
    for name, rule in of_type(template, "AWS::Events::Rule").items():
        for target in rule["Properties"].get("Targets", []):
            for queue in refs_in(target.get("DeadLetterConfig", {}).get("Arn")):
                terminal[queue] = f"{name}'s DLQ"
    watched = set()
    for alarm in of_type(template, "AWS::CloudWatch::Alarm").values():
        if alarm["Properties"].get("Namespace") == "AWS/SQS":
            for dimension in alarm["Properties"].get("Dimensions", []):
                watched.update(refs_in(dimension.get("Value")))
    for name, queue in sorted(queues.items()):
        redrive = queue["Properties"].get("RedrivePolicy")
        if name in terminal:
            if name not in watched:
                problems.append(f"{name} ({terminal[name]}) has no alarm on its depth")
        elif not redrive or may_be_absent(redrive):
            problems.append(f"{name} has no DLQ (RedrivePolicy)")
    for name, function in of_type(template, "AWS::Lambda::Function").items():
        events = [
            rule
            for rule in of_type(template, "AWS::Events::Rule").values()
            if name in set(refs_in(rule["Properties"].get("Targets", [])))
        ]
        if events and not any(
            refs_in(c["Properties"].get("DestinationConfig", {}).get("OnFailure", {}))
            for c in of_type(template, "AWS::Lambda::EventInvokeConfig").values()
            if name in set(refs_in(c["Properties"].get("FunctionName")))
        ):
            problems.append(f"{name} is invoked asynchronously and has no OnFailure destination")
    return problems


# ---------------------------------------------------------------------------------- logs
def check_logs(template):
    problems = []
    groups = of_type(template, "AWS::Logs::LogGroup")
    for name, group in sorted(groups.items()):
        retention = group["Properties"].get("RetentionInDays")
        if retention is None or may_be_absent(retention):
            problems.append(f"{name} has no RetentionInDays (logs kept forever)")
    for name, function in sorted(of_type(template, "AWS::Lambda::Function").items()):
        target = function["Properties"].get("LoggingConfig", {}).get("LogGroup")
        if not target or not set(refs_in(target)) & set(groups):
            # Lambda would create /aws/lambda/<name> itself, with no retention.
            problems.append(f"{name} does not log into a log group of the stack")
    return problems


# ---------------------------------------------------------------------------------- access logs
def check_access_logs(template):
    problems = []
    stages = of_type(template, "AWS::ApiGateway::Stage")
    if not stages:
        problems.append("no API stage")
    groups = set(of_type(template, "AWS::Logs::LogGroup"))
    for name, stage in sorted(stages.items()):
        setting = stage["Properties"].get("AccessLogSetting")
        if not setting:
            problems.append(f"{name} has no access logs")
            continue
        if not set(refs_in(setting.get("DestinationArn"))) & groups:
            problems.append(f"{name}'s access logs do not go to a log group of the stack")
        try:
            fields = set(json.loads(setting.get("Format", "")))
        except (TypeError, ValueError):
            problems.append(f"{name}'s access log format is not JSON")
            continue
        if missing := ACCESS_LOG_FIELDS - fields:
            problems.append(f"{name}'s access logs lack {sorted(missing)}")
    return problems


# ---------------------------------------------------------------------------------- proxy
def check_proxy(template):
    problems = []
    resources = template["Resources"]
    proxies = of_type(template, "AWS::RDS::DBProxy")
    databases = set(of_type(template, "AWS::RDS::DBCluster")) | set(
        of_type(template, "AWS::RDS::DBInstance")
    )
    if databases and not proxies:
        problems.append("the template creates a database but no RDS Proxy")
    for name, proxy in proxies.items():
        if proxy["Properties"].get("RequireTLS") is not True:
            problems.append(f"{name} does not require TLS")
    for name, function in sorted(of_type(template, "AWS::Lambda::Function").items()):
        variables = function["Properties"].get("Environment", {}).get("Variables", {})
        host = variables.get("DATABASE_HOST")
        if host is None:
            problems.append(f"{name} has no DATABASE_HOST")
            continue
        for ref in refs_in(host):
            kind = resources.get(ref, {}).get("Type")
            if kind in ("AWS::RDS::DBCluster", "AWS::RDS::DBInstance"):
                problems.append(f"{name} connects to {ref} directly, not through the proxy")
        if variables.get("DATABASE_SSLMODE") not in ("require", "verify-ca", "verify-full"):
            problems.append(f"{name} does not require TLS to the database")
    for name, cluster in of_type(template, "AWS::RDS::DBCluster").items():
        properties = cluster["Properties"]
        if properties.get("StorageEncrypted") is not True:
            problems.append(f"{name} is not encrypted")
        if properties.get("DeletionProtection") is not True:
            problems.append(f"{name} is not deletion-protected")
    return problems


CHECKS = {
    "iam": check_iam,
    "concurrency": check_concurrency,
    "alarms": check_alarms,
    "queues": check_queues,
    "logs": check_logs,
    "access-logs": check_access_logs,
    "proxy": check_proxy,
}


# ---------------------------------------------------------------------------------- mutations
def first(template, kind):
    return next(iter(sorted(of_type(template, kind).items())))[1]["Properties"]


def unscope_a_write(t):
    role = t["Resources"]["WebhookRole"]["Properties"]
    role["Policies"][0]["PolicyDocument"]["Statement"].append(
        {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"}
    )


def unbound_a_function(t):
    del t["Resources"]["ApiFunction"]["Properties"]["ReservedConcurrentExecutions"]


def silence_an_alarm(t):
    first(t, "AWS::CloudWatch::Alarm")["AlarmActions"] = {
        "Fn::If": ["CreateAlarmTopic", [{"Ref": "AlarmTopic"}], {"Ref": "AWS::NoValue"}]
    }


def drop_a_dlq(t):
    del t["Resources"]["PlanQueue"]["Properties"]["RedrivePolicy"]


def keep_logs_forever(t):
    del first(t, "AWS::Logs::LogGroup")["RetentionInDays"]


def drop_access_logs(t):
    del first(t, "AWS::ApiGateway::Stage")["AccessLogSetting"]


def bypass_the_proxy(t):
    variables = t["Resources"]["PlannerFunction"]["Properties"]["Environment"]["Variables"]
    variables["DATABASE_HOST"] = {"Fn::GetAtt": ["DatabaseCluster", "Endpoint.Address"]}


MUTATIONS = {
    "iam": unscope_a_write,
    "concurrency": unbound_a_function,
    "alarms": silence_an_alarm,
    "queues": drop_a_dlq,
    "logs": keep_logs_forever,
    "access-logs": drop_access_logs,
    "proxy": bypass_the_proxy,
}


def main(argv):
    mutations = "--mutations" in argv
    paths = [a for a in argv if not a.startswith("--")]
    if len(paths) != 1:
        print("usage: check-template-properties.py [--mutations] TEMPLATE", file=sys.stderr)
        return 2
    path = paths[0]
    template = translate(path)
    if mutations:
        failures = []
        for name, mutate in MUTATIONS.items():
            broken = copy.deepcopy(template)
            mutate(broken)
            if not CHECKS[name](broken):
                failures.append(name)
            print(f"{name}: {'NOT caught' if name in failures else 'caught'} ({mutate.__name__})")
        return 1 if failures else 0
    failed = False
    for name, check in CHECKS.items():
        problems = check(template)
        failed |= bool(problems)
        print(f"{name}: {'ok' if not problems else 'FAILED'}")
        for problem in problems:
            print(f"  {path}: {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
