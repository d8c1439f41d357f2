"""The floor of the fan-out benchmark: Flask-SocketIO with no product logic (no DB, no auth).

Same stack as the product's web process (gunicorn worker class, Flask-SocketIO async mode from
MCC_SOCKETIO_ASYNC_MODE, the Redis message queue from REDIS_URL on a channel of its own), so the
difference between the two is what MCC adds. Run by bench/socket_fanout.py as
``gunicorn ... bench.floor_server:app``.

    GET  /healthz   readiness
    POST /emit      emit the JSON body as a `message` event to the room "floor"
    event `join`    join the room "floor" (acknowledged with {"ok": true})
"""
from __future__ import annotations

import os

from flask import Flask, jsonify, request
from flask_socketio import SocketIO, join_room

ROOM = "floor"

app = Flask(__name__)
socketio = SocketIO(app, async_mode=os.environ.get("MCC_SOCKETIO_ASYNC_MODE", "threading"),
                    message_queue=os.environ.get("REDIS_URL") or None, channel="mcc-bench-floor",
                    logger=False, engineio_logger=False)


@app.get("/healthz")
def healthz():
    return jsonify(status="ok")


@app.post("/emit")
def emit():
    socketio.emit("message", request.get_json(), to=ROOM)
    return jsonify(ok=True)


@socketio.on("join")
def join(_data=None):
    join_room(ROOM)
    return {"ok": True}
