#!/usr/bin/env python3
"""Writes the sample Lambda events in this folder (run from anywhere: `python3 events/generate.py`).

The envelopes follow the real AWS fixtures shipped in aws_lambda_events (src/fixtures/:
example-apigw-request.json, example-apigw-v2-request-*.json, example-sqs-event.json,
example-eventbridge-schedule.json); the webhook bodies follow the providers' documented
examples. Signatures are computed here over the exact body bytes with the test secret, so edit
this script, never the JSON files, and run it again.
"""
import base64
import hashlib
import hmac
import json
import pathlib
import urllib.parse

HERE = pathlib.Path(__file__).resolve().parent
SECRET = "ritmo-test-webhook-secret"

ACCOUNT = "123456789012"
REGION = "us-east-1"
API_ID = "a1b2c3d4e5"
STAGE = "live"
HOST = f"{API_ID}.execute-api.{REGION}.amazonaws.com"

OWNER, REPO = "acme", "ritmo-config"
FULL = f"{OWNER}/{REPO}"
BEFORE = "3c2d1e0f9a8b7c6d5e4f30211a0b9c8d7e6f5a4b"
AFTER = "8b5f2a6c1d3e4f5061728394a5b6c7d8e9f00112"
# The one target template.yaml configures (RepoUrl, RepoBranch), which `make invoke` runs.
TARGET = "default"
DELIVERY = "d3b07384-d9a0-11ee-8c3a-0242ac120002"


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def hmac_hex(secret, body):
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- provider payloads -------------------------------------------------------------------

def github_user():
    return {"login": "octocat", "id": 583231, "node_id": "MDQ6VXNlcjU4MzIzMQ==",
            "avatar_url": "https://avatars.githubusercontent.com/u/583231?v=4",
            "url": "https://api.github.com/users/octocat", "html_url": "https://github.com/octocat",
            "type": "User", "site_admin": False}


def github_repository():
    return {
        "id": 714285710, "node_id": "R_kgDOKpNnjg", "name": REPO, "full_name": FULL, "private": True,
        "owner": {"name": OWNER, "email": None, "login": OWNER, "id": 9919, "node_id": "MDEyOk9yZ2FuaXphdGlvbjk5MTk=",
                  "avatar_url": "https://avatars.githubusercontent.com/u/9919?v=4",
                  "url": f"https://api.github.com/users/{OWNER}", "html_url": f"https://github.com/{OWNER}",
                  "type": "Organization", "site_admin": False},
        "html_url": f"https://github.com/{FULL}", "description": "Ritmo configuration (jobs, credentials, plugins)",
        "fork": False, "url": f"https://github.com/{FULL}", "created_at": 1699000000,
        "updated_at": "2026-11-02T08:00:00Z", "pushed_at": 1793784600,
        "git_url": f"git://github.com/{FULL}.git", "ssh_url": f"git@github.com:{FULL}.git",
        "clone_url": f"https://github.com/{FULL}.git", "svn_url": f"https://github.com/{FULL}",
        "homepage": None, "size": 42, "stargazers_count": 0, "watchers_count": 0, "language": None,
        "has_issues": True, "has_projects": False, "has_downloads": True, "has_wiki": False, "has_pages": False,
        "forks_count": 0, "mirror_url": None, "archived": False, "disabled": False, "open_issues_count": 0,
        "license": None, "allow_forking": False, "is_template": False, "topics": [], "visibility": "private",
        "forks": 0, "open_issues": 0, "watchers": 0, "default_branch": "main", "stargazers": 0,
        "master_branch": "main", "organization": OWNER,
    }


def github_commit(sha, message, modified):
    author = {"name": "The Octocat", "email": "octocat@github.com", "username": "octocat"}
    return {"id": sha, "tree_id": "f9d2a07e9488b91af2641b26b9407fe22a451433", "distinct": True,
            "message": message, "timestamp": "2026-11-03T09:29:41Z",
            "url": f"https://github.com/{FULL}/commit/{sha}", "author": author, "committer": author,
            "added": [], "removed": [], "modified": modified}


