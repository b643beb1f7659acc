// The echo page's client (a file, not inline: the Content-Security-Policy allows no inline
// script).
"use strict";

const log = document.getElementById("log");
const status = document.getElementById("status");
const scheme = location.protocol === "https:" ? "wss" : "ws";
const socket = new WebSocket(`${scheme}://${location.host}/ws/echo/`);

function show(line) {
  const entry = document.createElement("div");
  entry.textContent = line;  // text, never HTML
  log.appendChild(entry);
}

socket.onopen = () => { status.textContent = "Connected"; };
socket.onclose = (event) => { status.textContent = `Disconnected (code ${event.code})`; };
socket.onmessage = (event) => {
  const data = JSON.parse(event.data);
  if (data.type === "welcome") {
    show(`Welcome${data.user ? ", " + data.user : ""}!`);
  } else if (data.type === "echo") {
    show(`echo: ${data.message.text}`);
  }
};
document.getElementById("form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("message");
  socket.send(JSON.stringify({text: input.value}));
  input.value = "";
});
