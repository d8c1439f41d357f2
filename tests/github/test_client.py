"""The GitHub client against the fake GitHub: pagination, ETags, App authentication, rate limits,
retries, and failures raised as GITHUB_API_ERROR."""
from __future__ import annotations

import time

import pytest

from mcc.errors import GitHubApiError, GitHubNotConfigured
from mcc.github.auth import AppInstallationAuth, SharedCache, client_for
from mcc.github.client import GitHubClient
from tests.factories import make_project
from tests.live import free_port


def token_client(fake, **options) -> GitHubClient:
    from mcc.github.auth import TokenAuth

    settings = {"max_retries": 3, "backoff_base": 0.01, "max_wait": 3.0, "timeout": 5.0, **options}
    return GitHubClient(fake.base_url, TokenAuth(fake.token), **settings)


@pytest.fixture
def repo(fake_github):
    return fake_github.add_repo("octo-org/big-repo")


# --- pagination and conditional requests -----------------------------------------------------------
def test_pagination_follows_link_headers_to_the_last_page(fake_github, repo):
    for _ in range(250):
        repo.add_issue()
    client = token_client(fake_github)
    items = list(client.paginate("/repos/octo-org/big-repo/issues", {"state": "all", "per_page": 100}))
    assert sorted(i["number"] for i in items) == list(range(1, 251))
    pages = fake_github.calls("GET", r"/issues$")
    assert [c.query.get("page", "1") for c in pages] == ["1", "2", "3"]


def test_etag_makes_an_unchanged_listing_a_304(fake_github, repo):
    repo.add_issue()
    client = token_client(fake_github)
    first = next(client.pages("/repos/octo-org/big-repo/issues"))
    assert first.status == 200 and first.etag
    again = list(client.pages("/repos/octo-org/big-repo/issues", etag=first.etag))
    assert [p.status for p in again] == [304] and again[0].not_modified
    assert fake_github.calls()[-1].headers["If-None-Match"] == first.etag
    repo.add_issue()
    changed = next(client.pages("/repos/octo-org/big-repo/issues", etag=first.etag))
    assert changed.status == 200 and changed.etag != first.etag


def test_links_off_the_api_host_are_not_followed(fake_github, repo):
    client = token_client(fake_github)
    with pytest.raises(GitHubApiError, match="off the API host"):
        client.get("https://evil.example.test/repos/octo-org/big-repo/issues")
    assert fake_github.calls() == []


# --- GitHub App authentication ---------------------------------------------------------------------
@pytest.fixture
def app_config(github_config, fake_github, rsa_keys):
    github_config.update(MCC_GITHUB_TOKEN=None, MCC_GITHUB_APP_ID=fake_github.app_id,
                         MCC_GITHUB_APP_PRIVATE_KEY=rsa_keys[0])
    return github_config


def test_app_jwt_is_exchanged_for_an_installation_token_once_and_cached(db_session, app_config, fake_github,
                                                                        redis_client):
    fake_github.add_repo("octo-org/app-repo", installation_id="4242")
    project = make_project(github_repo="octo-org/app-repo", github_installation_id="4242")
    for _ in range(3):
        client_for(project).get("/repos/octo-org/app-repo/pulls")
    assert len(fake_github.exchanges) == 1  # the fake verified the RS256 JWT with the public key
    claims = fake_github.exchanges[0]
    assert claims["iss"] == fake_github.app_id and claims["exp"] - claims["iat"] <= 600
    [key] = [k for k in redis_client.scan_iter("mcc:github:token:*")]
    assert 3600 - 300 - 5 <= redis_client.ttl(key) <= 3600 - 300  # replaced 5 minutes before expiry
    tokens = {c.headers["Authorization"] for c in fake_github.calls("GET", r"/pulls$")}
    assert len(tokens) == 1 and tokens.pop().startswith("Bearer ghs_")