def github_push():
    commit = github_commit(AFTER, "jobs: raise backend-service timeout to 45m", ["jobs/backend-service.yaml"])
    return {"ref": "refs/heads/main", "before": BEFORE, "after": AFTER, "repository": github_repository(),
            "pusher": {"name": "octocat", "email": "octocat@github.com"},
            "organization": {"login": OWNER, "id": 9919, "url": f"https://api.github.com/orgs/{OWNER}"},
            "sender": github_user(), "created": False, "deleted": False, "forced": False, "base_ref": None,
            "compare": f"https://github.com/{FULL}/compare/{BEFORE[:12]}...{AFTER[:12]}",
            "commits": [commit], "head_commit": commit}


def github_tag_push():
    return {"ref": "refs/tags/v1.4.0", "before": "0000000000000000000000000000000000000000", "after": AFTER,
            "repository": github_repository(), "pusher": {"name": "octocat", "email": "octocat@github.com"},
            "sender": github_user(), "created": True, "deleted": False, "forced": False,
            "base_ref": "refs/heads/main", "compare": f"https://github.com/{FULL}/compare/v1.4.0",
            "commits": [], "head_commit": github_commit(AFTER, "jobs: raise backend-service timeout to 45m",
                                                        ["jobs/backend-service.yaml"])}


def github_ping():
    return {"zen": "Keep it logically awesome.", "hook_id": 448223716,
            "hook": {"type": "Repository", "id": 448223716, "name": "web", "active": True, "events": ["push"],
                     "config": {"content_type": "json", "insecure_ssl": "0",
                                "url": f"https://{HOST}/{STAGE}/webhooks/gitops", "secret": "********"},
                     "updated_at": "2026-11-03T09:00:00Z", "created_at": "2026-11-03T09:00:00Z",
                     "url": f"https://api.github.com/repos/{FULL}/hooks/448223716",
                     "test_url": f"https://api.github.com/repos/{FULL}/hooks/448223716/test",
                     "ping_url": f"https://api.github.com/repos/{FULL}/hooks/448223716/pings",
                     "deliveries_url": f"https://api.github.com/repos/{FULL}/hooks/448223716/deliveries",
                     "last_response": {"code": None, "status": "unused", "message": None}},
            "repository": github_repository(), "sender": github_user()}


def gitlab_push():
    project = {"id": 52841936, "name": REPO, "description": "Ritmo configuration",
               "web_url": f"https://gitlab.com/{FULL}", "avatar_url": None,
               "git_ssh_url": f"git@gitlab.com:{FULL}.git", "git_http_url": f"https://gitlab.com/{FULL}.git",
               "namespace": "acme", "visibility_level": 0, "path_with_namespace": FULL, "default_branch": "main",
               "ci_config_path": "", "homepage": f"https://gitlab.com/{FULL}", "url": f"git@gitlab.com:{FULL}.git",
               "ssh_url": f"git@gitlab.com:{FULL}.git", "http_url": f"https://gitlab.com/{FULL}.git"}
    return {"object_kind": "push", "event_name": "push", "before": BEFORE, "after": AFTER,
            "ref": "refs/heads/main", "ref_protected": True, "checkout_sha": AFTER, "message": None,
            "user_id": 4021, "user_name": "Jane Smith", "user_username": "jsmith",
            "user_email": "", "user_avatar": "https://secure.gravatar.com/avatar/0000?s=80&d=identicon",
            "project_id": 52841936, "project": project,
            "commits": [{"id": AFTER, "message": "jobs: raise backend-service timeout to 45m\n",
                         "title": "jobs: raise backend-service timeout to 45m", "timestamp": "2026-11-03T09:29:41+00:00",
                         "url": f"https://gitlab.com/{FULL}/-/commit/{AFTER}",
                         "author": {"name": "Jane Smith", "email": "[REDACTED]"},
                         "added": [], "modified": ["jobs/backend-service.yaml"], "removed": []}],
            "total_commits_count": 1, "push_options": {},
            "repository": {"name": REPO, "url": f"git@gitlab.com:{FULL}.git", "description": "Ritmo configuration",
                           "homepage": f"https://gitlab.com/{FULL}", "git_http_url": f"https://gitlab.com/{FULL}.git",
                           "git_ssh_url": f"git@gitlab.com:{FULL}.git", "visibility_level": 0}}


