// Unit checks of consumers/static/consumers/socket.js under node's own test runner, with a
// stand-in WebSocket and timers (run by tests/consumers/test_socket_js.py).
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");

const ConsumersSocket = require(path.join(__dirname, "../../consumers/static/consumers/socket.js"));

function harness(options = {}) {
  const sockets = [], timers = [];
  class FakeSocket {
    constructor(url) { this.url = url; this.sent = []; this.readyState = 0; sockets.push(this); }
    open() { this.readyState = 1; this.onopen(); }
    frame(data) { this.onmessage({data: JSON.stringify(data)}); }
    send(text) { this.sent.push(JSON.parse(text)); }
    close(code = 1000, reason = "") { this.readyState = 3; this.onclose({code, reason}); }
  }
  const client = new ConsumersSocket("ws://host/ws/room/", {
    WebSocket: FakeSocket,
    random: () => 0.5,
    timers: {set: (run, ms) => timers.push({run, ms}) - 1, clear: (id) => { timers[id] = null; }},
    ...options,
  });
  const events = [];
  for (const name of ["message", "joined", "recovered", "recovery_failed", "state"]) {
    client.on(name, (...args) => events.push([name, ...args]));
  }
  const fire = () => { const timer = timers.pop(); timer.run(); return timer.ms; };
  return {client, sockets, timers, events, fire, last: () => sockets[sockets.length - 1]};
}

const at = (group, epoch, offset) => ({group, epoch, offset});

test("reconnects with exponential backoff and jitter, capped, reset once it hears the server", () => {
  const {sockets, fire, last} = harness({minDelay: 100, maxDelay: 1000});
  const waits = [];
  for (let attempt = 0; attempt < 6; attempt += 1) {
    last().close(1006);
    waits.push(fire());
  }
  // random() = 0.5: three quarters of 100, 200, 400, 800, then the 1000 cap.
  assert.deepEqual(waits, [75, 150, 300, 600, 750, 750]);
  last().open();
  last().frame({type: "hello"});
  last().close(1006);
  assert.equal(fire(), 75);
  assert.equal(sockets.length, 8);
});

test("stops on a final close code", () => {
  const {client, timers, events, last} = harness({finalCodes: [4003]});
  last().close(4003, "private");
  assert.equal(timers.length, 0);
  assert.equal(client.state, "closed");
  assert.deepEqual(events.at(-1), ["state", "closed", {code: 4003, reason: "private"}]);
});

test("remembers the last position per group and resumes from it in the handshake", () => {
  const {client, fire, last, events} = harness();
  assert.equal(last().url, "ws://host/ws/room/");
  last().open();
  last().frame({type: "consumers.joined", group: "g", position: {epoch: "e", offset: 4}});
  last().frame({type: "note", __position__: at("g", "e", 5)});
  last().close(1006);
  fire();
  const asked = JSON.parse(decodeURIComponent(last().url.split("?recover=")[1]));
  assert.deepEqual(asked, {g: {epoch: "e", offset: 5}});
  // What comes before the server's "recovered" was missed while away.
  last().open();
  last().frame({type: "note", n: 6, __position__: at("g", "e", 6)});
  last().frame({type: "consumers.recovered", group: "g", count: 1, position: {epoch: "e", offset: 6}});
  last().frame({type: "note", n: 7, __position__: at("g", "e", 7)});
  const messages = events.filter(([name]) => name === "message");
  assert.deepEqual(messages.map(([, frame, info]) => [frame.n, info.recovered]), [[undefined, false], [6, true], [7, false]]);
  assert.equal(events.filter(([name]) => name === "recovered").length, 1);
  assert.deepEqual(client.positions, {g: {epoch: "e", offset: 7}});
});

test("drops a frame it has seen and counts it", () => {
  const {client, events, last} = harness();
  last().open();
  for (const offset of [1, 2, 2, 1, 3]) last().frame({type: "note", __position__: at("g", "e", offset)});
  const offsets = events.filter(([name]) => name === "message").map(([, frame]) => frame.__position__.offset);
  assert.deepEqual(offsets, [1, 2, 3]);
  assert.equal(client.stats.duplicates, 2);
});

test("a failed recovery, or a join from now where it asked to resume, reads as recovery_failed", () => {
  const {client, fire, last, events} = harness();
  last().open();
  last().frame({type: "note", __position__: at("g", "old", 9)});
  last().close(1006);
  fire();
  last().open();
  last().frame({type: "consumers.joined", group: "g", position: {epoch: "new", offset: 0}});
  assert.equal(events.at(-1)[0], "recovery_failed");
  assert.deepEqual(client.positions.g, {epoch: "new", offset: 0});
  last().frame({type: "note", __position__: at("g", "new", 1)});
  assert.equal(events.at(-1)[2].recovered, false);
});

test("answers pings, and gives up on a server that stops pinging", () => {
  const {timers, sockets, last} = harness();
  last().open();
  last().frame({type: "consumers.ping", interval: 20});
  assert.deepEqual(last().sent, [{type: "consumers.pong"}]);
  const watchdog = timers.at(-1);
  assert.equal(watchdog.ms, 41000);
  watchdog.run();  // two intervals and a second without a ping
  assert.equal(sockets[0].readyState, 3);
  assert.equal(timers.length, 2);  // the reconnect is scheduled
});

test("close() stops reconnecting", () => {
  const {client, timers, last} = harness();
  last().open();
  client.close();
  assert.equal(client.state, "closed");
  assert.equal(timers.length, 0);
  assert.equal(client.send({type: "x"}), false);
});
