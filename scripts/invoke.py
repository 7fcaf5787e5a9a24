#!/usr/bin/env python3
"""Runs the Lambda functions under cargo-lambda's emulator, as `make invoke` and `make invoke-all`.

`cargo lambda watch` builds and serves the workspace's function binaries (debug, in target/),
`cargo lambda invoke` hands one an event from events/. Each function gets the environment
template.yaml gives it (Globals.Function.Environment), with the template's parameters and
resources mapped to local stand-ins: the PostgreSQL of $DATABASE_URL as an "existing database"
whose secret is in moto, a moto server started here for the two FIFO queues, the webhook
secret, the master key secret, the KMS key and the secrets the example's credentials name, and
GitHost serving the target's repository (REPO_URL) from the example repository, offline.
Nothing else from the caller's environment reaches the functions, as in Lambda.

--function NAME --event FILE prints that one response (the sample's placeholder plan id and
commit replaced by the newest stored plan and the example's head); --all invokes every function
with every events/ file that is its own (by the name's prefix), in ORDER, and checks the answer
against EXPECTED: status code, body, and the messages left on each queue.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import boto3
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / ".dev" / "invoke"
REGION = "us-east-1"
FUNCTIONS = ("webhook", "poller", "planner", "applier", "api")
# events/README.md: every webhook-* event is signed with it.
WEBHOOK_SECRET = "ritmo-test-webhook-secret"
# The repository the sample events push to (events/README.md).
REPO_URL = "https://github.com/acme/ritmo-config.git"
MASTER_KEY = "ritmo-example-master-key-32bytes"
# `make example-repo` commits examples/ritmo-config here; GitHost serves it as REPO_URL.
EXAMPLE_REPO = ROOT / ".dev" / "ritmo-config"
# A debug build of one function on a loaded 2-core machine, before its first answer.
FIRST_INVOKE_TIMEOUT = 1800

# The samples' plan id and earlier commit (events/generate.py: PLAN_ID, BEFORE): invoke-all
# puts in their place the sync id of the plan the planner made and the example's head commit.
SAMPLE_SYNC_ID = "0192f5a4-7b1e-7c3a-9d2e-5f6a7b8c9d0e"
SAMPLE_COMMIT = "3c2d1e0f9a8b7c6d5e4f30211a0b9c8d7e6f5a4b"

# The order of invoke-all, on one fresh database and one moto, so that each sample finds the
# data it shows: the poller and the planner first (the plan of the example's head), then the
# applier applies that plan, then the API reads what they left.
ORDER = [
    "api-health-live.json",
    "api-health-ready.json",
    "poller-scheduled.json",
    "planner-plan-request.json",
    "api-plan.json",
    "applier-apply-request.json",
    "api-status.json",
    "api-sync-history.json",
    "api-jobs.json",
    "api-job.json",
    "api-plan-approve.json",
    "api-rollback.json",
    "api-sync.json",
    "planner-plan-request-batch.json",
    "planner-invalid-message.json",
]


def count(n: int):
    def holds(items) -> bool:
        return isinstance(items, list) and len(items) == n
    holds.__doc__ = f"{n} items"
    return holds


def has_actions(plan) -> bool:
    """a plan with actions"""
    return isinstance(plan, dict) and isinstance(plan.get("actions"), list) and len(plan["actions"]) > 0


def applied(targets) -> bool:
    """target `default` with a succeeded last run whose commit it has applied"""
    if not isinstance(targets, list) or len(targets) != 1 or not isinstance(targets[0], dict):
        return False
    target = targets[0]
    run = target.get("last_run") or {}
    return (target.get("name") == "default" and run.get("status") == "succeeded"
            and run.get("commit") is not None and target.get("last_applied_commit") == run.get("commit"))


def nonempty(items) -> bool:
    """at least one item"""
    return isinstance(items, list) and len(items) > 0


# What each event must give. `status`: the HTTP status (API Gateway events); `body`: keys the
# JSON body must have, with these values (None: any value; a function: a check of it);
# `response`: the same for a function's plain JSON answer; `plan`/`apply`: how many messages
# land on that queue, each with the keys of `message` (or `plan_message`/`apply_message`);
# `failures`: the number of SQS batch item failures.
# The functions run with the template's environment, whose one target is `default`, tracking
# REPO_URL, which GitHost serves from the example repository. GitLab, Gitea and Bitbucket push
# the same repository from their own hosts, which no target tracks.
PUSH_ACCEPTED = {"status": 202, "body": {"status": "accepted", "targets": ["default"]},
                 "plan": 1, "message": {"target": "default", "trigger": "webhook"}}
UNTRACKED = {"status": 202, "body": {"status": "ignored", "reason": None}}
EXPECTED: dict[str, dict] = {
    "api-health-live.json": {"status": 200, "body": {"status": "live"}},
    "api-health-ready.json": {"status": 200, "body": {"status": "ready", "database": "ok"}},
    # Nothing applied yet: the example's head differs from what the target has.
    "poller-scheduled.json": {"response": {"enqueued": 1}, "plan": 1,
                              "message": {"target": "default", "trigger": "schedule"}},
    # Planned from the example's head and auto-applied (AutoApply): one apply request.
    "planner-plan-request.json": {"failures": 0, "apply": 1,
                                  "message": {"target": "default", "sync_id": None}},
    "api-plan.json": {"status": 200, "body": {"plan": has_actions, "diagnostics": []}},
    "applier-apply-request.json": {"failures": 0},
    # What the applier did: the plan applied, its commit the target's.
    "api-status.json": {"status": 200, "body": {"enabled": True, "targets": applied}},
    "api-sync-history.json": {"status": 200, "body": {"runs": nonempty, "next": None}},
    "api-jobs.json": {"status": 200, "body": {"items": nonempty}},
    "api-job.json": {"status": 200, "body": {"kind": "Job", "name": "backend-service", "target": "default"}},
    # The planner's plan was applied without approval (AutoApply), so approving it is refused.
    "api-plan-approve.json": {"status": 409, "body": {"error": "not_pending", "message": None}},
    # To the example's head (the one commit it has): pinned, and a rollback plan requested.
    "api-rollback.json": {"status": 202, "body": {"pinned": None, "queued": count(1)}, "plan": 1,
                          "message": {"target": "default", "trigger": "rollback", "revision": None}},
    "api-sync.json": {"status": 202, "body": {"queued": count(1)}, "plan": 1,
                      "message": {"target": "default", "trigger": "manual"}},
    "planner-invalid-message.json": {"failures": 0},
    "planner-plan-request-batch.json": {"failures": 0},
    "webhook-bitbucket-push-apigw-v2.json": UNTRACKED,
    "webhook-gitea-push-apigw-v2.json": UNTRACKED,
    "webhook-github-bad-signature-apigw-v2.json": {"status": 401, "body": {"error": "bad_signature"}},
    "webhook-github-ping-apigw-v2.json": {"status": 200},
    "webhook-github-push-apigw-v1.json": PUSH_ACCEPTED,
    "webhook-github-push-apigw-v2.json": PUSH_ACCEPTED,
    "webhook-github-push-base64-apigw-v2.json": PUSH_ACCEPTED,
    "webhook-github-push-form-apigw-v1.json": PUSH_ACCEPTED,
    "webhook-github-tag-push-apigw-v2.json": {"status": 202, "body": {"status": "ignored", "reason": "tag push `v1.4.0`"}},
    "webhook-gitlab-push-apigw-v2.json": UNTRACKED,
}
# Sent twice more after the others: the second time is a redelivery, answered 200 and not queued.
REDELIVERY = "webhook-github-push-apigw-v2.json"
DUPLICATE = {"status": 200, "body": {"status": "duplicate"}, "plan": 0}


def template_environment(local: dict[str, str], resources: dict[str, str]) -> dict[str, str]:
    """The Globals environment of template.yaml, its parameters and resources made local."""

    class Loader(yaml.SafeLoader):
        pass

    def tag(loader: yaml.Loader, suffix: str, node: yaml.Node):
        if isinstance(node, yaml.ScalarNode):
            return {suffix: loader.construct_scalar(node)}
        if isinstance(node, yaml.SequenceNode):
            return {suffix: loader.construct_sequence(node, deep=True)}
        return {suffix: loader.construct_mapping(node, deep=True)}

    Loader.add_multi_constructor("!", tag)
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=Loader)
    parameters = {
        name: str(spec.get("Default", "")) for name, spec in template["Parameters"].items()
    }
    parameters.update(local)
    conditions = template.get("Conditions", {})

    def value(node):
        if not isinstance(node, dict):
            return "" if node is None else str(node).lower() if isinstance(node, bool) else str(node)
        (function, argument), = node.items()
        if function == "Ref":
            if argument in parameters:
                return parameters[argument]
            if argument in resources:
                return resources[argument]
            raise SystemExit(f"template.yaml: no local stand-in for !Ref {argument}; add one to scripts/invoke.py")
        if function == "GetAtt":
            name = argument if isinstance(argument, str) else ".".join(argument)
            if name in resources:
                return resources[name]
            raise SystemExit(f"template.yaml: no local stand-in for !GetAtt {name}; add one to scripts/invoke.py")
        if function == "If":
            condition, then, otherwise = argument
            return value(then) if holds(condition) else value(otherwise)
        raise SystemExit(f"template.yaml: scripts/invoke.py cannot evaluate !{function}")

    def holds(name_or_node) -> bool:
        node = conditions[name_or_node] if isinstance(name_or_node, str) else name_or_node
        (function, argument), = node.items()
        if function == "Equals":
            return value(argument[0]) == value(argument[1])
        if function == "Not":
            return not holds(argument[0])
        if function == "And":
            return all(holds(a) for a in argument)
        if function == "Or":
            return any(holds(a) for a in argument)
        if function == "Condition":
            return holds(argument)
        raise SystemExit(f"template.yaml: scripts/invoke.py cannot evaluate condition !{function}")

    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    return {name: value(node) for name, node in variables.items()}


def example_secret_refs() -> list[str]:
    """The Secrets Manager secrets the example repository's credentials reference."""
    names = []
    for path in sorted((ROOT / "examples" / "ritmo-config" / "credentials").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            reference = ((document or {}).get("spec") or {}).get("secret_ref") or {}
            if reference.get("provider") == "aws_secrets_manager" and reference.get("key"):
                names.append(reference["key"])
    return names


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, what: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited ({process.returncode}); its output:\n{log.read_text()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError as error:
            if getattr(error, "code", None):  # an HTTP error status: it answers
                return
            time.sleep(0.2)
    raise SystemExit(f"{what} did not answer {url} within {timeout:.0f} s; its output:\n{log.read_text()}")


class GitHost:
    """github.com, offline: an HTTPS proxy that answers CONNECT github.com:443 itself, with a
    certificate from a CA made here, and serves acme/ritmo-config.git from the example
    repository (`make example-repo`) through `git http-backend`.

    The functions reach it with the ordinary HTTPS_PROXY and SSL_CERT_FILE (reqwest and
    rustls-native-certs read them), so the target keeps tracking REPO_URL, the webhook samples
    still match it, and the product opens its repositories isolated from any git config, as
    in Lambda (which is why `url.<base>.insteadOf` cannot be used: gix would never read it)."""

    HOST = "github.com"

    def __init__(self, example_repo: Path):
        self.directory = SCRATCH / "git"
        if self.directory.exists():
            shutil.rmtree(self.directory)
        bare = self.directory / "acme" / "ritmo-config.git"
        bare.parent.mkdir(parents=True)
        if not (example_repo / ".git").is_dir():
            raise SystemExit(f"{example_repo} is not a git repository: run `make example-repo`")
        subprocess.run(["git", "clone", "-q", "--bare", str(example_repo), str(bare)], check=True)
        self.head = subprocess.run(["git", "-C", str(bare), "rev-parse", "refs/heads/main"],
                                   check=True, capture_output=True, text=True).stdout.strip()
        self.ca_file, context = self._certificates()
        self.log = (SCRATCH / "git-host.log").open("w")
        host = self

        class Backend(http.server.BaseHTTPRequestHandler):
            """Smart HTTP inside the tunnel: `git http-backend` as a CGI."""
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):
                host.log.write("%s\n" % (format % args))
                host.log.flush()

            def do_GET(self):
                self.cgi(b"")

            def do_POST(self):
                self.cgi(self.body())

            def body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def cgi(self, body: bytes):
                path, _, query = self.path.partition("?")
                environment = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "GIT_PROJECT_ROOT": str(host.directory), "GIT_HTTP_EXPORT_ALL": "1",
                    "REQUEST_METHOD": self.command, "PATH_INFO": urllib.parse.unquote(path),
                    "QUERY_STRING": query, "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": "127.0.0.1",
                    "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                    "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                }
                result = subprocess.run(["git", "http-backend"], input=body, env=environment,
                                        capture_output=True)
                head, _, payload = result.stdout.partition(b"\r\n\r\n")
                if not _:
                    head, _, payload = result.stdout.partition(b"\n\n")
                status, headers = 200, []
                for line in head.decode("latin-1").splitlines():
                    name, _, value = line.partition(":")
                    if name.lower() == "status":
                        status = int(value.split()[0])
                    elif name:
                        headers.append((name, value.strip()))
                if result.returncode != 0 and not result.stdout:
                    status, payload = 500, result.stderr
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        class Proxy(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):
                Backend.log_message(self, format, *args)

            def do_CONNECT(self):
                if self.path.rpartition(":")[0] != GitHost.HOST:
                    self.send_error(403, f"only {GitHost.HOST} is served here")
                    return
                self.send_response(200, "Connection established")
                self.end_headers()
                with context.wrap_socket(self.connection, server_side=True) as tunnel:
                    Backend(tunnel, self.client_address, self.server)
                self.close_connection = True

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
        self.server.daemon_threads = True
        self.proxy = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _certificates(self) -> tuple[Path, ssl.SSLContext]:
        # cryptography comes with moto into .venv.
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = datetime.datetime.now(datetime.timezone.utc)

        def certificate(subject: str, key, issuer: str, signer, ca: bool):
            builder = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            )
            if ca:
                builder = builder.add_extension(x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                    key_encipherment=False, data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False), critical=True)
            else:
                builder = builder.add_extension(
                    x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
                ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            return builder.sign(signer, hashes.SHA256())

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = certificate("ritmo make invoke CA", ca_key, "ritmo make invoke CA", ca_key, True)
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        leaf = certificate(GitHost.HOST, leaf_key, "ritmo make invoke CA", ca_key, False)
        pem = serialization.Encoding.PEM
        ca_file = self.directory / "ca.pem"
        ca_file.write_bytes(ca.public_bytes(pem))
        chain = self.directory / "github.com.pem"
        chain.write_bytes(leaf.public_bytes(pem) + leaf_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain)
        return ca_file, context

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Stack:
    """moto with the template's queues, secrets and key, and `cargo lambda watch` serving the
    functions with the template's environment."""

    def __init__(self):
        self.processes: list[subprocess.Popen] = []
        self.git: GitHost | None = None

    def start(self, database_url: str) -> None:
        SCRATCH.mkdir(parents=True, exist_ok=True)
        self.database_url = database_url
        moto_log = SCRATCH / "moto.log"
        moto_port = free_port()
        self.moto_endpoint = f"http://127.0.0.1:{moto_port}"
        moto_server = ROOT / ".venv" / "bin" / "moto_server"
        if not moto_server.exists():
            raise SystemExit(f"{moto_server} is missing: run `make tools`")
        self.processes.append(
            subprocess.Popen(
                [str(moto_server), "-H", "127.0.0.1", "-p", str(moto_port)],
                stdout=moto_log.open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        wait_for(f"{self.moto_endpoint}/moto-api/", self.processes[-1], "moto_server", moto_log, 60)
        aws = dict(
            region_name=REGION, endpoint_url=self.moto_endpoint,
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )
        self.sqs = boto3.client("sqs", **aws)
        secrets = boto3.client("secretsmanager", **aws)
        kms = boto3.client("kms", **aws)
        self.queues = {
            name: self.sqs.create_queue(
                QueueName=f"ritmo-invoke-{name}.fifo",
                Attributes={"FifoQueue": "true", "VisibilityTimeout": "30"},
            )["QueueUrl"]
            for name in ("plan", "apply")
        }

        database = urllib.parse.urlsplit(database_url)
        database_secret = secrets.create_secret(
            Name="ritmo/invoke/database",
            SecretString=json.dumps(
                {"username": database.username or "postgres", "password": database.password or ""}
            ),
        )["ARN"]
        webhook_secret = secrets.create_secret(
            Name="ritmo/invoke/webhook", SecretString=WEBHOOK_SECRET
        )["ARN"]
        master_key_secret = secrets.create_secret(
            Name="ritmo/invoke/master-key", SecretString=MASTER_KEY
        )["ARN"]
        kms_key = kms.create_key(Description="ritmo invoke")["KeyMetadata"]["Arn"]
        # The planner checks that every Secrets Manager secret a credential of the example
        # names exists (E404 otherwise); the values are never read.
        for name in example_secret_refs():
            secrets.create_secret(Name=name, SecretString="placeholder for make invoke")

        environment = template_environment(
            local={
                "RepoUrl": REPO_URL,
                # The sample repository is public and nothing here holds a Git token.
                "GitAuthType": "none",
                "ExistingDatabaseHost": database.hostname or "127.0.0.1",
                "ExistingDatabaseSecretArn": database_secret,
                "DatabasePort": str(database.port or 5432),
                "DatabaseName": database.path.lstrip("/") or "postgres",
                "DatabaseUser": database.username or "postgres",
                "WebhookSecretArn": webhook_secret,
                "MasterKeySecretArn": master_key_secret,
                "KmsKeyArn": kms_key,
            },
            resources={
                "PlanQueue": self.queues["plan"],
                "ApplyQueue": self.queues["apply"],
            },
        )
        # The local PostgreSQL speaks no TLS; Aurora does (template: require).
        environment["DATABASE_SSLMODE"] = "disable"
        self.git = GitHost(EXAMPLE_REPO)
        environment.update(
            HTTPS_PROXY=self.git.proxy,
            # moto and PostgreSQL are reached directly.
            NO_PROXY="127.0.0.1,localhost",
            SSL_CERT_FILE=str(self.git.ca_file),
        )
        environment.update(
            AWS_REGION=REGION,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_ENDPOINT_URL=self.moto_endpoint,
        )
        self.environment = environment
        (SCRATCH / "function.env").write_text(
            "".join(f"{name}={value}\n" for name, value in sorted(environment.items()))
        )

        # Only what cargo needs to build: DATABASE_URL, RITMO_* and AWS_* of the caller's shell
        # must not reach the functions, which read the template's variables alone.
        keep = ("PATH", "HOME", "CARGO_HOME", "RUSTUP_HOME", "RUSTUP_TOOLCHAIN", "TMPDIR", "LANG", "TERM")
        watch_env = {name: os.environ[name] for name in keep if name in os.environ}
        watch_env["PATH"] = f"{ROOT / '.venv' / 'bin'}:{watch_env.get('PATH', '/usr/bin:/bin')}"
        self.invoke_env = dict(watch_env)
        watch_env.update(environment)
        cargo_lambda = shutil.which("cargo-lambda", path=watch_env["PATH"])
        if cargo_lambda is None:
            raise SystemExit("cargo-lambda is missing from .venv/bin: run `make tools`")
        self.port = free_port()
        self.watch_log = SCRATCH / "watch.log"
        self.processes.append(
            subprocess.Popen(
                ["cargo", "lambda", "watch", "--ignore-changes", "--timeout", str(FIRST_INVOKE_TIMEOUT),
                 "-A", "127.0.0.1", "-P", str(self.port)],
                cwd=ROOT, env=watch_env, stdin=subprocess.DEVNULL,
                stdout=self.watch_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
            )
        )
        wait_for(f"http://127.0.0.1:{self.port}/", self.processes[-1], "cargo lambda watch", self.watch_log, 120)

    def invoke(self, function: str, event: Path) -> dict:
        result = subprocess.run(
            ["cargo", "lambda", "invoke", function, "--data-file", str(event),
             "-A", "127.0.0.1", "-P", str(self.port), "-o", "json"],
            cwd=ROOT, env=self.invoke_env, capture_output=True, text=True,
        )
        if result.returncode != 0:
            tail = "\n".join(self.watch_log.read_text().splitlines()[-40:])
            raise InvokeError(
                f"`cargo lambda invoke {function} --data-file {event.relative_to(ROOT)}` failed "
                f"({result.returncode}):\n{result.stderr.strip()}\n--- last lines of {self.watch_log}:\n{tail}"
            )
        return json.loads(result.stdout)

    def drain(self, queue: str) -> list[dict]:
        """Every message on the queue, deleted as read."""
        bodies = []
        while True:
            received = self.sqs.receive_message(
                QueueUrl=self.queues[queue], MaxNumberOfMessages=10, WaitTimeSeconds=0,
                AttributeNames=["All"],
            ).get("Messages", [])
            if not received:
                return bodies
            for message in received:
                bodies.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queues[queue], ReceiptHandle=message["ReceiptHandle"])

    def close(self) -> None:
        if self.git is not None:
            self.git.close()
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


class InvokeError(Exception):
    pass


def body_of(response: dict):
    body = response.get("body")
    if body is None:
        return None
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    try:
        return json.loads(body)
    except ValueError:
        return body


def check(expected: dict, response: dict, queued: dict[str, list[dict]]) -> list[str]:
    problems = []
    if "status" in expected and response.get("statusCode") != expected["status"]:
        problems.append(f"status {response.get('statusCode')}, expected {expected['status']}")
    for part, document in (("body", body_of(response)), ("response", response)):
        for key, want in expected.get(part, {}).items():
            if not isinstance(document, dict) or key not in document:
                problems.append(f"{part} has no `{key}`: {document!r}")
            elif callable(want):
                if not want(document[key]):
                    problems.append(f"{part} `{key}` is {document[key]!r}, expected {want.__doc__ or 'otherwise'}")
            elif want is not None and document[key] != want:
                problems.append(f"{part} `{key}` is {document[key]!r}, expected {want!r}")
    if "failures" in expected:
        failures = response.get("batchItemFailures")
        if not isinstance(failures, list) or len(failures) != expected["failures"]:
            problems.append(f"batchItemFailures {failures!r}, expected {expected['failures']}")
    for queue in ("plan", "apply"):
        want = expected.get(queue, 0)
        if len(queued[queue]) != want:
            problems.append(f"{len(queued[queue])} messages on the {queue} queue, expected {want}: {queued[queue]}")
        for message in queued[queue]:
            for key, value in expected.get(f"{queue}_message", expected.get("message", {})).items():
                if key not in message or (value is not None and message[key] != value):
                    problems.append(f"{queue} queue message `{key}` is {message.get(key)!r}, expected {value!r}")
    return problems


def function_of(event: Path) -> str | None:
    prefix = event.name.split("-", 1)[0]
    return prefix if prefix in FUNCTIONS else None


def fresh_database(server_url: str, name: str) -> str:
    """The URL of database `name` on the server of `server_url`, emptied first."""
    parts = urllib.parse.urlsplit(server_url)
    url = urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
    for statement in (f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'):
        subprocess.run(["psql", server_url, "-qXc", statement], check=True,
                       env={**os.environ, "PGOPTIONS": "-c client_min_messages=warning"})
    return url


def invoke_all(stack: Stack) -> int:
    events = sorted((ROOT / "events").glob("*.json"))
    # ORDER first, so each sample finds the data it shows; a file ORDER does not name runs after.
    ordered = [ROOT / "events" / name for name in ORDER]
    ordered += [event for event in events if event.name not in ORDER]
    # (file, expected answer, whether the deliveries seen before are forgotten)
    runs = [(event, EXPECTED.get(event.name), True) for event in ordered]
    runs.append((ROOT / "events" / REDELIVERY, PUSH_ACCEPTED, True))
    runs.append((ROOT / "events" / REDELIVERY, DUPLICATE, False))
    # What the samples' placeholders stand for here, filled in as the runs find it out.
    real: dict[str, str] = {SAMPLE_COMMIT: stack.git.head}
    failed = 0
    for number, (event, expected, forget) in enumerate(runs):
        function = function_of(event)
        label = f"events/{event.name}" + (" (again)" if number >= len(ordered) else "")
        if function is None:
            print(f"FAIL {label}: no function of that name: name it `FUNCTION-….json`")
            failed += 1
            continue
        if not event.is_file():
            print(f"FAIL {label}: ORDER in scripts/invoke.py names a file events/ does not have")
            failed += 1
            continue
        # The four GitHub push files are one delivery in four envelopes (events/README.md):
        # each is checked as a first delivery, so the one before is forgotten.
        if function == "webhook" and forget:
            subprocess.run(["psql", stack.database_url, "-qXc", "DELETE FROM webhook_deliveries"],
                           check=True, capture_output=True)
        try:
            # A webhook's signature covers its body, which must stay as it is.
            response = stack.invoke(function, event if function == "webhook" else with_real_ids(event, real))
        except InvokeError as error:
            print(f"FAIL {function} {label}: {error}")
            failed += 1
            continue
        queued = {queue: stack.drain(queue) for queue in ("plan", "apply")}
        if expected is None:
            print(f"FAIL {function} {label}: no expected answer: add one to EXPECTED in scripts/invoke.py")
            print(f"     response: {json.dumps(response)[:2000]}\n     queued: {json.dumps(queued)[:2000]}")
            failed += 1
            continue
        problems = check(expected, response, queued)
        if event.name == "planner-plan-request.json" and queued["apply"]:
            real[SAMPLE_SYNC_ID] = queued["apply"][0].get("sync_id", SAMPLE_SYNC_ID)
        if problems:
            failed += 1
            print(f"FAIL {function} {label}: " + "; ".join(problems))
            print(f"     response: {json.dumps(response)[:2000]}")
        else:
            print(f"ok   {function} {label}")
    print(f"invoke-all: {len(runs) - failed} of {len(runs)} invocations answered as expected")
    return 1 if failed else 0


def with_real_ids(event: Path, real: dict[str, str]) -> Path:
    """`event` with the samples' placeholder sync id and commit replaced by the real ones (a
    copy under .dev/invoke/events; the file itself when it names neither). SQS records get the
    MD5 of their new body."""
    text = event.read_text()
    if not any(placeholder in text for placeholder in real):
        return event
    document = json.loads(replace_all(text, real))
    for record in document.get("Records", []) if isinstance(document, dict) else []:
        if isinstance(record, dict) and isinstance(record.get("body"), str):
            record["md5OfBody"] = hashlib.md5(record["body"].encode()).hexdigest()
    copy = SCRATCH / "events" / event.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(json.dumps(document, indent=2))
    return copy


def single_run_ids(stack: Stack) -> dict[str, str]:
    """For `make invoke` of one sample: the example's head for the sample's commit and, once
    the planner has made one (`make invoke FN=planner EVENT=events/planner-plan-request.json`),
    the newest plan of database `ritmo_invoke` for the sample's sync id."""
    real = {SAMPLE_COMMIT: stack.git.head}
    newest = subprocess.run(
        ["psql", stack.database_url, "-qXAtc",
         "SELECT id FROM sync_runs WHERE plan IS NOT NULL ORDER BY started_at DESC LIMIT 1"],
        capture_output=True, text=True,
    ).stdout.strip()
    if newest:
        real[SAMPLE_SYNC_ID] = newest
    return real


def replace_all(text: str, replacements: dict[str, str]) -> str:
    for placeholder, value in replacements.items():
        text = text.replace(placeholder, value)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--function", choices=FUNCTIONS)
    parser.add_argument("--event", type=Path)
    parser.add_argument("--all", action="store_true")
    arguments = parser.parse_args()
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        raise SystemExit("DATABASE_URL is not set (the Makefile gets it from scripts/ensure-postgres.sh)")
    if not arguments.all and not (arguments.function and arguments.event):
        parser.error("give --function and --event, or --all")
    if arguments.event and not arguments.event.is_file():
        raise SystemExit(f"{arguments.event}: no such event file (see events/README.md for the list)")

    # `make` passes Ctrl-C and kill on as signals; the finally below must still stop moto and
    # the emulator, which run in sessions of their own.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if arguments.all:
        database_url = fresh_database(database_url, "ritmo_invoke_all")
    stack = Stack()
    try:
        stack.start(database_url)
        if not arguments.all:
            event = arguments.event.resolve()
            if arguments.function != "webhook":
                event = with_real_ids(event, single_run_ids(stack))
            else:
                # The samples share one delivery id; each run shows a first delivery, not the
                # redelivery of the run before on this database. (No table yet: nothing to forget.)
                subprocess.run(["psql", stack.database_url, "-qXc", "DELETE FROM webhook_deliveries"],
                               capture_output=True)
            response = stack.invoke(arguments.function, event)
            print(json.dumps(response, indent=2))
            for queue in ("plan", "apply"):
                for message in stack.drain(queue):
                    print(f"{queue} queue: {json.dumps(message)}")
            return 0
        return invoke_all(stack)
    finally:
        stack.close()


if __name__ == "__main__":
    sys.exit(main())
