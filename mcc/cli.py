"""Operator commands: ``flask --app wsgi users ...``."""
from __future__ import annotations

import click
from flask.cli import AppGroup

from mcc.errors import ApiError
from mcc.extensions import db
from mcc.models.auth import ROLES
from mcc.services import users as user_service

users_cli = AppGroup("users", help="Create and manage MCC users.")


def _run(action):
    try:
        result = action()
        db.session.commit()
        return result
    except ApiError as exc:
        db.session.rollback()
        raise click.ClickException(exc.message) from exc


@users_cli.command("create")
@click.argument("username")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="Prompted for when omitted.")
def create(username, role, password):
    """Create a user."""
    user = _run(lambda: user_service.create_user(username, password, role))
    click.echo(f"created {user.username} ({user.role}) id={user.id}")


@users_cli.command("list")
def list_():
    """List users."""
    for user in user_service.list_users():
        state = "active" if user.is_active else "disabled"
        tfa = "2fa" if user.two_factor_enabled else "no-2fa"
        click.echo(f"{user.username}\t{user.role}\t{state}\t{tfa}\t{user.id}")


@users_cli.command("set-password")
@click.argument("username")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def set_password(username, password):
    """Set a user's password; their existing tokens stop working."""
    _run(lambda: user_service.set_password(username, password))
    click.echo(f"password of {username} changed; existing sessions revoked")


@users_cli.command("disable")
@click.argument("username")
def disable(username):
    """Disable a user; their existing tokens stop working."""
    _run(lambda: user_service.disable_user(username))
    click.echo(f"{username} disabled")


@users_cli.command("reset-2fa")
@click.argument("username")
def reset_2fa(username):
    """Remove a user's 2FA (lost authenticator); they log in with the password only."""
    _run(lambda: user_service.reset_two_factor(username))
    click.echo(f"2FA of {username} removed; existing sessions revoked")


@click.command("quickstart-admin")
@click.option("--username", default="admin", show_default=True)
def quickstart_admin(username):
    """Create a first admin with a random password when there is no admin yet (quickstart)."""
    import secrets

    if any(user.role == "admin" and user.is_active for user in user_service.list_users()):
        click.echo("An admin already exists. Forgot the password? "
                   f"flask --app wsgi users set-password {username}")
        return
    password = secrets.token_urlsafe(12)
    _run(lambda: user_service.create_user(username, password, "admin"))
    click.echo(f"Created the first admin.  username: {username}  password: {password}")
    click.echo("It is shown only this once; change it with: flask --app wsgi users set-password "
               f"{username}")


def init_app(app) -> None:
    app.cli.add_command(users_cli)
    app.cli.add_command(quickstart_admin)
