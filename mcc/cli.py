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
    """Disable a user; their existing tokens stop working (not the last active admin)."""
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
                   f".venv/bin/flask --app wsgi users set-password {username}")
        return
    password = secrets.token_urlsafe(12)
    _run(lambda: user_service.create_user(username, password, "admin"))
    click.echo(f"Created the first admin.  username: {username}  password: {password}")
    click.echo("It is shown only this once; change it with: .venv/bin/flask --app wsgi users set-password "
               f"{username}")


emergency_cli = AppGroup("emergency", help="Stop every agent at once, or resume them.")


@emergency_cli.command("pause-all")
@click.option("--reason", default=None, help="Why (recorded and shown to every client).")
def pause_all(reason):
    """Pause every agent now: no new LLM call starts on any worker."""
    import getpass

    from mcc.services import emergency
    from mcc.runtime.control import announce_pause

    result = _run(lambda: emergency.pause_all(f"cli:{getpass.getuser()}", None, reason))
    announce_pause(result["state"])
    click.echo(f"{result['message']} ({result['paused_agents']} agents, "
               f"{result['active_conversations']} active conversations)")


@emergency_cli.command("resume-all")
def resume_all():
    """Resume every agent; held work continues in order."""
    import getpass

    from mcc.runtime.control import resume_everything

    try:
        result = resume_everything(f"cli:{getpass.getuser()}", None)
    except ApiError as exc:
        db.session.rollback()
        raise click.ClickException(exc.message) from exc
    click.echo(f"{result['message']} ({result['resumed_conversations']} conversations had held work)")


@emergency_cli.command("status")
def status():
    """Print `paused` with who, when and why, or `running`."""
    from mcc.services import emergency

    state = emergency.current_state()
    if state:
        click.echo(f"paused by {state['actor']} ({state['triggered_by']}) at {state['timestamp']}: "
                   f"{state['reason']}")
    else:
        click.echo("running")


@click.command("jobs")
@click.option("--limit", default=50, show_default=True, help="Rows per state.")
@click.option("--scheduled", is_flag=True, help="List the periodic jobs with their schedules instead.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the items of GET /api/v1/turns).")
def jobs(limit, scheduled, as_json):
    """List queued, held, running and failed agent turns with their conversation and agent."""
    import json

    from mcc.models.agent import Agent
    from mcc.models.conversation import Conversation
    from mcc.periodic import schedule_report
    from mcc.schemas.turns import TurnSchema
    from mcc.services.runs import list_turns

    if scheduled:
        rows = schedule_report()
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        for row in rows:
            next_run = row["next_run"] or "not scheduled (no worker ran yet)"
            click.echo(f"{row['name']}\t{row['schedule']}\tnext {next_run}"
                       f"\t{row['function']} on queue {row['queue']}: {row['description']}")
        return
    by_state = {state: list_turns(1, limit, state) for state in ("queued", "held", "running", "failed")}
    if as_json:
        click.echo(json.dumps({state: {"total": total, "items": TurnSchema(many=True).dump(items)}
                               for state, (items, total) in by_state.items()}, indent=2))
        return
    for state, (items, total) in by_state.items():
        click.echo(f"{state} ({total})")
        for item in items:
            agent, conversation = db.session.get(Agent, item["agent_id"]), db.session.get(Conversation,
                                                                                           item["conversation_id"])
            line = (f"  turn {item['id']}  agent {agent.name!r}  conversation {conversation.title!r} "
                    f"({item['conversation_id']})  attempts {item['attempts']}  "
                    f"created {item['created_at']:%Y-%m-%d %H:%M:%S}")
            if item["heartbeat_age_s"] is not None:
                line += f"  heartbeat {item['heartbeat_age_s']:.1f} s ago"
            if item["error"]:
                line += f"  error: {item['error']}"
            click.echo(line)


def init_app(app) -> None:
    app.cli.add_command(users_cli)
    app.cli.add_command(quickstart_admin)
    app.cli.add_command(emergency_cli)
    app.cli.add_command(jobs)