def gitea_push():
    user = {"id": 7, "login": "jane", "login_name": "", "full_name": "Jane Smith", "email": "jane@noreply.git.example.com",
            "avatar_url": "https://git.example.com/avatars/7", "language": "", "is_admin": False,
            "username": "jane"}
    owner = {"id": 3, "login": OWNER, "full_name": "Acme", "email": "", "avatar_url": "https://git.example.com/avatars/3",
             "username": OWNER}
    return {"ref": "refs/heads/main", "before": BEFORE, "after": AFTER,
            "compare_url": f"https://git.example.com/{FULL}/compare/{BEFORE}...{AFTER}",
            "commits": [{"id": AFTER, "message": "jobs: raise backend-service timeout to 45m\n",
                         "url": f"https://git.example.com/{FULL}/commit/{AFTER}",
                         "author": {"name": "Jane Smith", "email": "jane@example.com", "username": "jane"},
                         "committer": {"name": "Jane Smith", "email": "jane@example.com", "username": "jane"},
                         "verification": None, "timestamp": "2026-11-03T09:29:41Z", "added": [], "removed": [],
                         "modified": ["jobs/backend-service.yaml"]}],
            "total_commits": 1, "head_commit": None,
            "repository": {"id": 12, "owner": owner, "name": REPO, "full_name": FULL, "description": "",
                           "empty": False, "private": True, "fork": False, "template": False, "mirror": False,
                           "size": 48, "html_url": f"https://git.example.com/{FULL}",
                           "ssh_url": f"ssh://git@git.example.com:2222/{FULL}.git",
                           "clone_url": f"https://git.example.com/{FULL}.git", "original_url": "",
                           "website": "", "default_branch": "main", "archived": False,
                           "created_at": "2026-01-10T10:00:00Z", "updated_at": "2026-11-03T09:29:42Z"},
            "pusher": user, "sender": user}


def bitbucket_push():
    def ref(hash_):
        return {"type": "branch", "name": "main",
                "target": {"type": "commit", "hash": hash_, "message": "jobs: raise backend-service timeout to 45m\n",
                           "date": "2026-11-03T09:29:41+00:00",
                           "author": {"type": "author", "raw": "Jane Smith <jane@example.com>"},
                           "links": {"html": {"href": f"https://bitbucket.org/{FULL}/commits/{hash_}"}}},
                "links": {"html": {"href": f"https://bitbucket.org/{FULL}/branch/main"}}}
    return {"push": {"changes": [{"new": ref(AFTER), "old": ref(BEFORE), "created": False, "forced": False,
                                  "closed": False, "truncated": False, "commits": []}]},
            "actor": {"type": "user", "display_name": "Jane Smith", "nickname": "jsmith",
                      "account_id": "557058:c0b72ad0-1cb5-4018-9cdc-0cde8492c443",
                      "uuid": "{a54f16da-24e9-4d7f-a3a7-b1ba2cd98aa3}"},
            "repository": {"type": "repository", "full_name": FULL, "name": REPO, "is_private": True, "scm": "git",
                           "uuid": "{3a6a3ad8-1fe0-4a1d-a6c7-4a2a4bba6b3c}",
                           "links": {"self": {"href": f"https://api.bitbucket.org/2.0/repositories/{FULL}"},
                                     "html": {"href": f"https://bitbucket.org/{FULL}"}}}}


# --- API Gateway envelopes ---------------------------------------------------------------