def test_private_key_may_be_a_path_or_one_line_pem(db_session, app_config, fake_github, rsa_keys, tmp_path):
    fake_github.add_repo("octo-org/app-repo", installation_id="4242")
    project = make_project(github_repo="octo-org/app-repo", github_installation_id="4242")
    key_file = tmp_path / "app.pem"
    key_file.write_text(rsa_keys[0])
    app_config["MCC_GITHUB_APP_PRIVATE_KEY"] = str(key_file)
    assert client_for(project).get("/repos/octo-org/app-repo/pulls") == []
    app_config["MCC_GITHUB_APP_PRIVATE_KEY"] = rsa_keys[0].replace("\n", "\\n")
    auth = client_for(project).auth
    auth.cache.delete_prefix("mcc:github:token:")
    assert client_for(project).get("/repos/octo-org/app-repo/pulls") == []
    assert len(fake_github.exchanges) == 2


def test_installation_is_looked_up_when_the_project_names_none(db_session, app_config, fake_github):
    fake_github.add_repo("octo-org/app-repo", installation_id="777")
    project = make_project(github_repo="octo-org/app-repo")
    assert client_for(project).get("/repos/octo-org/app-repo/pulls") == []
    assert fake_github.calls("GET", r"/installation$") and fake_github.calls("POST", r"/installations/777/")


def test_in_process_cache_without_redis_and_short_lived_tokens_are_not_cached(fake_github, rsa_keys):
    fake_github.add_repo("octo-org/app-repo", installation_id="9")
    cache = SharedCache(None)
    auth = AppInstallationAuth(fake_github.app_id, rsa_keys[0], "9", "octo-org/app-repo", cache)
    client = GitHubClient(fake_github.base_url, auth, backoff_base=0.01)
    client.get("/repos/octo-org/app-repo/pulls")
    client.get("/repos/octo-org/app-repo/pulls")
    assert len(fake_github.exchanges) == 1
    fake_github.token_lifetime = 120  # expires within the refresh margin: never reused
    auth.invalidate(client)
    client.get("/repos/octo-org/app-repo/pulls")
    client.get("/repos/octo-org/app-repo/pulls")
    assert len(fake_github.exchanges) == 3


def test_a_revoked_installation_token_is_replaced_once(fake_github, rsa_keys):
    fake_github.add_repo("octo-org/app-repo", installation_id="9")
    auth = AppInstallationAuth(fake_github.app_id, rsa_keys[0], "9", "octo-org/app-repo", SharedCache(None))
    client = GitHubClient(fake_github.base_url, auth, backoff_base=0.01)
    client.get("/repos/octo-org/app-repo/pulls")
    fake_github.tokens = {fake_github.token}  # GitHub revoked every installation token
    assert client.get("/repos/octo-org/app-repo/pulls") == []
    assert len(fake_github.exchanges) == 2


def test_a_jwt_signed_with_the_wrong_key_is_a_github_api_error(fake_github):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    fake_github.add_repo("octo-org/app-repo", installation_id="9")
    auth = AppInstallationAuth(fake_github.app_id, other, "9", "octo-org/app-repo", SharedCache(None))
    with pytest.raises(GitHubApiError) as caught:
        GitHubClient(fake_github.base_url, auth, backoff_base=0.01).get("/repos/octo-org/app-repo/pulls")
    assert caught.value.status == 502 and caught.value.code == "GITHUB_API_ERROR"
    assert caught.value.github_status == 401 and "JSON web token" in caught.value.message


def test_without_token_or_app_github_is_not_configured(db_session, github_config):
    github_config["MCC_GITHUB_TOKEN"] = None
    project = make_project()
    with pytest.raises(GitHubNotConfigured):
        client_for(project)


