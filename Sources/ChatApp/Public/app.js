// stickylab chat page. Uses the official socket.io client (served at /socket.io/socket.io.js).
// Every user-provided text is inserted with textContent: never as HTML.
(function () {
  "use strict";
  const me = document.body.dataset.user;
  const list = document.getElementById("messages");
  const statusText = document.getElementById("status");
  const statusDot = document.getElementById("status-dot");
  const socketInstance = document.getElementById("socket-instance");
  const onlineList = document.getElementById("online");
  const onlineCount = document.getElementById("online-count");
  const form = document.getElementById("composer");
  const input = document.getElementById("input");

  const rendered = new Set(); // stream ids already on the page
  const pending = new Map(); // client message id -> { text, li, attempts, timer }

  function setStatus(text, kind) {
    statusText.textContent = text;
    statusDot.className = "dot " + kind;
  }

  function pad(n) { return String(n).padStart(2, "0"); }
  function clock(ms) {
    const d = new Date(ms);
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  // Stream ids are "<ms>-<seq>": compare numerically.
  function compareIds(a, b) {
    const [am, as] = a.split("-").map(Number);
    const [bm, bs] = b.split("-").map(Number);
    return am !== bm ? am - bm : as - bs;
  }

  function lineElement(line) {
    const li = document.createElement("li");
    const isMe = line.user === me;
    if (line.action === "control") {
      li.className = "control";
      li.textContent = line.user + line.msg;
    } else if (typeof line.msg === "string" && line.msg.startsWith("/me ")) {
      li.className = "action" + (isMe ? " mine" : "");
      li.textContent = "* " + line.user + " " + line.msg.slice(4);
    } else {
      li.className = isMe ? "mine" : "";
      const meta = document.createElement("span");
      meta.className = "meta";
      const user = document.createElement("span");
      user.className = "user";
      user.textContent = line.user;
      meta.appendChild(user);
      meta.appendChild(document.createTextNode(clock(line.time)));
      if (line.instance) meta.title = "handled by instance " + line.instance;
      li.appendChild(meta);
      li.appendChild(document.createTextNode(line.msg));
    }
    return li;
  }

  function atBottom() { return list.scrollHeight - list.scrollTop - list.clientHeight < 40; }

  function render(line, offset) {
    const hasOffset = typeof offset === "string";
    if (hasOffset && rendered.has(offset)) return; // seen already (a replay after a reconnect)
    const stick = atBottom();
    const li = lineElement(line);
    if (hasOffset) {
      li.dataset.offset = offset;
      rendered.add(offset);
    }
    if (line.id && line.user === me) settle(line.id);
    // Keep stream order: a line is nearly always the newest, so walk back from the end.
    let before = null;
    if (hasOffset) {
      const items = list.querySelectorAll("li[data-offset]");
      for (let i = items.length - 1; i >= 0; i--) {
        if (items[i] !== li && compareIds(items[i].dataset.offset, offset) > 0) before = items[i];
        else break;
      }
    }
    list.insertBefore(li, before || list.querySelector("li.pending"));
    if (stick) list.scrollTop = list.scrollHeight;
  }

  function settle(id) {
    const entry = pending.get(id);
    if (!entry) return;
    clearTimeout(entry.timer);
    entry.li.remove();
    pending.delete(id);
  }

  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 12);
  }

  const socket = io({ reconnectionDelay: 500, reconnectionDelayMax: 4000, randomizationFactor: 0.5 });

  function send(id) {
    const entry = pending.get(id);
    if (!entry) return;
    entry.attempts += 1;
    const payload = JSON.stringify({ action: "message", msg: entry.text, id: id });
    socket.timeout(5000).emit("chat", payload, (err, ack) => {
      if (!pending.has(id)) return;
      if (!err && ack && ack.ok) {
        // Durable: the line itself arrives through the broadcast (maybe it already did).
        entry.li.querySelector(".note").textContent = "sent";
        entry.timer = setTimeout(() => settle(id), 10000);
        return;
      }
      if (ack && ack.retryable === false) {
        entry.li.className = "mine failed";
        entry.li.querySelector(".note").textContent = "not sent: " + ack.error;
        return;
      }
      entry.li.className = "mine pending failed";
      entry.li.querySelector(".note").textContent = "not sent, retrying…";
      const delay = Math.min(8000, 500 * Math.pow(2, Math.min(entry.attempts, 4)));
      entry.timer = setTimeout(() => send(id), delay);
    });
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    const id = newId();
    const li = document.createElement("li");
    li.className = "mine pending";
    const meta = document.createElement("span");
    meta.className = "meta";
    const user = document.createElement("span");
    user.className = "user";
    user.textContent = me;
    const note = document.createElement("span");
    note.className = "note";
    note.textContent = "sending…";
    meta.appendChild(user);
    meta.appendChild(note);
    li.appendChild(meta);
    li.appendChild(document.createTextNode(text));
    list.appendChild(li);
    list.scrollTop = list.scrollHeight;
    pending.set(id, { text, li, attempts: 0, timer: null });
    send(id);
  });

  socket.on("connect", () => {
    setStatus(socket.recovered ? "Reconnected: missed messages recovered" : "Connected", "ok");
    if (!socket.recovered) socket.emit("join", "{}");
  });
  socket.on("welcome", (info) => {
    // Which instance holds this socket: watch it change on a failover.
    if (info && typeof info.instance === "string") socketInstance.textContent = info.instance;
  });
  socket.on("chat", (data, offset) => {
    let line = data;
    if (typeof data === "string") {
      try { line = JSON.parse(data); } catch (e) { return; }
    }
    if (line && typeof line.user === "string" && typeof line.msg === "string") render(line, offset);
  });
  socket.on("online", (info) => {
    const users = (info && Array.isArray(info.users)) ? info.users : [];
    onlineList.replaceChildren(...users.map((name) => {
      const li = document.createElement("li");
      li.textContent = name;
      return li;
    }));
    const count = (info && typeof info.count === "number") ? info.count : users.length;
    onlineCount.textContent = "(" + count + ")";
  });
  socket.on("chat_error", (info) => {
    if (info && typeof info.error === "string") setStatus(info.error, "warn");
  });
  socket.on("logged_out", () => {
    window.location.href = "/"; // logged out in another tab: back to the login page
  });
  socket.on("disconnect", (reason) => {
    if (reason === "io server disconnect") {
      // The server closed this socket on purpose (a logout); the client does not reconnect by itself.
      window.location.href = "/";
      return;
    }
    setStatus("Disconnected (" + reason + "): reconnecting…", "bad");
    socketInstance.textContent = "–";
  });
  socket.on("connect_error", (err) => {
    const message = (err && err.message) || "unknown error";
    if (message === "not logged in" || message.startsWith("this session belongs to another user")) {
      window.location.href = "/"; // the login page (or this user's page again)
      return;
    }
    setStatus("Cannot connect (" + message + "): retrying…", "bad");
    // A refusal by the server (for example while its Redis is down) is not retried by the client
    // itself; transport errors are.
    if (!socket.active) setTimeout(() => socket.connect(), 2000);
  });
})();
