"""Gunicorn config used by bench/socket_fanout.py --mode gevent (the default --psycogreen on).

Under gevent, psycopg2 waits for PostgreSQL inside C code and blocks the whole worker (every
greenlet: other requests, WebSocket pings, the Socket.IO Redis listener) until the query ends.
psycogreen installs a wait callback so psycopg2 yields to the gevent hub instead. It must be
installed in the worker before the first connection is made: post_fork runs in the worker
process before the app is loaded.
"""


def post_fork(server, worker):
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
    worker.log.info("psycogreen: psycopg2 made gevent-cooperative")
