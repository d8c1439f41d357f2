"""The floor of the fan-out benchmark: Flask-SocketIO with no product logic (no DB, no auth).

Same stack as the product's web process (gunicorn worker class, Flask-SocketIO async mode from
MCC_SOCKETIO_ASYNC_MODE, the Redis message queue from REDIS_URL on a channel of its own), so the
difference between the two is what MCC adds. Run by bench/socket_fanout.py as
``gunicorn ... bench.floor_server:app``.

    GET  /healthz   readiness
    POST /emit      emit the JSON body as a `message` event to the room "floor"
    POST /turn      the turn floor: insert {"room", "content"} as a row, commit, enqueue the RQ job
                    ``bench.floor_jobs.reply`` (on {"queue"}, default ``floor``), which inserts a row and emits it
                    as a `message` event to that room (bench/turn_overhead.py)
    event `join`    join the room "floor", or {"room": name} (acknowledged with {"ok": true})
"""
from __future__ import annotations

import os

ASYNC_MODE = os.environ.get("MCC_SOCKETIO_ASYNC_MODE", "threading")
if ASYNC_MODE == "gevent":
    from psycogreen.gevent import patch_psycopg  # as MCC does under gevent: database waits yield

    patch_psycopg()

from flask import Flask, jsonify, request
from flask_socketio import SocketIO, join_room
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from bench import floor_jobs

ROOM = "floor"

app = Flask(__name__)
socketio = SocketIO(app, async_mode=ASYNC_MODE,
                    message_queue=os.environ.get("REDIS_URL") or None, channel=floor_jobs.CHANNEL,
                    logger=False, engineio_logger=False)


@app.get("/healthz")
def healthz():
    return jsonify(status="ok")


@app.post("/emit")
def emit():
    socketio.emit("message", request.get_json(), to=ROOM)
    return jsonify(ok=True)


_queue: dict = {}


@app.post("/turn")
def turn():
    body = request.get_json()
    floor_jobs.insert(body["room"], "person", body["content"])
    name = body.get("queue", "floor")
    if name not in _queue:
        _queue[name] = Queue(name, connection=Redis.from_url(os.environ["REDIS_URL"]), serializer=JSONSerializer)
    _queue[name].enqueue("bench.floor_jobs.reply", body["room"], "done", result_ttl=60)
    return jsonify(ok=True), 201


@socketio.on("join")
def join(data=None):
    join_room((data or {}).get("room") or ROOM)
    return {"ok": True}
