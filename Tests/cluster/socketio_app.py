"""A Socket.IO app as a Python team would write it, for the cluster's tests: python-socketio on aiohttp,
its instances joined through Redis (AsyncRedisManager), serving on $PORT. Nothing of stickylab's in it.

Environment: PORT and REDIS_URL (the cluster sets both); SOCKETIO_COOKIE, when set, names the cookie
in which Engine.IO's handshake response carries the session id (python-socketio's `cookie` option):
JSESSIONID is what makes Cloud Foundry's router sticky.
On `chat` it broadcasts the data to every client of every instance and acknowledges.
"""

import os

import socketio
from aiohttp import web

cookie = os.environ.get("SOCKETIO_COOKIE") or None
server = socketio.AsyncServer(async_mode="aiohttp", client_manager=socketio.AsyncRedisManager(os.environ["REDIS_URL"]),
                              cookie=cookie, logger=False, engineio_logger=False)
app = web.Application()
server.attach(app)


@server.on("chat")
async def chat(sid, data):
    await server.emit("chat", data)
    return {"ok": True}


web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None)