def apigw_v1(method, path, resource, headers, body=None, path_parameters=None, query=None, iam=False,
             base64_body=False):
    headers = {"Accept": "*/*", "Host": HOST, "X-Amzn-Trace-Id": "Root=1-6547b7a5-3f1c2b4d5e6f708192a3b4c5",
               "X-Forwarded-For": "140.82.115.10", "X-Forwarded-Port": "443", "X-Forwarded-Proto": "https",
               **headers}
    identity = {"cognitoIdentityPoolId": None, "accountId": None, "cognitoIdentityId": None, "caller": None,
                "apiKey": None, "apiKeyId": None, "accessKey": None, "sourceIp": "140.82.115.10",
                "cognitoAuthenticationType": None, "cognitoAuthenticationProvider": None, "userArn": None,
                "userAgent": headers.get("User-Agent", "curl/8.5.0"), "user": None, "principalOrgId": None}
    if iam:
        identity.update({"accountId": ACCOUNT, "caller": "AROAEXAMPLEROLEID:jane",
                         "accessKey": "ASIAEXAMPLEACCESSKEY", "sourceIp": "203.0.113.7",
                         "userArn": f"arn:aws:sts::{ACCOUNT}:assumed-role/ritmo-operator/jane",
                         "user": "AROAEXAMPLEROLEID:jane"})
    event = {
        "resource": resource, "path": path, "httpMethod": method,
        "headers": headers, "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query, "multiValueQueryStringParameters":
            {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": path_parameters, "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT, "resourceId": "x1y2z3", "path": f"/{STAGE}{path}", "stage": STAGE,
            "domainName": HOST, "domainPrefix": API_ID, "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "extendedRequestId": "NvWoNFnJoAMFkXw=", "protocol": "HTTP/1.1", "identity": identity,
            "resourcePath": resource, "httpMethod": method,
            "requestTime": "03/Nov/2026:09:30:00 +0000", "requestTimeEpoch": 1793784600000, "apiId": API_ID,
        },
        "body": body, "isBase64Encoded": base64_body,
    }
    return event


def apigw_v2(method, path, route, headers, body=None, base64_body=False, cookies=None):
    headers = {"accept": "*/*", "host": HOST, "x-amzn-trace-id": "Root=1-6547b7a5-3f1c2b4d5e6f708192a3b4c5",
               "x-forwarded-for": "140.82.115.10", "x-forwarded-port": "443", "x-forwarded-proto": "https",
               **{k.lower(): v for k, v in headers.items()}}
    if body is not None:
        headers["content-length"] = str(len(base64.b64decode(body) if base64_body else body.encode()))
    return {
        "version": "2.0", "routeKey": route, "rawPath": path, "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT, "apiId": API_ID, "domainName": HOST, "domainPrefix": API_ID,
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "140.82.115.10",
                     "userAgent": headers.get("user-agent", "")},
            "requestId": "NvWoNFnJoAMEJ5Q=", "routeKey": route, "stage": "$default",
            "time": "03/Nov/2026:09:30:00 +0000", "timeEpoch": 1793784600000,
        },
        "body": body, "isBase64Encoded": base64_body,
    }


def github_headers(event, body, secret=SECRET, content_type="application/json"):
    return {"Content-Type": content_type, "User-Agent": "GitHub-Hookshot/a1b2c3d",
            "X-GitHub-Delivery": DELIVERY, "X-GitHub-Event": event,
            "X-GitHub-Hook-ID": "448223716", "X-GitHub-Hook-Installation-Target-ID": "714285710",
            "X-GitHub-Hook-Installation-Target-Type": "repository",
            "X-Hub-Signature-256": "sha256=" + hmac_hex(secret, body.encode())}


WEBHOOK_PATH = "/webhooks/gitops"
WEBHOOK_V1 = dict(method="POST", path=WEBHOOK_PATH, resource=WEBHOOK_PATH)
WEBHOOK_V2 = dict(method="POST", path=WEBHOOK_PATH, route=f"POST {WEBHOOK_PATH}")


