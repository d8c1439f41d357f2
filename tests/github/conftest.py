"""A fake GitHub on loopback, MCC configured to use it, and helpers to deliver signed webhooks."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mcc.github.webhooks import sign
from tests.factories import make_project
from tests.github.fake_github import FakeGitHub

SECRET = "webhook-secret-for-tests"
# Real GitHub payloads (octokit/webhooks fixtures, MIT: see LICENSE there), committed with the tests.
PAYLOADS = Path(__file__).resolve().parents[1] / "fixtures" / "github"
HELLO = "Codertocat/Hello-World"
# What the tests change in the (session-wide) app's configuration; restored after each test.
GITHUB_KEYS = ("MCC_GITHUB_API_URL", "MCC_GITHUB_TOKEN", "MCC_GITHUB_APP_ID", "MCC_GITHUB_APP_PRIVATE_KEY",
               "MCC_GITHUB_WEBHOOK_SECRET", "MCC_GITHUB_WEBHOOK_RATE_LIMIT", "MCC_GITHUB_BACKOFF_BASE",
               "MCC_GITHUB_MAX_RETRIES", "MCC_GITHUB_RATE_LIMIT_WAIT", "MCC_GITHUB_TIMEOUT", "MCC_GITHUB_SYNC_INTERVAL",
               "MCC_GITHUB_WEBHOOK_CONCURRENCY", "MCC_GITHUB_WEBHOOK_WAIT")


def payload_path(relative: str) -> Path:
    path = PAYLOADS / relative
    if not path.exists():
        # A missing payload is a broken checkout, not a reason to test less.
        pytest.fail(f"webhook payload fixture {relative} not found under {PAYLOADS}")
    return path


def all_payloads() -> list[str]:
    """Every committed payload, relative to PAYLOADS; none at all is a broken checkout, never zero tests."""
    found = sorted(str(p.relative_to(PAYLOADS)) for p in PAYLOADS.glob("*/*.json"))
    if not found:
        raise RuntimeError(f"no webhook payload fixtures under {PAYLOADS}")
    return found


def load_payload(relative: str) -> dict:
    return json.loads(payload_path(relative).read_text())


@pytest.fixture(scope="session")
def rsa_keys():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@pytest.fixture
def fake_github(rsa_keys):
    fake = FakeGitHub(public_key=rsa_keys[1])
    yield fake
    fake.close()


@pytest.fixture
def github_env(fake_github):
    """Environment for processes (web, worker) started by a test: the fake GitHub, fast retries."""
    return {"MCC_GITHUB_API_URL": fake_github.base_url, "MCC_GITHUB_TOKEN": fake_github.token,
            "MCC_GITHUB_WEBHOOK_SECRET": SECRET, "MCC_GITHUB_BACKOFF_BASE": "0.01", "MCC_GITHUB_RATE_LIMIT_WAIT": "3",
            "MCC_GITHUB_TIMEOUT": "5"}


@pytest.fixture
def github_config(app, fake_github):
    """The in-process app talks to the fake GitHub with a plain token; webhooks use SECRET."""
    saved = {key: app.config.get(key) for key in GITHUB_KEYS}
    app.config.update(MCC_GITHUB_API_URL=fake_github.base_url, MCC_GITHUB_TOKEN=fake_github.token,
                      MCC_GITHUB_APP_ID=None, MCC_GITHUB_APP_PRIVATE_KEY=None, MCC_GITHUB_WEBHOOK_SECRET=SECRET,
                      MCC_GITHUB_BACKOFF_BASE=0.01, MCC_GITHUB_MAX_RETRIES=3, MCC_GITHUB_RATE_LIMIT_WAIT=3.0,
                      MCC_GITHUB_TIMEOUT=5.0, MCC_GITHUB_SYNC_INTERVAL=3600.0)
    yield app.config
    app.config.update(saved)


def bearer_for(role: str):
    """A user of ``role`` and its Authorization header, without argon2 (no password is ever used)."""
    from mcc.extensions import db
    from mcc.models.auth import User
    from mcc.services.auth import issue_tokens

    user = User(username=f"gh-{role}-{uuid.uuid4().hex[:8]}", password_hash="not-a-password", role=role)
    db.session.add(user)
    db.session.commit()
    return user, {"Authorization": f"Bearer {issue_tokens(user)['access_token']}"}


@pytest.fixture
def operator(client):
    return bearer_for("operator")[1]


@pytest.fixture
def viewer(client):
    return bearer_for("viewer")[1]


@pytest.fixture
def hello(app, db_session, github_config, fake_github):
    """The project bound to the repository of the shared payloads, mirrored by the fake GitHub."""
    fake_github.add_repo(HELLO, default_branch="master")
    return make_project(name="Hello", github_repo=HELLO)


def deliver(client, event: str, body: bytes | dict, *, secret: str | None = SECRET, delivery: str | None = None,
            signature: str | None = None, content_type: str = "application/json", headers: dict | None = None,
            project=None):
    """POST a webhook as GitHub does: raw bytes, signed unless ``secret`` is None; to ``project``'s own
    URL when given."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    all_headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
                   "Content-Type": content_type, "User-Agent": "GitHub-Hookshot/test", **(headers or {})}
    if signature is not None:
        all_headers["X-Hub-Signature-256"] = signature
    elif secret is not None:
        all_headers["X-Hub-Signature-256"] = sign(secret, raw)
    url = "/api/v1/webhooks/github" + (f"/{project.id}" if project is not None else "")
    return client.post(url, data=raw, headers=all_headers)


def process_all(app) -> list[str]:
    """Run every stored, unprocessed delivery through the job function (in this process)."""
    from sqlalchemy import select

    from mcc.extensions import db
    from mcc.models.github import WebhookDelivery
    from workers.github import process_delivery

    with app.app_context():
        ids = db.session.scalars(select(WebhookDelivery.id).where(WebhookDelivery.status == "received")
                                 .order_by(WebhookDelivery.received_at)).all()
        return [process_delivery(str(i)) for i in ids]


