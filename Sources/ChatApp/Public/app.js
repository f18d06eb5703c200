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
  const sendButton = form.querySelector("button[type=submit]");
  const hint = document.getElementById("composer-hint");
  const announcer = document.getElementById("announcer");

  // The server's limit (MAX_MESSAGE_BYTES) counts UTF-8 bytes, not characters: "é" takes two.
  const maxBytes = Number(input.dataset.maxBytes) > 0 ? Number(input.dataset.maxBytes) : 2000;
  const MAX_LINES = 1000; // lines kept in the list: the oldest go from the top
  const ACK_TIMEOUT = 5000; // ms to wait for the server's answer before sending again
  const SENT_GRACE = 10000; // ms an acknowledged message waits for its own line before showing itself
  const ANNOUNCED_AT_ONCE = 3; // live lines read out per batch; a burst is summed up
  const OFFSET = /^\d+-\d+$/; // stream ids: "<ms>-<seq>"
  // The original redispubsub client's rule for actions ("/me waves", "\me waves", "/me<TAB>waves").
  // [\s\S] rather than "." so that text after a new line is not dropped.
  const ACTION = /^\s*[\/\\]me\s([\s\S]*)/;
  const encoder = new TextEncoder();
  const storageKey = "stickylab:outbox:" + me; // per user: never sent under another login's name
  // Messages refused for good, kept apart from the outbox: a page (an older app.js too) never sends
  // what is stored under this key, it only shows it again after a reload.
  const failedKey = "stickylab:failed:" + me;
  const MAX_FAILED = 20; // refused messages kept across a reload: the newest

  let sendWarning = false; // the status says why own messages are not going out

  function setStatus(text, kind) {
    if (statusText.textContent !== text) {
      // role=status: read out on change. A longer text may wrap and make the list shorter: keep its
      // last line in view.
      const stick = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
      statusText.textContent = text;
      if (stick) list.scrollTop = list.scrollHeight;
    }
    statusDot.className = "dot " + kind;
    sendWarning = false;
  }

  if (typeof io !== "function") {
    // /socket.io/socket.io.js did not load (chat-node answers 503 without the bundle).
    setStatus("The socket.io client is missing on this server (run make deps)", "bad");
    input.disabled = true;
    sendButton.disabled = true;
    form.addEventListener("submit", (event) => event.preventDefault());
    return;
  }

  function pad(n) { return String(n).padStart(2, "0"); }
  // A line's time: the time of day for today's lines; the date too for older ones (the history
  // lasts as long as Redis keeps it, days for a cluster's state folder), the year when not this one.
  function clock(d) {
    const time = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    const now = new Date();
    if (d.toDateString() === now.toDateString()) return time;
    const date = { month: "short", day: "numeric" };
    if (d.getFullYear() !== now.getFullYear()) date.year = "numeric";
    return d.toLocaleDateString(undefined, date) + " " + time;
  }

  // Stream ids are "<ms>-<seq>": compare numerically.
  function compareIds(a, b) {
    const [am, as] = a.split("-").map(Number);
    const [bm, bs] = b.split("-").map(Number);
    return am !== bm ? am - bm : as - bs;
  }

  function actionText(user, msg) {
    const match = ACTION.exec(msg);
    return match ? "* " + user + " " + match[1] : null;
  }

  // What a screen reader says for a line.
  function spoken(line) {
    if (line.action === "control") return line.user + line.msg;
    return actionText(line.user, line.msg) || line.user + ": " + line.msg;
  }

  function lineElement(line) {
    const li = document.createElement("li");
    const isMe = line.user === me;
    const action = line.action === "control" ? null : actionText(line.user, line.msg);
    if (line.action === "control") {
      li.className = "control";
      li.textContent = line.user + line.msg;
    } else if (action !== null) {
      li.className = "action" + (isMe ? " mine" : "");
      li.textContent = action;
    } else {
      li.className = isMe ? "mine" : "";
      const meta = document.createElement("span");
      meta.className = "meta";
      const user = document.createElement("span");
      user.className = "user";
      user.textContent = line.user;
      meta.appendChild(user);
      if (typeof line.time === "number") {
        const at = new Date(line.time);
        const time = document.createElement("time");
        time.dateTime = at.toISOString();
        time.title = at.toString();
        time.textContent = clock(at);
        meta.appendChild(time);
      }
      if (typeof line.instance === "string" && line.instance) {
        // Which instance stored it: readable without hovering, and the full name for narrow screens.
        const via = document.createElement("span");
        via.className = "via";
        via.textContent = "via " + line.instance;
        via.title = "handled by instance " + line.instance;
        meta.appendChild(via);
      }
      li.appendChild(meta);
      li.appendChild(document.createTextNode(line.msg));
    }
    return li;
  }

  // MARK: the list

  const rendered = new Set(); // stream ids of the lines in the list
  let lowWater = null; // the newest stream id pruned from the top: lines up to it are not shown again
  let newestOffset = null; // the newest stream id received
  const incoming = []; // lines waiting for the next frame: { line, offset, live }
  let scheduled = false;
  let live = false; // lines after this connection's welcome are new; before it: history or a replay

  // Own messages not yet seen in the stream, in the order typed (which is their order in the list,
  // always at its end): id -> { id, text, li, note, state, timer }.
  const bubbles = new Map();
  // Own messages refused for good, in the order refused: id -> { id, text, reason, li }.
  const failedMessages = new Map();
  // Failed messages restored after a reload, until the first welcome: the history goes before them.
  let restoredFailed = [];

  function firstBubble() {
    const first = bubbles.values().next();
    return first.done ? null : first.value.li;
  }

  function atBottom() { return list.scrollHeight - list.scrollTop - list.clientHeight < 40; }

  function enqueue(line, offset, isLive) {
    if (typeof offset === "string" && OFFSET.test(offset)) {
      if (newestOffset === null || compareIds(offset, newestOffset) > 0) newestOffset = offset;
    } else {
      offset = null;
    }
    incoming.push({ line, offset, live: isLive });
    if (scheduled) return;
    scheduled = true;
    // The next frame, or a timer in a tab hidden meanwhile (it gets no frames; timers there run about
    // once a second): whichever comes first.
    const run = () => {
      if (!scheduled) return;
      scheduled = false;
      flush();
    };
    requestAnimationFrame(run);
    setTimeout(run, 250);
  }

  // Puts the waiting lines in the list: one layout read before, one scroll after, whatever their number.
  function flush() {
    if (!incoming.length) return;
    const batch = incoming.splice(0, incoming.length);
    const stick = atBottom();
    const news = [];
    for (const { line, offset, live: isLive } of batch) {
      if (line.id && line.user === me) settle(line.id);
      if (place(line, offset) && isLive && line.user !== me) news.push(spoken(line));
    }
    prune();
    if (stick) list.scrollTop = list.scrollHeight;
    announce(news);
  }

  function place(line, offset) {
    if (offset !== null) {
      if (rendered.has(offset)) return false; // seen already (a replay after a reconnect)
      if (lowWater !== null && compareIds(offset, lowWater) <= 0) return false; // older than the list
    }
    const li = lineElement(line);
    if (offset !== null) {
      li.dataset.offset = offset;
      rendered.add(offset);
    }
    // Keep stream order, own pending messages last: a line is nearly always the newest, so walk back
    // from the end. Lines without an offset (a failed message, a notice) stay where they are; the
    // history of a reloaded page goes before the failed messages it restored.
    let before = firstBubble();
    const restored = restoredFailed.find((li) => li.isConnected);
    if (restored) before = restored;
    if (offset !== null) {
      for (let node = before ? before.previousElementSibling : list.lastElementChild; node; node = node.previousElementSibling) {
        const other = node.dataset.offset;
        if (!other) continue;
        if (compareIds(other, offset) < 0) break;
        before = node;
      }
    }
    list.insertBefore(li, before);
    return true;
  }

  // At most MAX_LINES lines (own pending messages not counted): the oldest go, and so does their
  // place in `rendered`; `lowWater` keeps them from coming back with a later replay.
  function prune() {
    let excess = list.childElementCount - bubbles.size - MAX_LINES;
    while (excess > 0) {
      const li = list.firstElementChild;
      if (!li || li.classList.contains("pending")) break;
      const offset = li.dataset.offset;
      if (offset) {
        rendered.delete(offset);
        if (lowWater === null || compareIds(offset, lowWater) > 0) lowWater = offset;
      }
      if (li.classList.contains("failed")) forgetFailed(li); // not restored after a reload either
      li.remove();
      excess -= 1;
    }
  }

  // Screen readers hear new lines of others once, through a hidden live region: the list itself is a
  // log that does not speak (history, replays and one's own messages are not read out).
  function announce(texts) {
    if (!texts.length) return;
    let text = texts.slice(-ANNOUNCED_AT_ONCE).join(". ");
    if (texts.length > ANNOUNCED_AT_ONCE) text = texts.length + " new messages, the last: " + text;
    say(text);
  }

  function say(text) {
    const p = document.createElement("p");
    p.textContent = text;
    announcer.appendChild(p);
    while (announcer.childElementCount > 5) announcer.firstElementChild.remove();
  }

  // After a reconnection the server could not catch up (`welcome` with `gap`): mark where lines are
  // missing, after the last line shown before it.
  function markGap(after) {
    flush();
    const stick = atBottom();
    const li = document.createElement("li");
    li.className = "notice";
    li.textContent = "Some messages sent while you were away are no longer available";
    let before = firstBubble();
    if (after !== null) {
      for (let node = list.lastElementChild; node; node = node.previousElementSibling) {
        const other = node.dataset.offset;
        if (other && compareIds(other, after) <= 0) { before = node.nextElementSibling; break; }
      }
    }
    list.insertBefore(li, before);
    prune();
    if (stick) list.scrollTop = list.scrollHeight;
  }

  // MARK: own messages

  const outbox = []; // { id, text } not yet stored, in the order typed; only outbox[0] is ever on the wire
  let inFlight = null; // the attempt waiting for its answer
  let retryTimer = null;
  let failures = 0; // failed attempts of outbox[0]
  let lastAttempt = 0; // Date.now() of the last attempt

  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 12);
  }

  function byteLength(text) { return encoder.encode(text).length; }

  function store(key, items) {
    try {
      if (items.length) sessionStorage.setItem(key, JSON.stringify(items));
      else sessionStorage.removeItem(key);
    } catch (e) {
      // Storage full or disabled: the queue still works while the page stays open.
    }
  }

  function save() {
    store(storageKey, outbox.map(({ id, text }) => ({ id, text })));
    store(failedKey, Array.from(failedMessages.values(), ({ id, text, reason }) => ({ id, text, reason })).slice(-MAX_FAILED));
  }

  // A stored list; missing or unreadable: empty.
  function load(key) {
    try {
      const saved = JSON.parse(sessionStorage.getItem(key) || "[]");
      return Array.isArray(saved) ? saved : [];
    } catch (e) {
      return [];
    }
  }

  function storable(item) {
    return item !== null && typeof item === "object" && typeof item.id === "string" && item.id !== "" &&
      typeof item.text === "string" && item.text !== "";
  }

  // After a reload: the messages refused for good, then the outbox (sent again: never one that was
  // refused). Bad and repeated entries are skipped.
  function restore() {
    const failed = [];
    const seen = new Set();
    for (const item of load(failedKey)) {
      if (!storable(item) || seen.has(item.id)) continue;
      seen.add(item.id);
      failed.push(item);
    }
    for (const item of failed.slice(-MAX_FAILED)) {
      const reason = typeof item.reason === "string" && item.reason ? item.reason : "refused by the server";
      const li = addFailed(item.id, item.text, reason);
      list.appendChild(li);
      restoredFailed.push(li);
    }
    for (const item of load(storageKey)) {
      if (!storable(item) || bubbles.has(item.id) || seen.has(item.id)) continue;
      addBubble(item.id, item.text);
      outbox.push({ id: item.id, text: item.text });
    }
    save(); // what was skipped goes from storage too
  }

  // An own message as its line will look, with a note (its state) after the user's name.
  function ownElement(text) {
    const li = document.createElement("li");
    const note = document.createElement("span");
    note.className = "note";
    const action = actionText(me, text);
    if (action !== null) {
      li.appendChild(document.createTextNode(action));
      li.appendChild(note); // after the text, as in an action line there is no meta line
    } else {
      const meta = document.createElement("span");
      meta.className = "meta";
      const user = document.createElement("span");
      user.className = "user";
      user.textContent = me;
      meta.appendChild(user);
      meta.appendChild(note);
      li.appendChild(meta);
      li.appendChild(document.createTextNode(text));
    }
    return { li, note, action: action !== null };
  }

  function addBubble(id, text) {
    const { li, note, action } = ownElement(text);
    const bubble = { id, text, li, note, action, state: null, timer: null };
    bubbles.set(id, bubble);
    setState(bubble, "sending");
    list.appendChild(li);
    return bubble;
  }

  const NOTES = { sending: "sending…", retrying: "not sent, retrying…", sent: "sent" };

  function setState(bubble, state) {
    if (bubble.state === state) return;
    bubble.state = state;
    // The whole class list: a message sent after retries loses the retry styling.
    bubble.li.className = (bubble.action ? "action " : "") + "mine pending" + (state === "retrying" ? " retrying" : "");
    bubble.note.textContent = NOTES[state];
  }

  // Every waiting message says whether the oldest one is being retried: the later ones wait behind it.
  function showQueue() {
    for (const entry of outbox) {
      const bubble = bubbles.get(entry.id);
      if (bubble) setState(bubble, failures > 0 ? "retrying" : "sending");
    }
  }

  // Its line arrived: stored, and shown in its place.
  function settle(id) {
    const bubble = bubbles.get(id);
    if (bubble) {
      clearTimeout(bubble.timer);
      bubble.li.remove();
      bubbles.delete(id);
    }
    const index = outbox.findIndex((entry) => entry.id === id);
    if (index < 0) return;
    outbox.splice(index, 1);
    save();
    if (index === 0) {
      // Stored by an attempt whose answer was lost: the next one may go (it cannot overtake this one).
      inFlight = null;
      failures = 0;
      if (sendWarning) setStatus("Connected", "ok");
      showQueue();
      retryNow();
    }
  }

  // Acknowledged: its line comes through the broadcast (maybe it already did). If it does not within
  // SENT_GRACE (the broadcast was lost to this page), the line is shown from the acknowledgement.
  function acknowledged(id, offset) {
    const bubble = bubbles.get(id);
    if (!bubble) return;
    setState(bubble, "sent");
    bubble.timer = setTimeout(() => {
      if (!bubbles.has(id)) return;
      if (offset !== null) enqueue({ action: "message", user: me, msg: bubble.text, id, time: Date.now() }, offset, false);
      else settle(id);
    }, SENT_GRACE);
  }

  // A message refused for good: says why, and its text can be taken back to the input. Kept (see
  // save) until then, never sent again. The caller puts it in the list.
  function addFailed(id, text, reason) {
    const { li, note, action } = ownElement(text);
    li.className = (action ? "action " : "") + "mine failed";
    note.textContent = "not sent: " + reason;
    const edit = document.createElement("button");
    edit.type = "button";
    edit.className = "edit";
    edit.textContent = "Edit";
    edit.setAttribute("aria-label", "Edit the message that was not sent");
    edit.addEventListener("click", () => {
      li.remove();
      failedMessages.delete(id);
      save();
      // As a paste at the caret: a draft in the input is kept.
      input.focus();
      input.setRangeText(text, input.selectionStart, input.selectionEnd, "end");
      check();
    });
    note.after(edit);
    failedMessages.set(id, { id, text, reason, li });
    return li;
  }

  function forgetFailed(li) {
    for (const [id, entry] of failedMessages) {
      if (entry.li === li) {
        failedMessages.delete(id);
        save();
        return;
      }
    }
  }

  // Refused for good: it leaves the queue and becomes a failed message in its place.
  function refused(id, reason) {
    const bubble = bubbles.get(id);
    if (!bubble) return;
    bubbles.delete(id);
    clearTimeout(bubble.timer);
    bubble.li.replaceWith(addFailed(id, bubble.text, reason));
    save();
    say("Message not sent: " + reason);
  }

  function backoff(count) { return Math.min(5000, 500 * Math.pow(2, Math.min(count, 4))); }

  // Sends the oldest waiting message; the next goes only once it is stored (or refused for good), so
  // the stream gets them in the order typed. Every attempt of a message carries the same id: the
  // server stores it once.
  function pump() {
    if (inFlight || retryTimer || !outbox.length || !socket.connected) return;
    const entry = outbox[0];
    const attempt = { entry };
    inFlight = attempt;
    lastAttempt = Date.now();
    const payload = JSON.stringify({ action: "message", msg: entry.text, id: entry.id });
    socket.timeout(ACK_TIMEOUT).emit("chat", payload, (err, ack) => {
      if (inFlight !== attempt) return; // given up: sent again on a new connection, or its line came
      inFlight = null;
      if (outbox[0] !== entry) { pump(); return; }
      if (!err && ack && ack.ok) {
        outbox.shift();
        save();
        failures = 0;
        if (sendWarning) setStatus("Connected", "ok");
        acknowledged(entry.id, typeof ack.offset === "string" && OFFSET.test(ack.offset) ? ack.offset : null);
      } else if (ack && ack.retryable === false) {
        outbox.shift();
        save();
        failures = 0;
        refused(entry.id, typeof ack.error === "string" ? ack.error : "refused by the server");
      } else {
        // No answer, or not stored (the chat's Redis is unavailable): this one again, after a pause.
        failures += 1;
        if (socket.connected) {
          const reason = ack && typeof ack.error === "string" ? ack.error : "no answer from the server";
          setStatus("Your messages are not sent yet (" + reason + ")", "warn");
          sendWarning = true;
        }
        retryTimer = setTimeout(() => { retryTimer = null; pump(); }, backoff(failures));
      }
      showQueue();
      pump();
    });
  }

  function retryNow() {
    if (retryTimer) {
      clearTimeout(retryTimer);
      retryTimer = null;
    }
    pump();
  }

  // The composer: the byte limit is checked here, so a message the server would refuse keeps its text.
  function check() {
    const size = byteLength(input.value.trim());
    const text = size <= maxBytes ? "" : "Too long to send: " + size + " bytes, at most " + maxBytes +
      " (accented letters take 2 bytes, emoji 4). Please shorten it.";
    if (text) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
    if (hint.textContent !== text) {
      const stick = atBottom(); // the hint makes the list shorter: keep its last line in view
      hint.textContent = text;
      if (stick) list.scrollTop = list.scrollHeight;
    }
    return !text;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    input.focus();
    if (!text || !check()) return;
    input.value = "";
    const id = newId();
    addBubble(id, text);
    outbox.push({ id, text });
    save();
    list.scrollTop = list.scrollHeight; // one's own message is always shown
    showQueue();
    pump();
  });
  input.addEventListener("input", () => {
    if (input.hasAttribute("aria-invalid")) check();
  });

  let leaving = false; // the page is going away on purpose
  window.addEventListener("beforeunload", (event) => {
    if (!outbox.length || leaving) return;
    // Unsent messages are kept (sessionStorage) and sent after a reload; closing the tab loses them.
    event.preventDefault();
    event.returnValue = "";
  });

  // Our own logout (a form posting /logout): the server closes this socket while the browser waits
  // for the answer; going to "/" from here then would cancel that navigation (and its Set-Cookie).
  let loggingOut = false;
  const logoutButton = document.getElementById("logout");
  const logoutForm = logoutButton && logoutButton.form;
  if (logoutForm) {
    logoutForm.addEventListener("submit", () => {
      loggingOut = true;
      setTimeout(() => { loggingOut = false; }, 10000); // the navigation was cancelled after all
    });
  }

  function toLoginPage() {
    if (loggingOut) return;
    leaving = true; // nothing can be sent without a session; the queue stays stored for this user
    window.location.href = "/";
  }

  // MARK: the socket

  const socket = io({ reconnectionDelay: 500, reconnectionDelayMax: 4000, randomizationFactor: 0.5 });
  restore();
  if (list.childElementCount) list.scrollTop = list.scrollHeight;

  let resumeAfter = null; // the newest line shown before this connection
  let hadLines = false;
  let replayed = 0; // lines received on this connection before its welcome: what it caught up on
  let settleTimer = null;

  // Words for what the client library reports (its reasons are Engine.IO's jargon).
  const DISCONNECT_REASONS = {
    "transport close": "the connection to the server closed",
    "transport error": "the connection to the server failed",
    "ping timeout": "the server stopped answering",
    "parse error": "the server sent something unreadable",
  };
  const CONNECT_ERRORS = {
    "xhr poll error": "the server cannot be reached",
    "websocket error": "the server cannot be reached",
    "timeout": "the server did not answer in time",
  };

  socket.on("connect", () => {
    live = false;
    replayed = 0;
    resumeAfter = newestOffset;
    hadLines = newestOffset !== null || list.childElementCount > bubbles.size;
    setStatus(socket.recovered ? "Reconnected: catching up…" : "Connected", "ok");
    if (!socket.recovered) socket.emit("join", "{}");
    // An attempt made on the previous connection gets no answer on this one: send it again now.
    inFlight = null;
    failures = 0;
    showQueue();
    retryNow();
  });
  socket.on("welcome", (info) => {
    // Which instance holds this socket: watch it change on a failover.
    if (info && typeof info.instance === "string") socketInstance.textContent = info.instance;
    flush(); // the history or the replay, which came before it
    restoredFailed = []; // later lines go after them
    live = true;
    if (info && info.gap === true && hadLines) {
      markGap(resumeAfter);
      setStatus("Reconnected: some messages sent while you were away are no longer available", "warn");
    } else if (socket.recovered) {
      const said = replayed === 0 ? "Reconnected: nothing was missed"
        : "Reconnected: " + replayed + " missed message" + (replayed === 1 ? "" : "s") + " recovered";
      setStatus(said, "ok");
      // Said for a while, then the plain state again.
      clearTimeout(settleTimer);
      settleTimer = setTimeout(() => { if (statusText.textContent === said) setStatus("Connected", "ok"); }, 10000);
    }
  });
  socket.on("chat", (data, offset) => {
    let line = data;
    if (typeof data === "string") {
      try { line = JSON.parse(data); } catch (e) { return; }
    }
    if (line && typeof line.user === "string" && typeof line.msg === "string") {
      if (!live) replayed += 1;
      enqueue(line, offset, live);
      // The chat stores lines again: a message waiting to be retried need not wait out its pause
      // (but a busy room does not make it retry more than once a second).
      if (retryTimer && live && Date.now() - lastAttempt > 1000) retryNow();
    }
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
    toLoginPage(); // logged out in another tab: back to the login page
  });
  socket.on("disconnect", (reason) => {
    live = false;
    if (reason === "io server disconnect") {
      // The server closed this socket on purpose (a logout); the client does not reconnect by itself.
      toLoginPage();
      return;
    }
    setStatus("Disconnected: " + (DISCONNECT_REASONS[reason] || reason) + "; reconnecting…", "bad");
    socketInstance.textContent = "–";
  });
  socket.on("connect_error", (err) => {
    const message = (err && err.message) || "unknown error";
    if (message === "not logged in" || message.startsWith("this session belongs to another user")) {
      toLoginPage(); // the login page (or this user's page again)
      return;
    }
    // The server's own reasons may say it retries already ("the chat's Redis is unavailable; retrying").
    const why = (CONNECT_ERRORS[message] || message).replace(/[;,]?\s*retrying\W*$/i, "");
    setStatus("Cannot connect: " + why + "; retrying…", "bad");
    // A refusal by the server (for example while its Redis is down) is not retried by the client
    // itself; transport errors are.
    if (!socket.active) setTimeout(() => socket.connect(), 2000);
  });
})();