def webhook_events():
    push = compact(github_push())
    yield "webhook-github-push-apigw-v1", "GitHub push to `main`, signed (REST API, payload v1)", \
        apigw_v1(**WEBHOOK_V1, headers=github_headers("push", push), body=push)
    yield "webhook-github-push-apigw-v2", "GitHub push to `main`, signed (HTTP API, payload v2)", \
        apigw_v2(**WEBHOOK_V2, headers=github_headers("push", push), body=push)
    yield "webhook-github-push-base64-apigw-v2", "the same push with a base64-encoded body", \
        apigw_v2(**WEBHOOK_V2, headers=github_headers("push", push),
                 body=base64.b64encode(push.encode()).decode(), base64_body=True)
    form = urllib.parse.urlencode({"payload": push})
    yield "webhook-github-push-form-apigw-v1", \
        "the same push as `application/x-www-form-urlencoded` (`payload=`), signed over the form body", \
        apigw_v1(**WEBHOOK_V1, headers=github_headers("push", form, content_type="application/x-www-form-urlencoded"),
                 body=form)
    ping = compact(github_ping())
    yield "webhook-github-ping-apigw-v2", "GitHub `ping` sent when the hook is created", \
        apigw_v2(**WEBHOOK_V2, headers=github_headers("ping", ping), body=ping)
    tag = compact(github_tag_push())
    yield "webhook-github-tag-push-apigw-v2", "GitHub push of tag `v1.4.0`: acknowledged, ignored", \
        apigw_v2(**WEBHOOK_V2, headers=github_headers("push", tag), body=tag)
    yield "webhook-github-bad-signature-apigw-v2", \
        "the push signed with another secret: 401 `bad_signature`", \
        apigw_v2(**WEBHOOK_V2, headers=github_headers("push", push, secret="not-the-test-secret"), body=push)
    gitlab = compact(gitlab_push())
    gitlab_headers = {"Content-Type": "application/json", "User-Agent": "GitLab/17.6.0",
                      "X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET,
                      "X-Gitlab-Event-UUID": "6f3d2a1b-0c9e-4d8f-a7b6-5c4d3e2f1a0b",
                      "X-Gitlab-Webhook-UUID": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
                      "X-Gitlab-Instance": "https://gitlab.com",
                      "Idempotency-Key": "2b9d3f1e-7a6c-4e5d-9b8a-1c2d3e4f5a6b"}
    yield "webhook-gitlab-push-apigw-v2", "GitLab push hook to `main` with the token header", \
        apigw_v2(**WEBHOOK_V2, headers=gitlab_headers, body=gitlab)
    gitea = compact(gitea_push())
    gitea_headers = {"Content-Type": "application/json", "User-Agent": "Go-http-client/2.0",
                     "X-GitHub-Delivery": "9a8b7c6d-5e4f-4031-9213-243546576879", "X-GitHub-Event": "push",
                     "X-GitHub-Event-Type": "push",
                     "X-Gitea-Delivery": "9a8b7c6d-5e4f-4031-9213-243546576879", "X-Gitea-Event": "push",
                     "X-Gitea-Event-Type": "push", "X-Gitea-Signature": hmac_hex(SECRET, gitea.encode()),
                     "X-Gogs-Delivery": "9a8b7c6d-5e4f-4031-9213-243546576879", "X-Gogs-Event": "push",
                     "X-Gogs-Event-Type": "push", "X-Gogs-Signature": hmac_hex(SECRET, gitea.encode()),
                     "X-Hub-Signature-256": "sha256=" + hmac_hex(SECRET, gitea.encode())}
    yield "webhook-gitea-push-apigw-v2", \
        "Gitea push (with its GitHub/Gogs compatibility headers), hex `X-Gitea-Signature`", \
        apigw_v2(**WEBHOOK_V2, headers=gitea_headers, body=gitea)
    bitbucket = compact(bitbucket_push())
    bitbucket_headers = {"Content-Type": "application/json", "User-Agent": "Bitbucket-Webhooks/2.0",
                         "X-Event-Key": "repo:push", "X-Request-UUID": "8d4c1a52-3f5e-4c8b-9a51-2b7f0e6d9c13",
                         "X-Hook-UUID": "{d1a1a3c8-7d0c-4f4a-8f6b-1c2d3e4f5a6b}", "X-Attempt-Number": "1",
                         "X-Hub-Signature": "sha256=" + hmac_hex(SECRET, bitbucket.encode())}
    yield "webhook-bitbucket-push-apigw-v2", "Bitbucket Cloud `repo:push` to `main`, `X-Hub-Signature`", \
        apigw_v2(**WEBHOOK_V2, headers=bitbucket_headers, body=bitbucket)


