"""Configuration comes from the environment only, with safe defaults."""
from __future__ import annotations

from pathlib import Path

import pytest

from mcc.config import VARIABLES, ConfigError, load_config, normalise_database_url

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("url", [
    "postgres://u:p@h:5432/d", "postgresql://u:p@h:5432/d", "postgresql+psycopg2://u:p@h:5432/d"])
def test_every_postgres_spelling_uses_psycopg2(url):
    assert normalise_database_url(url) == "postgresql+psycopg2://u:p@h:5432/d"


def test_production_refuses_to_start_without_a_secret(tmp_path):
    with pytest.raises(ConfigError, match="MCC_SECRET_KEY"):
        load_config({"MCC_ENV": "production", "MCC_INSTANCE_PATH": str(tmp_path)})


@pytest.mark.parametrize("secret", ["x", "a" * 31, "é" * 15])
def test_production_refuses_a_short_secret_naming_the_variable(tmp_path, secret):
    with pytest.raises(ConfigError, match="MCC_SECRET_KEY is .* bytes.*at least 32"):
        load_config({"MCC_ENV": "production", "MCC_INSTANCE_PATH": str(tmp_path), "MCC_SECRET_KEY": secret})


def test_production_accepts_a_32_byte_secret_and_development_any(tmp_path):
    env = {"MCC_INSTANCE_PATH": str(tmp_path), "DATABASE_URL": "postgresql://u@h/d"}
    assert load_config({**env, "MCC_ENV": "production", "MCC_SECRET_KEY": "k" * 32})["SECRET_KEY"] == "k" * 32
    assert load_config({**env, "MCC_SECRET_KEY": "x"})["SECRET_KEY"] == "x"


def test_the_embedded_sqlite_file_is_created_private(tmp_path):
    """The database holds password hashes and sealed secrets: 0600 from its creation, journal too."""
    import sqlite3

    instance = tmp_path / "instance"
    config = load_config({"MCC_INSTANCE_PATH": str(instance)})
    database = instance / "mcc.db"
    assert config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{database}"
    assert database.stat().st_mode & 0o777 == 0o600
    assert instance.stat().st_mode & 0o077 == 0
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE t (x)")
    assert database.stat().st_mode & 0o777 == 0o600
    load_config({"MCC_INSTANCE_PATH": str(instance)})  # an existing database is left as it is
    assert database.stat().st_size > 0


def test_development_secret_is_generated_once_and_kept(tmp_path):
    env = {"MCC_INSTANCE_PATH": str(tmp_path)}
    first, second = load_config(env)["SECRET_KEY"], load_config(env)["SECRET_KEY"]
    assert first == second and len(first) >= 64
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_defaults_are_embedded_mode(tmp_path):
    config = load_config({"MCC_INSTANCE_PATH": str(tmp_path)})
    assert config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'mcc.db'}"
    assert config["REDIS_URL"] is None
    assert config["RATELIMIT_STORAGE_URI"] == "memory://"
    assert config["RATELIMIT_APPLICATION"] == "100 per minute"
    assert config["MCC_TRUSTED_PROXIES"] == 0
    assert config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds() == 900


def test_readme_variables_table_is_the_generated_one():
    """README's table is VARIABLES itself: regenerate it with `python -m mcc.config --write-readme`."""
    from mcc.config import README_TABLE_END, README_TABLE_START, variables_table

    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index(README_TABLE_START) + len(README_TABLE_START):readme.index(README_TABLE_END)]
    assert block.strip() == variables_table(), "run `python -m mcc.config --write-readme`"
    assert all(f"`{name}`" in block for name, _, _ in VARIABLES)


@pytest.mark.parametrize("value, expected", [
    ("5 per 10 minutes", ("5", 600.0)), ("2.5 per hour", ("2.5", 3600.0)), ("$1 per 30 seconds", ("1", 30.0)),
    ("10 per 1 day", ("10", 86400.0)), ("", None), (None, None)])
def test_the_velocity_limit_is_usd_per_window(value, expected):
    from decimal import Decimal

    from mcc.config import parse_velocity

    parsed = parse_velocity(value)
    assert parsed == (None if expected is None else (Decimal(expected[0]), expected[1]))


@pytest.mark.parametrize("value", ["5", "five per minute", "0 per minute", "5 per 0 minutes", "5 per fortnight"])
def test_a_velocity_limit_that_does_not_parse_refuses_to_start(value, tmp_path):
    with pytest.raises(ConfigError, match="MCC_VELOCITY_LIMIT"):
        load_config({"MCC_INSTANCE_PATH": str(tmp_path), "MCC_VELOCITY_LIMIT": value})
