"""The Socket.IO face of the API: connection auth and admission, client events (join, leave,
send, typing), and the Redis message queue that carries published events between processes.

Events are published through ``mcc/events.py`` (a leaf any layer may import); this module is the
server side only, registered by ``create_app`` through ``init_app``.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from dataclasses import dataclass

import marshmallow as ma
import socketio as socketio_lib
from flask import current_app, g, request
from flask_jwt_extended import decode_token
from flask_socketio import emit, join_room, leave_room
from jwt.exceptions import ExpiredSignatureError, PyJWTError
from limits import parse
from redis import Redis
from redis.exceptions import RedisError
from socketio.exceptions import ConnectionRefusedError as SocketConnectionRefused
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout  # the pool had no connection in time

from mcc.errors import ApiError, Forbidden, ServiceUnavailable, TooManyAttempts, Unauthorized, ValidationFailed
from mcc.events import conversation_room
from mcc.extensions import db, limiter, socketio
from mcc.metrics import report_socket_connections
from mcc.models.auth import User
from mcc.redis_store import blocking_pool
from mcc.runtime.engine import announce
from mcc.schemas.conversations import MessageSchema, SocketMessageSchema
from mcc.services import tokens
from mcc.services.auth import TOTP_PURPOSE, token_is_current
from mcc.services.conversations import get_conversation, post_message

log = logging.getLogger(__name__)

# Redis or the database unavailable, slow, or their pool exhausted past its timeout.
BACKING_SERVICE_ERRORS = (RedisError, OperationalError, PoolTimeout)
UNAVAILABLE_MESSAGE = "A backing service is unavailable or saturated; retry shortly."


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
            g.request_id = str(uuid.uuid4())  # one id per event: its jobs, its log lines, an INTERNAL_ERROR ack
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
                _rollback()
                return _refuse(exc)
            except BACKING_SERVICE_ERRORS as exc:
                _rollback()
                log.warning("socket event %s: backing service unavailable: %r", name, exc)
                return _refuse(ServiceUnavailable(UNAVAILABLE_MESSAGE, {"request_id": g.request_id}))
            except Exception:
                _rollback()
                log.exception("socket event %s failed", name)
                return _refuse(ApiError("Internal error.", {"request_id": g.request_id}), code="INTERNAL_ERROR")
        for event_name in (name, *aliases):
            socketio.on_event(event_name, wrapper)
        return wrapper
    return decorator


def _rollback() -> None:
    try:
        db.session.rollback()
    except Exception:  # the database is what failed: the session is discarded at teardown anyway
        log.debug("rollback failed", exc_info=True)


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


class PooledRedisManager(socketio_lib.RedisManager):
    """Socket.IO's Redis queue on a blocking pool sized from the configuration (the stock manager's
    pool fails at once when full). No command timeout: its subscriber blocks on the channel."""

    def __init__(self, url: str, channel: str, config):
        super().__init__(url, channel=channel)
        self._config = config

    def _redis_connect(self):
        if self.redis is not None:
            self.redis.connection_pool.disconnect()
        self.redis = Redis(connection_pool=blocking_pool(self.redis_url, self._config, socket_timeout=None))
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.connected = True


def init_app(app) -> None:
    config = app.config
    if config["MCC_SOCKETIO_ASYNC_MODE"] == "gevent":
        # psycopg2 waits for PostgreSQL inside C code: unpatched, one slow query freezes every
        # greenlet of the process. Patched here, with the mode, so the two cannot be separated.
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()
    log.info("live channel: Socket.IO async mode %s%s", config["MCC_SOCKETIO_ASYNC_MODE"],
             ", psycopg2 cooperative (psycogreen)" if config["MCC_SOCKETIO_ASYNC_MODE"] == "gevent" else "")
    redis_url = config.get("REDIS_URL")
    socketio.init_app(
        app,
        # Pub/sub channels ignore the Redis database number: one channel per deployment.
        client_manager=PooledRedisManager(redis_url, config["MCC_SOCKETIO_CHANNEL"], config) if redis_url else None,
        async_mode=config["MCC_SOCKETIO_ASYNC_MODE"],
        cors_allowed_origins=config["MCC_CORS_ORIGINS"],  # None: same origin only
        max_http_buffer_size=config["MAX_CONTENT_LENGTH"],
        logger=False,
        engineio_logger=False,
    )
    _admission.configure(config)
    socketio.server.eio.on("connect", _admission.on_engineio_connect)
    socketio.server.eio.on("disconnect", _admission.on_engineio_disconnect)


class _Admission:
    """Engine.IO sessions before Socket.IO: at most MCC_SOCKET_MAX_PER_IP per client address, and a
    session that has not completed an authenticated connect within MCC_SOCKET_AUTH_SECONDS is
    closed, so anonymous sockets cannot pile up. Socket connects are authenticated
    MCC_SOCKET_CONCURRENCY at a time; the others wait up to MCC_SOCKET_QUEUE_SECONDS."""

    def __init__(self):
        self.lock = threading.Lock()
        self.per_ip: dict[str, int] = {}
        self.address: dict[str, str] = {}
        self.pending: dict[str, float] = {}  # eio sid -> deadline to authenticate
        self.reaper_started = False
        self.max_per_ip = 50
        self.auth_seconds = 5.0
        self.queue_seconds = 2.0
        self.slots = threading.BoundedSemaphore(32)
        self.answer_seconds = 20.0

    def configure(self, config) -> None:
        self.max_per_ip = config["MCC_SOCKET_MAX_PER_IP"]
        self.auth_seconds = config["MCC_SOCKET_AUTH_SECONDS"]
        self.queue_seconds = config["MCC_SOCKET_QUEUE_SECONDS"]
        self.slots = threading.BoundedSemaphore(config["MCC_SOCKET_CONCURRENCY"])
        engine = config.get("SQLALCHEMY_ENGINE_OPTIONS", {})
        # slot wait + a few Redis round trips + a database connection + the usual deadline
        self.answer_seconds = (self.queue_seconds + 3 * config["MCC_REDIS_TIMEOUT"] + engine.get("pool_timeout", 0)
                               + engine.get("connect_args", {}).get("connect_timeout", 0) + self.auth_seconds)

    def on_engineio_connect(self, eio_sid, environ):
        address = environ.get("REMOTE_ADDR") or "-"  # ProxyFix has set it when proxies are trusted
        with self.lock:
            if self.per_ip.get(address, 0) >= self.max_per_ip:
                log.warning("socket refused: %s already holds %d sockets", address, self.max_per_ip)
                return {"code": "TOO_MANY_CONNECTIONS",
                        "message": f"At most {self.max_per_ip} sockets per client address."}
            self.per_ip[address] = self.per_ip.get(address, 0) + 1
            self.address[eio_sid] = address
            self.pending[eio_sid] = time.monotonic() + self.auth_seconds
            start_reaper = not self.reaper_started
            self.reaper_started = True
        if start_reaper:
            socketio.start_background_task(self._close_unauthenticated)
        return socketio.server._handle_eio_connect(eio_sid, environ)

    def on_engineio_disconnect(self, eio_sid, reason):
        with self.lock:
            self.pending.pop(eio_sid, None)
            address = self.address.pop(eio_sid, None)
            if address is not None:
                left = self.per_ip.get(address, 1) - 1
                if left > 0:
                    self.per_ip[address] = left
                else:
                    self.per_ip.pop(address, None)
        return socketio.server._handle_eio_disconnect(eio_sid, reason)

    def authenticated(self, sid: str) -> None:
        eio_sid = socketio.server.manager.eio_sid_from_sid(sid, "/")
        with self.lock:
            self.pending.pop(eio_sid, None)

    def answering(self, sid: str) -> None:
        """The client asked to connect: the deadline moves past the longest its answer (connect or
        connect_error) may take; a refused client that stays is closed then."""
        eio_sid = socketio.server.manager.eio_sid_from_sid(sid, "/")
        with self.lock:
            if eio_sid in self.pending:
                self.pending[eio_sid] = time.monotonic() + self.answer_seconds

    def _close_unauthenticated(self):
        while True:
            socketio.sleep(min(1.0, self.auth_seconds / 2))
            now = time.monotonic()
            with self.lock:
                late = [eio_sid for eio_sid, deadline in self.pending.items() if deadline <= now]
                for eio_sid in late:
                    del self.pending[eio_sid]
            eio = socketio.server.eio
            for eio_sid in late:
                socket = eio.sockets.pop(eio_sid, None)
                if socket is None:
                    continue
                try:  # without waiting for its send queue: a client that reads nothing cannot stall this loop
                    socket.close(wait=False, reason=eio.reason.SERVER_DISCONNECT)
                except Exception:
                    log.debug("closing unauthenticated socket %s failed", eio_sid, exc_info=True)
            if late:
                log.info("closed %d sockets that did not authenticate within %.0f s", len(late), self.auth_seconds)


_admission = _Admission()


@socketio.on_error_default
def _unhandled(exc):
    """Last resort for a handler outside ``client_event``: log once, answer the ack. A connect
    that failed is refused (Flask-SocketIO would take any other return value as acceptance)."""
    request_id = str(uuid.uuid4())
    log.error("socket handler failed (request %s)", request_id, exc_info=exc)
    if getattr(request, "event", {}).get("message") == "connect":
        return False
    return {"ok": False, "error": {"code": "INTERNAL_ERROR", "message": "Internal error.",
                                   "details": {"request_id": request_id}}}


def _refuse_connect(code: str, message: str, **extra) -> SocketConnectionRefused:
    return SocketConnectionRefused(message, {"code": code, "message": message, **extra})


@socketio.on("connect")
def on_connect(auth=None):
    g.request_id = str(uuid.uuid4())
    _admission.answering(request.sid)
    try:
        connection = _authenticate_in_turn(_token_from_handshake(auth))
    except Unauthorized as exc:
        log.info("socket connection refused: %s", exc.message)
        raise SocketConnectionRefused(exc.message, {"code": "UNAUTHORIZED"})
    except ServiceUnavailable as exc:
        raise _refuse_connect("SERVICE_UNAVAILABLE", exc.message, retry_after=1)
    except BACKING_SERVICE_ERRORS as exc:
        _rollback()
        log.warning("socket connection refused: backing service unavailable: %r", exc)
        raise _refuse_connect("SERVICE_UNAVAILABLE", UNAVAILABLE_MESSAGE, retry_after=1)
    except Exception:
        _rollback()
        log.exception("socket connect failed")
        raise _refuse_connect("INTERNAL_ERROR", "Internal error.", request_id=g.request_id)
    global _sweeper_started
    with _connections_lock:
        _connections[request.sid] = connection
        _report_connections()
        if not _sweeper_started:
            _sweeper_started = True
            socketio.start_background_task(_sweep_connections, current_app._get_current_object(),
                                           current_app.config["MCC_SOCKET_SWEEP_SECONDS"])
    _admission.authenticated(request.sid)
    log.info("socket %s connected as %s from %s", request.sid, connection.username, request.remote_addr)


def _authenticate_in_turn(token: str | None) -> Connection:
    """Authenticate with one of the MCC_SOCKET_CONCURRENCY slots; a storm queues for a bounded time."""
    if not _admission.slots.acquire(timeout=_admission.queue_seconds):
        log.warning("socket connection refused: no authentication slot within %.1f s", _admission.queue_seconds)
        raise ServiceUnavailable("Too many sockets connecting at once; retry shortly.")
    try:
        return _authenticate(token)
    finally:
        _admission.slots.release()
        db.session.remove()  # give the connection back now, not when the socket closes


@socketio.on("disconnect")
def on_disconnect(*_args):
    with _connections_lock:
        _connections.pop(request.sid, None)
        _report_connections()


def _report_connections() -> None:
    report_socket_connections(len(_connections), current_app.config["MCC_SOCKET_SWEEP_SECONDS"] * 3)


class _ConversationRef(ma.Schema):
    conversation_id = ma.fields.UUID(required=True)
    is_typing = ma.fields.Boolean(load_default=True)


def _conversation(data: dict):
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
