"""A tiny app for the cluster's tests: serves HTTP on $PORT (127.0.0.1) and can be told to crash, turn
unhealthy, stop listening or ignore SIGTERM, so that the supervisor's reactions can be checked.

GET /            JSON: index, guid, pid, port (from Cloud Foundry's environment)
GET /env         JSON: the whole environment
GET /health      200, or 503 after /unhealthy
GET /unhealthy   makes /health answer 503
GET /ready       200, or 503 after /not-ready (a readiness endpoint)
GET /not-ready   makes /ready answer 503; GET /make-ready makes it answer 200 again
GET /crash?code=N   exits at once with code N (default 1)
GET /status?code=N  answers with status N (default 200)
GET /session     a session kept in this process's memory (cookie JSESSIONID), as an app without a
                 shared session store: a session it does not know gets a new one
POST /login      (form field user; password, when given, must be "secret", else 401) logs the session in
                 (a new session when its cookie is unknown), 303 to /
GET /csrf-login  an HTML login form with a hidden _csrf token kept in the session (Spring Security's way)
POST /csrf-login (form fields user and _csrf) logs the session in when _csrf is the session's token, else
                 403 "Invalid CSRF token"; the token is used once; 302 to /private
GET /sessions    JSON: the visits of each session this process keeps (what a test waits on)
GET /private     200 for a logged-in session, else 302 to /login?next=/private (the usual login redirect;
                 no new session for an unknown cookie, as express-session's saveUninitialized: false)
GET /stop-listening closes the listening socket but keeps running (a port check then fails)
SIGTERM             stops listening, finishes the requests in progress, exits 0

Environment: TESTAPP_START_DELAY (seconds before listening), TESTAPP_IGNORE_TERM=1 (SIGTERM ignored),
TESTAPP_CHILD=1 (starts a `sleep` child in the same process group and prints its pid),
TESTAPP_EXIT_AFTER (seconds, then exit with code 3), TESTAPP_NEVER_LISTEN=1,2 (the instances with these
indices never listen).
"""

import base64
import html
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