# --- rate limits ---------------------------------------------------------------------------------------
def test_primary_rate_limit_waits_for_a_near_reset_then_retries(fake_github, repo):
    fake_github.fail("GET", r"/pulls$", 403, {"message": "API rate limit exceeded for installation ID 1.",
                                              "documentation_url": "https://docs.github.com/rest/rate-limit"},
                     headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": lambda: str(int(time.time()) + 1)})
    started = time.monotonic()
    assert token_client(fake_github).get("/repos/octo-org/big-repo/pulls") == []
    assert 0.5 <= time.monotonic() - started < 4
    assert len(fake_github.calls("GET", r"/pulls$")) == 2


def test_primary_rate_limit_with_a_far_reset_fails_at_once_with_github_message(fake_github, repo):
    fake_github.fail("GET", r"/pulls$", 403, {"message": "API rate limit exceeded for installation ID 1."},
                     headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": lambda: str(int(time.time()) + 3000)})
    started = time.monotonic()
    with pytest.raises(GitHubApiError) as caught:
        token_client(fake_github).get("/repos/octo-org/big-repo/pulls")
    assert time.monotonic() - started < 1
    error = caught.value
    assert "API rate limit exceeded" in error.message and error.details["rate_limit"] == "primary"
    assert 2900 < error.details["retry_after"] <= 3001


def test_secondary_rate_limit_honours_retry_after(fake_github, repo):
    fake_github.fail("GET", r"/pulls$", 403, {"message": "You have exceeded a secondary rate limit."},
                     headers={"Retry-After": "1"})
    started = time.monotonic()
    assert token_client(fake_github).get("/repos/octo-org/big-repo/pulls") == []
    assert time.monotonic() - started >= 1
    fake_github.fail("POST", r"/comments$", 429, {"message": "You have exceeded a secondary rate limit."},
                     headers={"Retry-After": "120"})
    with pytest.raises(GitHubApiError) as caught:
        token_client(fake_github).post("/repos/octo-org/big-repo/issues/1/comments", {"body": "x"})
    assert caught.value.details["rate_limit"] == "secondary" and caught.value.details["retry_after"] == 121


def test_a_plain_403_is_not_mistaken_for_a_rate_limit(fake_github, repo):
    fake_github.fail("GET", r"/pulls$", 403, {"message": "Resource not accessible by integration"})
    with pytest.raises(GitHubApiError, match="Resource not accessible by integration"):
        token_client(fake_github).get("/repos/octo-org/big-repo/pulls")
    assert len(fake_github.calls()) == 1


# --- server errors and failures -----------------------------------------------------------------------
def test_5xx_is_retried_with_backoff(fake_github, repo):
    fake_github.fail("GET", r"/pulls$", 502, {"message": "Server Error"}, times=2)
    assert token_client(fake_github).get("/repos/octo-org/big-repo/pulls") == []
    assert len(fake_github.calls("GET", r"/pulls$")) == 3


def test_persistent_5xx_becomes_github_api_error_after_the_retries(fake_github, repo):
    fake_github.fail("GET", r"/pulls$", 503, {"message": "Service Unavailable"}, times=10)
    with pytest.raises(GitHubApiError) as caught:
        token_client(fake_github, max_retries=2).get("/repos/octo-org/big-repo/pulls")
    assert caught.value.github_status == 503 and "Service Unavailable" in caught.value.message
    assert len(fake_github.calls("GET", r"/pulls$")) == 3


def test_client_errors_carry_githubs_message_and_are_not_retried(fake_github, repo):
    with pytest.raises(GitHubApiError) as caught:
        token_client(fake_github).get("/repos/octo-org/missing/pulls")
    error = caught.value
    assert error.github_status == 404 and error.details["github_message"] == "Not Found"
    assert error.details["documentation_url"].startswith("https://docs.github.com")
    assert len(fake_github.calls()) == 1


def test_an_unreachable_github_is_a_github_api_error(fake_github):
    from mcc.github.auth import TokenAuth

    client = GitHubClient(f"http://127.0.0.1:{free_port()}", TokenAuth("t"), max_retries=1, backoff_base=0.01,
                          timeout=1)
    with pytest.raises(GitHubApiError, match="could not be reached"):
        client.get("/repos/a/b/pulls")
