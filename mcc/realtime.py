"""The Socket.IO channel: connection auth, client events, and ``publish()`` from anywhere.

With REDIS_URL set, Socket.IO uses Redis as its message queue, so an event published by any web
process or RQ worker reaches clients connected to any web process. Only authenticated clients
stay connected, so an event emitted without a room reaches every authenticated connection.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import marshmallow as ma
from flask import current_app, g, request
from flask_jwt_extended import decode_token
from flask_socketio import emit, join_room, leave_room
from jwt.exceptions import ExpiredSignatureError, PyJWTError
from limits import parse
from socketio.exceptions import ConnectionRefusedError as SocketConnectionRefused

from mcc.errors import ApiError, Forbidden, TooManyAttempts, Unauthorized, ValidationFailed
from mcc.extensions import db, limiter, socketio
from mcc.models.auth import User
from mcc.services import tokens
from mcc.services.auth import TOTP_PURPOSE, token_is_current

log = logging.getLogger(__name__)


def conversation_room(conversation_id) -> str:
    return f"conversation:{conversation_id}"


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- publishing (web process and workers) -------------------------------------------------------

def publish(event: str, data: dict, room: str | None = None) -> None:
    """Emit ``event`` to ``room``, or to every connection. Call only after the commit it reports."""
    socketio.emit(event, data, to=room)


def publish_message(message) -> None:
    from mcc.schemas.conversations import MessageSchema

    publish("message", MessageSchema().dump(message), conversation_room(message.conversation_id))


def publish_agent_status(agent, current_task: dict | None = None) -> None:
    publish("agent_status", {"agent_id": str(agent.id), "status": agent.status, "current_task": current_task,
                             "timestamp": now_iso()})


def publish_conversation_status(conversation) -> None:
    publish("conversation_status", {"conversation_id": str(conversation.id), "status": conversation.status,
                                    "timestamp": now_iso()}, conversation_room(conversation.id))


# --- connections --------------------------------------------------------------------------------

@dataclass
class Connection:
    user_id: uuid.UUID
    username: str
    role: str
    jti: str
    family: str | None
    expires_at: int
    generation: int


_connections: dict[str, Connection] = {}
_connections_lock = threading.Lock()


def _token_from_handshake(auth) -> str | None:
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        return auth["token"]
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[len("Bearer "):].strip()
    return request.args.get("token")


def _authenticate(token: str | None) -> Connection:
    if not token:
        raise Unauthorized("missing token: connect with auth={'token': <access token>}")
    try:
        claims = decode_token(token)
    except ExpiredSignatureError as exc:
        raise Unauthorized("token expired") from exc
    except PyJWTError as exc:
        raise Unauthorized("invalid token") from exc
    if claims.get("type") != "access" or claims.get("purpose") == TOTP_PURPOSE:
        raise Unauthorized("not an access token")
    keys = [f"jti:{claims['jti']}"] + ([f"family:{claims['fam']}"] if claims.get("fam") else [])
    if tokens.is_revoked(*keys):
        raise Unauthorized("token revoked")
    try:
        user = db.session.get(User, uuid.UUID(claims["sub"]))
    except ValueError:
        user = None
    if user is None or not user.is_active or not token_is_current(user, claims):
        raise Unauthorized("account disabled or token void")
    return Connection(user.id, user.username, user.role, claims["jti"], claims.get("fam"), claims["exp"],
                      user.token_generation)


def _still_valid(connection: Connection) -> bool:
    """Token unexpired and unrevoked, and the account unchanged since (disable, password, role)."""
    if connection.expires_at <= time.time():
        return False
    keys = [f"jti:{connection.jti}"] + ([f"family:{connection.family}"] if connection.family else [])
    if tokens.is_revoked(*keys):
        return False
    user = db.session.get(User, connection.user_id)
    return user is not None and user.is_active and user.token_generation == connection.generation


def _current_connection() -> Connection:
    connection = _connections.get(request.sid)
    if connection is None:
        raise Unauthorized("not authenticated")
    if not _still_valid(connection):
        raise Unauthorized("token expired, revoked or void; reconnect with a fresh access token")
    return connection


def _check_rate(sid: str) -> None:
    item = parse(current_app.config["MCC_SOCKET_RATE_LIMIT"])
    if not limiter.limiter.hit(item, "socket", sid):
        reset_at = limiter.limiter.get_window_stats(item, "socket", sid).reset_time
        raise TooManyAttempts(f"More than {item} client events on this connection.",
                              max(1, int(reset_at - time.time()) + 1))


def client_event(name: str, *aliases: str, sends: bool = False):
    """Register a client event (and its aliases): auth, rate limit, role, validation, and the
    ack/error contract."""
    def decorator(handler):
        @functools.wraps(handler)
        def wrapper(data=None):
            g.request_id = str(uuid.uuid4())  # one id per event: its jobs and log lines carry it
            try:
                connection = _current_connection()
                _check_rate(request.sid)
                if sends and connection.role == "viewer":
                    raise Forbidden("Viewers may listen but not send.")
                if not isinstance(data, dict):
                    raise ValidationFailed("The event payload must be an object.", {"payload": ["Not an object."]})
                return {"ok": True, **(handler(connection, data) or {})}
            except ma.ValidationError as exc:
                return _refuse(ValidationFailed("The event payload is not valid.", exc.normalized_messages()))
            except ApiError as exc:
                db.session.rollback()
                return _refuse(exc)
            except Exception:
                db.session.rollback()
                log.exception("socket event %s failed", name)
                return _refuse(ApiError("Internal error.", {}), code="INTERNAL_ERROR")
        for event_name in (name, *aliases):
            socketio.on_event(event_name, wrapper)
        return wrapper
    return decorator


def _refuse(exc: ApiError, code: str | None = None) -> dict:
    error = {"code": code or exc.code, "message": exc.message, "details": exc.details}
    emit("error", error)
    if isinstance(exc, Unauthorized):
        _cut(request.sid, delay=0.2)  # after the ack has gone out
    return {"ok": False, "error": error}


def _cut(sid: str, delay: float = 0.0) -> None:
    """Disconnect a connection whose token is no longer good; it leaves every room at once."""
    with _connections_lock:
        _connections.pop(sid, None)
    for room in list(socketio.server.rooms(sid, namespace="/")):
        if room != sid:
            socketio.server.leave_room(sid, room, namespace="/")

    def disconnect_later():
        socketio.sleep(delay)
        socketio.server.disconnect(sid, namespace="/")
    socketio.start_background_task(disconnect_later)


def _sweep_connections(app, interval: float) -> None:
    """Cut connections whose token expired or was revoked, even if they only listen."""
    while True:
        socketio.sleep(interval)
        with app.app_context():
            for sid, connection in list(_connections.items()):
                try:
                    gone = not _still_valid(connection)
                except Exception:  # Redis or the database briefly away: try again next round
                    log.warning("socket sweep could not check tokens", exc_info=True)
                    break
                if gone:
                    log.info("socket %s cut: token expired, revoked or void", sid)
                    _cut(sid)
            _report_connections()
            db.session.remove()


_sweeper_started = False


def init_app(app) -> None:
    socketio.init_app(
        app,
        message_queue=app.config.get("REDIS_URL"),
        # Pub/sub channels ignore the Redis database number: one channel per deployment.
        channel=app.config["MCC_SOCKETIO_CHANNEL"],
        async_mode=app.config["MCC_SOCKETIO_ASYNC_MODE"],
        cors_allowed_origins=app.config["MCC_CORS_ORIGINS"],  # None: same origin only
        max_http_buffer_size=app.config["MAX_CONTENT_LENGTH"],
        logger=False,
        engineio_logger=False,
    )


@socketio.on("connect")
def on_connect(auth=None):
    try:
        connection = _authenticate(_token_from_handshake(auth))
    except Unauthorized as exc:
        log.info("socket connection refused: %s", exc.message)
        raise SocketConnectionRefused(exc.message, {"code": "UNAUTHORIZED"})
    global _sweeper_started
    with _connections_lock:
        _connections[request.sid] = connection
        _report_connections()
        if not _sweeper_started:
            _sweeper_started = True
            socketio.start_background_task(_sweep_connections, current_app._get_current_object(),
                                           current_app.config["MCC_SOCKET_SWEEP_SECONDS"])
    log.info("socket %s connected as %s", request.sid, connection.username)


@socketio.on("disconnect")
def on_disconnect(*_args):
    with _connections_lock:
        _connections.pop(request.sid, None)
        _report_connections()


def _report_connections() -> None:
    from mcc.metrics import report_socket_connections

    report_socket_connections(len(_connections), current_app.config["MCC_SOCKET_SWEEP_SECONDS"] * 3)


class _ConversationRef(ma.Schema):
    conversation_id = ma.fields.UUID(required=True)
    is_typing = ma.fields.Boolean(load_default=True)


def _conversation(data: dict):
    from mcc.services.conversations import get_conversation

    ref = _ConversationRef().load(data, unknown=ma.EXCLUDE)
    return get_conversation(None, ref["conversation_id"]), ref


@client_event("join_conversation")
def join_conversation(connection, data):
    conversation, _ = _conversation(data)
    join_room(conversation_room(conversation.id))
    return {"conversation_id": str(conversation.id)}


@client_event("leave_conversation")
def leave_conversation(connection, data):
    conversation, _ = _conversation(data)
    leave_room(conversation_room(conversation.id))
    return {"conversation_id": str(conversation.id)}


@client_event("send_message", sends=True)
def send_message(connection, data):
    from mcc.schemas.conversations import MessageSchema, SocketMessageSchema
    from mcc.services.conversations import post_message

    from mcc.services.turns import announce

    body = SocketMessageSchema().load(data)
    message, queued = post_message(None, body["conversation_id"], connection.user_id, body["content"],
                                   body.get("reply_to"))
    db.session.commit()
    announce(message, queued)
    return {"message": MessageSchema().dump(message), "blocked_agents": message.blocked_agents}


# The spec heads this event `typing_indicator` and emits `typing` in its example: both work.
@client_event("typing", "typing_indicator", sends=True)
def typing(connection, data):
    conversation, ref = _conversation(data)
    socketio.emit("user_typing", {
        "conversation_id": str(conversation.id),
        "user": {"id": str(connection.user_id), "username": connection.username},
        "is_typing": ref["is_typing"],
    }, to=conversation_room(conversation.id), skip_sid=request.sid)
    return {}