state = {"healthy": True, "ready": True}
sessions: dict[str, dict] = {}
sessions_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def reply(self, status, body, headers=()):
        self.send(status, json.dumps(body).encode(), "application/json", headers)

    def send(self, status: int, data: bytes, content_type: str, headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def session(self, create: bool = True) -> tuple[dict | None, list]:
        """This request's session, kept in this process's memory; a new one (and its Set-Cookie) when
        its JSESSIONID is unknown here (None without `create`)."""
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        sid = cookie["JSESSIONID"].value if "JSESSIONID" in cookie else None
        with sessions_lock:
            if sid in sessions:
                return sessions[sid], []
            if not create:
                return None, []
            sid = secrets.token_hex(8)
            sessions[sid] = {"visits": 0}
            return sessions[sid], [("Set-Cookie", f"JSESSIONID={sid}; Path=/; HttpOnly")]

    def do_POST(self):
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        if url.path == "/login" and form.get("password", ["secret"])[0] != "secret":
            self.reply(401, {"error": "wrong password"})
        elif url.path == "/csrf-login":
            session = self.session(create=False)[0]
            with sessions_lock:
                token = session.pop("csrf", None) if session else None
                if token is None or form.get("_csrf", [""])[0] != token or not form.get("user"):
                    self.reply(403, {"error": "Invalid CSRF token"})
                    return
                session["user"] = form["user"][0]
            self.reply(302, {"user": form["user"][0]}, [("Location", "/private")])
        elif url.path == "/login" and form.get("user"):
            session, headers = self.session()
            with sessions_lock:
                session["user"] = form["user"][0]
            self.reply(303, {"user": session["user"]}, [*headers, ("Location", "/")])
        else:
            self.reply(404, {"error": "not found"})

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/":
            self.reply(200, {"index": os.environ.get("CF_INSTANCE_INDEX"), "guid": os.environ.get("CF_INSTANCE_GUID"),
                             "pid": os.getpid(), "port": os.environ.get("PORT")})
        elif url.path == "/env":
            self.reply(200, dict(os.environ))
        elif url.path == "/health":
            self.reply(200 if state["healthy"] else 503, {"healthy": state["healthy"]})
        elif url.path == "/ready":
            self.reply(200 if state["ready"] else 503, {"ready": state["ready"]})
        elif url.path in ("/not-ready", "/make-ready"):
            state["ready"] = url.path == "/make-ready"
            self.reply(200, {"ready": state["ready"]})
        elif url.path == "/unhealthy":
            state["healthy"] = False
            self.reply(200, {"healthy": False})
        elif url.path == "/crash":
            code = int(parse_qs(url.query).get("code", ["1"])[0])
            print(f"crashing with code {code}", flush=True)
            os._exit(code)
        elif url.path == "/status":
            code = int(parse_qs(url.query).get("code", ["200"])[0])
            self.reply(code, {"status": code})
        elif url.path == "/session":
            session, headers = self.session()
            with sessions_lock:
                session["visits"] += 1
                visits = session["visits"]
            self.reply(200, {"index": os.environ.get("CF_INSTANCE_INDEX"), "visits": visits}, headers)
        elif url.path == "/csrf-login":
            session, headers = self.session()
            # A token with "+", "/" and "=" in it, as Spring's are: the login must send it form-encoded.
            token = base64.b64encode(secrets.token_bytes(15)).decode() + "+/="
            with sessions_lock:
                session["csrf"] = token
            page = ('<form method="post" action="/csrf-login"><input type="text" name="user">'
                    f'<input type="hidden" name="_csrf" value="{html.escape(token)}"><button>Sign in</button></form>').encode()
            self.send(200, page, "text/html", headers)
        elif url.path == "/sessions":
            with sessions_lock:
                visits = [session["visits"] for session in sessions.values()]
            self.reply(200, {"visits": visits})
        elif url.path == "/private":
            session = self.session(create=False)[0]
            if session and session.get("user"):
                self.reply(200, {"user": session["user"], "index": os.environ.get("CF_INSTANCE_INDEX")})
            else:
                self.reply(302, {"login": True}, [("Location", "/login?next=/private")])
        elif url.path == "/negotiate":
            # A SPNEGO (Kerberos, NTLM) challenge until the client answers it with Negotiate.
            if self.headers.get("Authorization", "").lower().startswith("negotiate"):
                self.reply(200, {"index": os.environ.get("CF_INSTANCE_INDEX")})
            else:
                self.reply(401, {"authenticate": True}, [("WWW-Authenticate", "Negotiate")])
        elif url.path == "/stop-listening":
            self.reply(200, {"listening": False})
            threading.Thread(target=stop_listening, daemon=True).start()
        else:
            self.reply(404, {"error": "not found"})


server = None


def stop_listening():
    server.shutdown()
    server.server_close()
    print("stopped listening", flush=True)


def exit_gracefully():
    """As a well-behaved Cloud Foundry app: stop listening, finish the requests in progress, exit 0.
    (Exiting at once cut responses in the middle: the proxy can only close such a client connection.)"""
    threading.Timer(5, os._exit, (0,)).start()  # whatever happens below
    if server is not None:
        server.shutdown()
        server.server_close()  # joins the threads of the requests in progress (daemon_threads off)
    os._exit(0)


def main():
    global server
    if os.environ.get("TESTAPP_IGNORE_TERM") == "1":
        signal.signal(signal.SIGTERM, lambda *_: print("got SIGTERM, ignoring it", flush=True))
    else:
        def on_term(*_):
            print("got SIGTERM, exiting", flush=True)
            threading.Thread(target=exit_gracefully, daemon=True).start()
        signal.signal(signal.SIGTERM, on_term)
    if os.environ.get("TESTAPP_CHILD") == "1":
        child = subprocess.Popen(["sleep", "1000"])
        print(f"child pid {child.pid}", flush=True)
    exit_after = os.environ.get("TESTAPP_EXIT_AFTER")
    if exit_after:
        threading.Timer(float(exit_after), lambda: os._exit(3)).start()
    if os.environ.get("CF_INSTANCE_INDEX") in os.environ.get("TESTAPP_NEVER_LISTEN", "").split(","):
        print("never listening", flush=True)
        threading.Event().wait()
    delay = float(os.environ.get("TESTAPP_START_DELAY", "0"))
    if delay:
        time.sleep(delay)
    port = int(os.environ["PORT"])
    # A listen backlog of 128, as most servers have (Python's default is 5): while the process is frozen
    # the kernel queues the connections, and with 5 the seventh (a port check, after a few requests the
    # proxy forwarded) timed out, so a hang looked like a dead port and the instance was killed.
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = False
    print(f"testapp {os.environ.get('CF_INSTANCE_INDEX')} listening on {port} (guid {os.environ.get('CF_INSTANCE_GUID')})", flush=True)
    server.serve_forever()
    # Stopped listening (stop_listening): the process keeps running until it is signalled.
    threading.Event().wait()


if __name__ == "__main__":
    sys.exit(main())
