"""Checks which function roles of template.yaml may decrypt credentials.

The planner decrypts credentials to validate them, and the planner, applier and poller send
notifications whose Slack URL is an encrypted credential: their roles must read the master key
secret and use the KMS key. The webhook and API never decrypt (their `Services` load the keys
on first use only, see shared/src/services.rs), so their roles must not. Exits 1 on a mismatch.
"""

import sys

from cfnlint.decode import decode

DECRYPTING = {"PlannerRole", "PollerRole", "ApplierRole"}
NOT_DECRYPTING = {"WebhookRole", "ApiRole"}
GRANTS = {
    ("secretsmanager:GetSecretValue", "MasterKeySecretArn"),
    ("kms:Decrypt", "KmsKeyArn"),
}


def statements(node):
    """Policy statements, with `Fn::If` taken on its true branch (the feature configured)."""
    if isinstance(node, list):
        for item in node:
            yield from statements(item)
    elif isinstance(node, dict) and "Fn::If" in node:
        yield from statements(node["Fn::If"][1])
    elif isinstance(node, dict):
        yield node


def refs(node):
    if isinstance(node, list):
        for item in node:
            yield from refs(item)
    elif isinstance(node, dict):
        if "Ref" in node:
            yield node["Ref"]
        for value in node.values():
            yield from refs(value)


def grants(role):
    found = set()
    for policy in role["Properties"].get("Policies", []):
        for statement in statements(policy["PolicyDocument"]["Statement"]):
            actions = statement.get("Action", [])
            actions = [actions] if isinstance(actions, str) else actions
            for action in actions:
                for name in refs(statement.get("Resource", [])):
                    if (action, name) in GRANTS:
                        found.add((action, name))
    return found


def main(path):
    template, matches = decode(path)
    if matches:
        print(f"{path}: does not parse: {matches}")
        return 1
    resources = template["Resources"]
    problems = []
    for name in sorted(DECRYPTING):
        missing = GRANTS - grants(resources[name])
        problems += [f"{name} lacks {action} on {ref}" for action, ref in sorted(missing)]
    for name in sorted(NOT_DECRYPTING):
        extra = grants(resources[name])
        problems += [f"{name} should not have {action} on {ref}" for action, ref in sorted(extra)]
    for problem in problems:
        print(f"{path}: {problem}")
    if not problems:
        print("credential access: planner, poller and applier decrypt; webhook and api do not")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