# --- API routes (REST API, IAM auth) -----------------------------------------------------

PLAN_ID = "0192f5a4-7b1e-7c3a-9d2e-5f6a7b8c9d0e"


def api(method, path, body=None, query=None, iam=True):
    if path.startswith("/api/"):
        resource, params = "/api/{proxy+}", {"proxy": path[len("/api/"):]}
    else:
        resource, params = path, None
    headers = {"User-Agent": "ritmo/0.1.0", "X-Amz-Date": "20261103T093000Z",
               "X-Amz-Security-Token": "IQoJb3JpZ2luX2VjEXAMPLE",
               "Authorization": "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLEACCESSKEY/20261103/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=0000000000000000000000000000000000000000000000000000000000000000"} if iam else {"User-Agent": "ELB-HealthChecker/2.0"}
    if body is not None:
        headers["Content-Type"] = "application/json"
        body = compact(body)
    return apigw_v1(method, path, resource, headers, body=body, path_parameters=params, query=query, iam=iam)


def api_events():
    yield "api-sync", "`POST /api/v1/gitops/sync`: manual sync of target `default`", \
        api("POST", "/api/v1/gitops/sync", {"target": "default", "dry_run": False})
    yield "api-status", "`GET /api/v1/gitops/status`", \
        api("GET", "/api/v1/gitops/status", query={"target": "default"})
    yield "api-sync-history", "`GET /api/v1/gitops/sync/history` (one page)", \
        api("GET", "/api/v1/gitops/sync/history", query={"target": "default", "limit": "20"})
    yield "api-plan", "`GET /api/v1/gitops/plans/{id}`", api("GET", f"/api/v1/gitops/plans/{PLAN_ID}")
    yield "api-plan-approve", "`POST /api/v1/gitops/plans/{id}/approve`", \
        api("POST", f"/api/v1/gitops/plans/{PLAN_ID}/approve", {"comment": "reviewed in CHG-1042"})
    yield "api-rollback", "`POST /api/v1/gitops/rollback` to an earlier commit", \
        api("POST", "/api/v1/gitops/rollback", {"target": "default", "to": BEFORE})
    yield "api-jobs", "`GET /api/v1/jobs`", api("GET", "/api/v1/jobs")
    yield "api-job", "`GET /api/v1/jobs/{name}`", api("GET", "/api/v1/jobs/backend-service")
    yield "api-health-live", "`GET /health/live` (no auth)", api("GET", "/health/live", iam=False)
    yield "api-health-ready", "`GET /health/ready` (no auth; checks Postgres)", api("GET", "/health/ready", iam=False)


# --- EventBridge and SQS -----------------------------------------------------------------

def poller_events():
    yield "poller-scheduled", "EventBridge `rate(1 minute)` schedule", {
        "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": ACCOUNT, "time": "2026-11-03T09:30:00Z", "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/ritmo-gitops-PollerSchedule-1A2B3C4D5E6F"],
        "detail": {}}


