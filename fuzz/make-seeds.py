#!/usr/bin/env python3
"""Writes seed inputs for each fuzz target into fuzz/seeds/<target>/ from the repository's own
examples: examples/ritmo-config, tests/fixtures, events/, shared/src/webhook/fixtures and the
bootstrap files in shared/src/config.rs's tests. The committed corpora (fuzz/corpus/) started
from these; see docs/fuzzing.md. Run from anywhere: paths are relative to this file."""

import base64
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
OUT = FUZZ / "seeds"


def write(target, name, data):
    directory = OUT / target
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (directory / name).write_bytes(data)


def config_files(base):
    for path in sorted(base.rglob("*")):
        if path.is_file() and path.suffix in (".yaml", ".yml"):
            yield path.relative_to(base).as_posix(), path.read_bytes()


def manifest_seeds():
    everything = b""
    for base in (ROOT / "examples/ritmo-config", ROOT / "tests/fixtures/broken-repo"):
        for relative, content in config_files(base):
            one = b"#@ " + relative.encode() + b"\n" + content
            write("manifest_load", f"{base.name}-{relative.replace('/', '-')}", one)
            if base.name == "ritmo-config":
                everything += one if one.endswith(b"\n") else one + b"\n"
    write("manifest_load", "ritmo-config-all", everything)
    write("manifest_load", "symlinked-kind-directory", b"#@ webhooks !symlink\n#@ jobs/a.yaml\nname: a\n")


SIGNATURE_HEADERS = {"x-hub-signature-256", "x-hub-signature", "x-gitea-signature",
                     "x-forgejo-signature", "x-gitlab-token"}


def request(headers, body):
    lines = [f"{name}: {value}" for name, value in headers]
    return ("\n".join(lines) + "\n\n").encode() + body


