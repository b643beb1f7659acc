// The chat page's client: no build step, no library. It keeps one WebSocket open to the
// room, reconnecting with backoff when the server or the network goes away, and renders
// everything as text, never as HTML.
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
  const MIN_DELAY = 500, MAX_DELAY = 10000;

  let socket = null, delay = MIN_DELAY, lastTyping = 0, typingTimer = null;
  // Presence: who is here, by name, with one meta per open connection (each with its ref);
  // the server sends the whole list on joining, then only joins and leaves.
  let presence = {};

  function setStatus(text, state) {
    status.textContent = text;
    status.dataset.state = state;
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/ws/chat/${room}/`);
    socket.onopen = () => { delay = MIN_DELAY; };
    socket.onmessage = (event) => handle(JSON.parse(event.data));
    socket.onclose = (event) => {
      presence = {};
      renderMembers();
      status.dataset.code = event.code;
      if (FINAL[event.code]) {
        setStatus(FINAL[event.code], "closed");
        return;
      }
      const wait = Math.round(delay * (0.75 + Math.random() / 2));
      setStatus(`Disconnected; reconnecting in ${(wait / 1000).toFixed(1)} s…`, "reconnecting");
      delay = Math.min(delay * 2, MAX_DELAY);
      setTimeout(connect, wait);
    };
  }

  function handle(event) {
    switch (event.type) {
      case "welcome":
        setStatus(event.server ? `Connected to ${event.server}` : "Connected", "connected");
        root.dataset.server = event.server || "";
        input.disabled = !event.can_post;
        break;
      case "history":
        messages.replaceChildren(...event.messages.map(renderMessage));
        scrollDown();
        break;
      case "message":
        messages.appendChild(renderMessage(event));
        scrollDown();
        break;
      case "moderated": {
        const item = document.getElementById(`message-${event.id}`);
        if (item) item.replaceWith(renderMessage(event));
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

  function renderMessage(event) {
    const item = document.createElement("li");
    item.id = `message-${event.id}`;
    item.className = `message ${event.status}`;
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
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(payload));
      return true;
    }
    errorLine.textContent = "Not connected; try again in a moment.";
    return false;
  }

  $("post").addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.value.trim() && send({type: "message", text: input.value})) input.value = "";
  });
  input.addEventListener("input", () => {
    if (Date.now() - lastTyping > 2000 && socket && socket.readyState === WebSocket.OPEN) {
      lastTyping = Date.now();
      socket.send(JSON.stringify({type: "typing"}));
    }
  });
  window.addEventListener("offline", () => setStatus("The network is offline; waiting…", "reconnecting"));
  connect();
})();