def sqs_record(queue, message_id, body, group, dedup, sequence, receive_count=1):
    return {
        "messageId": message_id, "receiptHandle": f"AQEB{message_id.replace('-', '')}EXAMPLE==",
        "body": body, "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
        "attributes": {"ApproximateReceiveCount": str(receive_count), "SentTimestamp": "1793784600123",
                       "SequenceNumber": sequence, "MessageGroupId": group, "SenderId": "AROAEXAMPLEROLEID:ritmo-webhook",
                       "MessageDeduplicationId": dedup, "ApproximateFirstReceiveTimestamp": "1793784600150"},
        "messageAttributes": {}, "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue}", "awsRegion": REGION}


PLAN_QUEUE = "ritmo-gitops-plan.fifo"
APPLY_QUEUE = "ritmo-gitops-apply.fifo"


def queue_events():
    revision = f"main@sha1:{AFTER}"
    webhook = {"target": TARGET, "trigger": "webhook", "revision": revision, "delivery_id": DELIVERY,
               "requested_at": "2026-11-03T09:30:00Z", "actor": "octocat"}
    yield "planner-plan-request", "one PlanRequest from the webhook (FIFO record)", {"Records": [
        sqs_record(PLAN_QUEUE, "2f1e0d9c-8b7a-4c6d-9e5f-1a2b3c4d5e6f", compact(webhook), TARGET,
                   f"{TARGET}/{revision}", "18878027350649327616")]}
    schedule = {"target": "staging", "trigger": "schedule", "revision": f"staging@sha1:{BEFORE}",
                "requested_at": "2026-11-03T09:30:01Z"}
    manual = {"target": TARGET, "trigger": "manual", "requested_at": "2026-11-03T09:31:00Z", "dry_run": True,
              "actor": f"arn:aws:sts::{ACCOUNT}:assumed-role/ritmo-operator/jane"}
    yield "planner-plan-request-batch", \
        "three records, two groups: a webhook and a manual dry run (second receive) of `default`, a schedule of `staging` (a target the template does not configure: acknowledged)", {"Records": [
            sqs_record(PLAN_QUEUE, "2f1e0d9c-8b7a-4c6d-9e5f-1a2b3c4d5e6f", compact(webhook), TARGET,
                       f"{TARGET}/{revision}", "18878027350649327616"),
            sqs_record(PLAN_QUEUE, "7c6b5a49-3827-4161-9504-f3e2d1c0b9a8", compact(schedule), "staging",
                       f"staging/staging@sha1:{BEFORE}", "18878027350649327617"),
            sqs_record(PLAN_QUEUE, "a9b8c7d6-e5f4-4a3b-8c2d-1e0f9a8b7c6d", compact(manual), TARGET,
                       f"{TARGET}/manual/2026-11-03T09:31:00.000000000Z/dry-run", "18878027350649327618",
                       receive_count=2)]}
    yield "planner-invalid-message", "a record whose body is not a PlanRequest (acknowledged, never retried)", \
        {"Records": [sqs_record(PLAN_QUEUE, "0e1d2c3b-4a59-4867-a5b4-c3d2e1f0a9b8", compact({"target": TARGET}), TARGET,
                                f"{TARGET}/invalid", "18878027350649327619")]}
    apply = {"sync_id": PLAN_ID, "target": TARGET}
    yield "applier-apply-request", "one ApplyRequest for a stored plan (FIFO record)", {"Records": [
        sqs_record(APPLY_QUEUE, "5d4c3b2a-1908-4f7e-8d6c-5b4a39281706", compact(apply), TARGET, PLAN_ID,
                   "18878027350649400001")]}


def main():
    rows = []
    for function, events in [("webhook", webhook_events()), ("api", api_events()), ("poller", poller_events()),
                             ("planner", queue_events())]:
        for name, what, event in events:
            target = name.split("-", 1)[0]
            (HERE / f"{name}.json").write_text(json.dumps(event, indent=2, ensure_ascii=False) + "\n")
            rows.append((f"{name}.json", target, what))
    table = "\n".join(f"| `{file}` | {function} | {what} |" for file, function, what in rows)
    readme = README.replace("{{TABLE}}", table).replace("{{SECRET}}", SECRET)
    readme = readme.replace("{{PLAN_ID}}", PLAN_ID).replace("{{BEFORE}}", BEFORE)
    (HERE / "README.md").write_text(readme)


