// The chat page's client: no build step, no library. Its socket (ConsumersSocket, from
// consumers/static/consumers/socket.js) reconnects with backoff when the server or the
// network goes away and resumes the room where it left off: the posts missed meanwhile
// arrive once each, in order, and are marked as caught up; when they are no longer kept
// the server sends the room's last posts from the database instead. Everything is
// rendered as text, never as HTML.
"use strict";

(function () {
  const root = document.getElementById("room");
  const room = root.dataset.room;
  const $ = (id) => document.getElementById(id);
  const messages = $("messages"), members = $("members"), status = $("status");
  const errorLine = $("error"), typingLine = $("typing"), input = $("text");

  // Close codes after which retrying cannot help.
  const FINAL = {4003: "This room is private.", 4004: "There is no such room.",
                 4029: "Disconnected for sending too many messages.",
                 4030: "Too many open connections: close another tab and reload.",
                 4401: "You were logged out (in another tab, or your password changed): log in again to rejoin.",
                 4403: "You no longer have access to this room."};

  let lastTyping = 0, typingTimer = null;
  // Presence: who is here, by name, with one meta per open connection (each with its ref);
  // the server sends the whole list on joining, then only joins and leaves.
  let presence = {};

  function setStatus(text, state) {
    status.textContent = text;
    status.dataset.state = state;
  }

  const socket = new ConsumersSocket(`/ws/chat/${room}/`, {finalCodes: Object.keys(FINAL), connect: false});
  socket.on("state", (state, detail) => {
    if (state !== "reconnecting" && state !== "closed") return;
    presence = {};
    renderMembers();
    status.dataset.code = detail.code;
    if (state === "closed") setStatus(FINAL[detail.code] || "Disconnected.", "closed");
    else setStatus(`Disconnected; reconnecting in ${(detail.delay / 1000).toFixed(1)} s…`, "reconnecting");
  });
  socket.on("message", handle);
  // What the page missed while away came first, each post marked; now it is caught up.
  socket.on("recovered", ({count}) => {
    root.dataset.recovery = "recovered";
    root.dataset.recovered = count;  // posts and verdicts
    const posts = messages.querySelectorAll(".caught-up").length;
    setStatus(`${status.textContent}; caught up: ${posts} new post${posts === 1 ? "" : "s"}`, "connected");
  });
  // Too long away (or the server lost the room's history): the history event that comes
  // with this reloads the room from the database.
  socket.on("recovery_failed", () => { root.dataset.recovery = "reloaded"; });
  socket.on("joined", () => { root.dataset.recovery = "fresh"; });

  function handle(event, info) {
    switch (event.type) {
      case "welcome":
        setStatus(event.server ? `Connected to ${event.server}` : "Connected", "connected");
        root.dataset.server = event.server || "";
        input.disabled = !event.can_post;
        for (const item of messages.querySelectorAll(".caught-up")) item.classList.remove("caught-up");
        break;
      case "history":
        messages.replaceChildren(...event.messages.map((message) => renderMessage(message)));
        scrollDown();
        break;
      case "message":
        messages.appendChild(renderMessage(event, info.recovered));
        scrollDown();
        break;
      case "moderated": {
        const item = document.getElementById(`message-${event.id}`);
        if (item) item.replaceWith(renderMessage(event, item.classList.contains("caught-up")));
        break;
      }
      case "presence":  // the list on entering, then only joins and leaves
        if (event.members) presence = event.members;
        else applyDiff(event);
        renderMembers();
        break;
      case "typing":
        typingLine.textContent = `${event.user} is typing…`;
        clearTimeout(typingTimer);
        typingTimer = setTimeout(() => { typingLine.textContent = ""; }, 3000);
        break;
      case "error":
        errorLine.textContent = event.detail;
        setTimeout(() => { if (errorLine.textContent === event.detail) errorLine.textContent = ""; }, 5000);
        break;
    }
  }

  function renderMessage(event, caughtUp = false) {
    const item = document.createElement("li");
    item.id = `message-${event.id}`;
    item.className = `message ${event.status}${caughtUp ? " caught-up" : ""}`;
    const author = document.createElement("b");
    author.textContent = event.user;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = event.status === "removed" ? "[removed by the moderator]" : event.text;
    const time = document.createElement("time");
    time.dateTime = event.created;
    time.textContent = new Date(event.created).toLocaleTimeString();
    item.append(time, " ", author, " ", text);
    return item;
  }

  // Joins, then leaves, by ref: applying a diff twice changes nothing.
  function applyDiff(diff) {
    for (const [name, entry] of Object.entries(diff.joins)) {
      const refs = new Set(entry.metas.map((meta) => meta.ref));
      const kept = (presence[name] ? presence[name].metas : []).filter((meta) => !refs.has(meta.ref));
      presence[name] = {metas: kept.concat(entry.metas)};
    }
    for (const [name, entry] of Object.entries(diff.leaves)) {
      if (!presence[name]) continue;
      const gone = new Set(entry.metas.map((meta) => meta.ref));
      const metas = presence[name].metas.filter((meta) => !gone.has(meta.ref));
      if (metas.length) presence[name] = {metas};
      else delete presence[name];
    }
  }

  function renderMembers() {
    members.replaceChildren(...Object.keys(presence).sort().map((name) => {
      const item = document.createElement("li");
      item.textContent = name;
      return item;
    }));
  }

  function scrollDown() { messages.scrollTop = messages.scrollHeight; }

  function send(payload) {
    if (socket.send(payload)) return true;
    errorLine.textContent = "Not connected; try again in a moment.";
    return false;
  }

  $("post").addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.value.trim() && send({type: "message", text: input.value})) input.value = "";
  });
  input.addEventListener("input", () => {
    if (Date.now() - lastTyping > 2000 && socket.send({type: "typing"})) lastTyping = Date.now();
  });
  window.addEventListener("offline", () => setStatus("The network is offline; waiting…", "reconnecting"));
  window.addEventListener("online", () => socket.reconnectNow());
  socket.connect();
})();