def webhook_seeds():
    for path in sorted((ROOT / "events").glob("webhook-*.json")):
        event = json.loads(path.read_text())
        body = event.get("body") or ""
        body = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
        signed = "bad-signature" not in path.name
        headers = []
        for name, value in (event.get("headers") or {}).items():
            if signed and name.lower() in SIGNATURE_HEADERS:
                value = "sha256={sign}" if value.lower().startswith("sha256=") else "{sign}"
            headers.append((name, value))
        write("webhook_receive", path.stem, request(headers, body))
    providers = {
        "github-ping": [("X-GitHub-Event", "ping"), ("X-Hub-Signature-256", "sha256={sign}")],
        "github-push": [("X-GitHub-Event", "push"), ("X-Hub-Signature-256", "sha256={sign}")],
        "gitlab-push": [("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "{sign}")],
        "gitlab-tag-push": [("X-Gitlab-Event", "Tag Push Hook"), ("X-Gitlab-Token", "{sign}")],
        "gitea-push": [("X-Gitea-Event", "push"), ("X-Gitea-Signature", "{sign}")],
        "bitbucket-cloud-push": [("X-Event-Key", "repo:push"), ("X-Hub-Signature", "sha256={sign}")],
        "bitbucket-server-refs-changed": [("X-Event-Key", "repo:refs_changed"),
                                          ("X-Hub-Signature", "sha256={sign}")],
    }
    for path in sorted((ROOT / "shared/src/webhook/fixtures").glob("*.json")):
        name = next(key for key in sorted(providers, key=len, reverse=True)
                    if path.stem.startswith(key))
        headers = providers[name] + [("X-Request-UUID", "d-" + path.stem),
                                     ("Content-Type", "application/json")]
        write("webhook_receive", "fixture-" + path.stem, request(headers, path.read_bytes()))
    form = b"payload=" + re.sub(rb"[^A-Za-z0-9]", lambda m: b"%%%02X" % m.group()[0],
                                 (ROOT / "shared/src/webhook/fixtures/github-push.json").read_bytes())
    write("webhook_receive", "github-push-form", request(
        [("X-GitHub-Event", "push"), ("X-Hub-Signature-256", "sha256={sign}"),
         ("Content-Type", "application/x-www-form-urlencoded")], form))


def ciphertext_seeds():
    pattern = re.compile(r"^\s*encrypted_value:\s*[\"']?([^\"'\s]+)", re.M)
    for base in (ROOT / "examples/ritmo-config", ROOT / "tests/fixtures/broken-repo"):
        for relative, content in config_files(base):
            for value in pattern.findall(content.decode("utf-8", "replace")):
                name = Path(relative).stem
                write("ciphertext_decode", f"{base.name}-{name}", f"{name}\n{value}")
    blob = bytes(range(40))
    wrapped = bytes(range(100, 160))
    write("ciphertext_decode", "kms-direct", "c\nKMS:" + base64.b64encode(blob).decode())
    envelope = len(wrapped).to_bytes(2, "big") + wrapped + bytes(12) + b"x" * 20 + bytes(16)
    write("ciphertext_decode", "kms-envelope", "c\nKMS:v2:" + base64.b64encode(envelope).decode())
    write("ciphertext_decode", "keyring-text",
          "c\nold:" + "01" * 32 + ",new:" + base64.b64encode(b"k" * 32).decode())
    write("ciphertext_decode", "keyring-json", 'c\n{"keys": [{"id": "a", "key": "' + "ab" * 32
          + '"}, {"id": "b", "key": "ritmo-example-master-key-32bytes"}], "current": "a"}')


ENV = {
    "RITMO_GITOPS_TOKEN": "ghp_Fuzz0Token1Value2Abc",
    "RITMO_GITOPS_WEBHOOK_SECRET": "Webhook0Secret1Value2",
    "GITHUB_TOKEN": "tok",
}


def bootstrap_seeds():
    source = (ROOT / "shared/src/config.rs").read_text()
    env = "".join(f"#env {name}={value}\n" for name, value in ENV.items())
    for index, text in enumerate(re.findall(r'r#"(.*?)"#', source, re.S)):
        if "gitops" in text or "repository" in text:
            write("bootstrap_config", f"config-rs-{index}", env + text.lstrip("\n"))
    readme = (ROOT / "README.md").read_text()
    for index, text in enumerate(re.findall(r"```yaml\n(.*?)```", readme, re.S)):
        if "gitops" in text:
            write("bootstrap_config", f"readme-{index}", env + text)
    write("bootstrap_config", "overrides",
          env + "#env RITMO_GITOPS_REPO_URL=git@github.com:acme/c.git\n#env RITMO_GITOPS_PRUNE=false\n"
          "#env RITMO_GITOPS_SYNC_INTERVAL=30\n#env RITMO_GITOPS_AUTH_TYPE=ssh\n"
          "gitops:\n  enabled: true\n")


def git_seeds():
    values = [
        "main", "release/1.2", "refs/heads/main", "bad..name", "x.lock", "a b", "@{-1}",
        "/", "./config/prod/", "config//prod", "../../etc", "config", "config\\jobs",
        "https://github.com/acme/ritmo-config.git",
        "https://x-access-token:ghp_Secret0Token1@github.com/acme/ritmo-config.git",
        "http://user@127.0.0.1:8080/r.git", "ssh://git@gitlab.com:22/acme/r.git",
        "git@github.com:acme/ritmo-config.git", "git://example.com/r", "file:///srv/git/r.git",
        "C:\\repos\\r", "jobs/backend-service.yaml", "backend-service",
        "release/*\nrelease/2024/q1", "*-hotfix\nmain-hotfix",
    ]
    for index, value in enumerate(values):
        write("git_validators", f"value-{index:02}", value)


if __name__ == "__main__":
    shutil.rmtree(OUT, ignore_errors=True)
    manifest_seeds()
    webhook_seeds()
    ciphertext_seeds()
    bootstrap_seeds()
    git_seeds()
    for target in sorted(os.listdir(OUT)):
        print(target, len(os.listdir(OUT / target)))