README = """# Sample Lambda events

One JSON event per function and route. Run one under cargo-lambda's emulator, with the
environment `template.yaml` gives the function, the local PostgreSQL and moto (see the README's
"Running the Lambda functions locally"):

```bash
make tools                    # once: cargo-lambda, moto, the SAM CLI into .venv
make invoke FN=webhook EVENT=events/webhook-github-push-apigw-v2.json
make invoke-all               # every function with every file below, each answer checked
```

A file belongs to the function its name starts with; `make invoke-all` refuses a file without
an expected answer in `scripts/invoke.py`.

Every sample names target `default`, the one `template.yaml` configures (`RepoUrl`, here
`https://github.com/acme/ritmo-config.git`, branch `main`), and each gives its real outcome
offline: `make invoke` serves that URL from the example repository (`examples/ritmo-config`,
committed into `.dev/ritmo-config` by `make example-repo`) through an HTTPS proxy of its own
(`HTTPS_PROXY` and `SSL_CERT_FILE` in the functions' environment; the product is unchanged). So
the poller's tick enqueues a plan request, the planner plans the example and, with `AutoApply`,
puts one apply request on the apply queue, the applier applies it, and the API answers with
what they stored. The samples' plan id (`{{PLAN_ID}}`) and earlier
commit (`{{BEFORE}}`) are placeholders: `make invoke` puts the
newest stored plan and the example's head commit in their place, so run the planner first:

```bash
make invoke FN=planner EVENT=events/planner-plan-request.json   # the apply request is printed
make invoke FN=api EVENT=events/api-plan.json                    # that plan
make invoke FN=applier EVENT=events/applier-apply-request.json  # applies it
make invoke FN=api EVENT=events/api-jobs.json                    # the example's jobs
```

`make invoke-all` runs them in that order (`ORDER` in `scripts/invoke.py`) on a fresh database.

`sam local invoke FUNCTION -e events/FILE` works too where Docker is available, and the
handler tests replay the files in-process. They are written by `python3 events/generate.py`:
edit the script, never the JSON, and run it again (it recomputes every signature and MD5).

The envelopes follow the real AWS fixtures shipped in the `aws_lambda_events` crate
(`src/fixtures/example-apigw-request.json`, `example-apigw-v2-request-*.json`,
`example-sqs-event.json`, `example-eventbridge-schedule.json`); the webhook bodies follow the
providers' documented push and ping examples, for the repository `acme/ritmo-config`, branch
`main`, commit `8b5f2a6c1d3e4f5061728394a5b6c7d8e9f00112`.

**Test secret:** `{{SECRET}}`. Every `webhook-*` event verifies with it (GitHub:
`X-Hub-Signature-256` is the HMAC-SHA256 of the exact body bytes; GitLab: `X-Gitlab-Token` is
the secret itself) except `webhook-github-bad-signature-apigw-v2.json`, signed with another
secret. `shared/src/webhook/tests.rs` checks exactly that. Never use this secret anywhere real.

| file | function | what it shows |
|---|---|---|
{{TABLE}}

Notes:
- REST API events (`-apigw-v1`, and every `api-*`) come from stage `live`. `lambda_http` puts
  the stage in front of the path unless `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH` is set, which the
  SAM template does for every function; tests replaying these events need it set too (for
  example in `.cargo/config.toml` `[env]`), or must expect `/live/...`.
- `api-*` events carry the IAM caller in `requestContext.identity` (`userArn`), as API Gateway
  sends it after SigV4 authorisation; `/health/*` have no auth.
- SQS records carry the FIFO attributes (`MessageGroupId` = target, `MessageDeduplicationId`
  as `ritmo::message` computes it, `SequenceNumber`) that no `sam local generate-event`
  template produces.
"""


if __name__ == "__main__":
    main()
