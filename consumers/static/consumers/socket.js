// ConsumersSocket: a WebSocket that comes back and misses nothing. One file, no build step,
// no dependency: <script src="{% static 'consumers/socket.js' %}"></script>.
//
// It reconnects with exponential backoff and jitter (stopping on the close codes the
// application calls final), remembers the last position it saw in each history group and
// asks the server to resume from there on every reconnect, drops a frame it has already
// seen, and answers the server's pings. The frames it exchanges are the protocol of
// consumers/history.py (README: "The recovery protocol"):
//
//   handshake  the URL gets ?recover=<JSON {group: {epoch, offset}}> when it has positions
//   server     {"type": "consumers.joined", group, position}
//              {"type": "consumers.recovered", group, count, position}
//              {"type": "consumers.recovery_failed", group, reason, position}
//              {"type": "consumers.ping", interval}   -> the client answers consumers.pong
//              any application frame; one of a history group carries
//              "__position__": {group, epoch, offset}
//   client     {"type": "consumers.pong"}, and whatever the application sends
//
// const socket = new ConsumersSocket("/ws/chat/lobby/", {finalCodes: [4003, 4004]});
// socket.on("message", (frame, info) => ...);   // info: {position, recovered}
// socket.on("recovered", ({group, count}) => ...);
// socket.on("recovery_failed", ({group, reason}) => ...);   // reload your state
// socket.on("state", (state, detail) => ...);   // connecting, open, reconnecting, closed
"use strict";

(function (global) {
  const PROTOCOL = "consumers.";

  class ConsumersSocket {
    constructor(url, options = {}) {
      this.url = url;
      this.finalCodes = new Set((options.finalCodes || []).map(Number));
      this.minDelay = options.minDelay || 500;
      this.maxDelay = options.maxDelay || 10000;
      this.WebSocket = options.WebSocket || global.WebSocket;
      this.random = options.random || Math.random;
      this.timers = options.timers || {set: (f, ms) => setTimeout(f, ms), clear: (t) => clearTimeout(t)};
      this.positions = {};  // group -> {epoch, offset}: the last seen, kept across reconnects
      this.stats = {duplicates: 0, gaps: 0, reconnects: 0};
      this.state = "idle";
      this.listeners = {};
      this.socket = null;
      this.attempt = 0;
      this.recovering = new Set();
      this.retryTimer = null;
      this.watchdog = null;
      this.stopped = false;
      if (options.connect !== false) this.connect();
    }

    on(event, listener) {
      (this.listeners[event] = this.listeners[event] || []).push(listener);
      return this;
    }

    emit(event, ...args) {
      for (const listener of this.listeners[event] || []) listener(...args);
    }

    setState(state, detail = {}) {
      this.state = state;
      this.emit("state", state, detail);
    }

    // The URL of the next attempt: the positions to resume from ride in the handshake, so
    // the server knows them before it subscribes and sends anything.
    address() {
      let url = this.url;
      if (!/^wss?:/.test(url) && global.location) {
        const scheme = global.location.protocol === "https:" ? "wss" : "ws";
        url = `${scheme}://${global.location.host}${url}`;
      }
      if (!Object.keys(this.positions).length) return url;
      const query = encodeURIComponent(JSON.stringify(this.positions));
      return `${url}${url.includes("?") ? "&" : "?"}recover=${query}`;
    }

    connect() {
      this.retryTimer = null;
      if (this.stopped) return;
      this.setState("connecting", {attempt: this.attempt});
      this.recovering = new Set(Object.keys(this.positions));
      const socket = new this.WebSocket(this.address());
      this.socket = socket;
      let heard = false;
      socket.onopen = () => this.setState("open");
      socket.onmessage = (event) => {
        if (!heard) { heard = true; this.attempt = 0; }  // it stayed up long enough to talk
        this.receive(event.data);
      };
      socket.onclose = (event) => this.closed(socket, event.code, event.reason);
    }

    receive(data) {
      let frame;
      try { frame = JSON.parse(data); } catch (error) { return this.emit("error", error); }
      if (frame === null || typeof frame !== "object") return this.emit("message", frame, {});
      const type = typeof frame.type === "string" ? frame.type : "";
      if (type.startsWith(PROTOCOL)) return this.control(type.slice(PROTOCOL.length), frame);
      const position = frame.__position__;
      if (position && typeof position.group === "string") {
        const last = this.positions[position.group];
        if (last && last.epoch === position.epoch && position.offset <= last.offset) {
          this.stats.duplicates += 1;  // seen already: the server or the network said it twice
          return;
        }
        if (last && last.epoch === position.epoch && position.offset > last.offset + 1) {
          this.stats.gaps += 1;
        }
        this.positions[position.group] = {epoch: position.epoch, offset: position.offset};
      }
      const recovered = Boolean(position && this.recovering.has(position.group));
      this.emit("message", frame, {position: position || null, recovered});
    }

    control(kind, frame) {
      if (kind === "ping") {
        this.send({type: `${PROTOCOL}pong`});
        this.watch(frame.interval);
        return;
      }
      if (!["joined", "recovered", "recovery_failed"].includes(kind)) return;
      const {group, position} = frame;
      // Joined from now although we asked to resume: to the application, a failed recovery.
      if (kind === "joined" && this.recovering.has(group)) kind = "recovery_failed";
      if (position) this.positions[group] = {epoch: position.epoch, offset: position.offset};
      else delete this.positions[group];  // the group keeps no history
      this.recovering.delete(group);
      this.emit(kind, frame);
    }

    // A server that stops pinging is gone even if no close ever arrives (a dead proxy, a
    // laptop waking up): give up on the socket after two silent intervals.
    watch(interval) {
      if (this.watchdog !== null) this.timers.clear(this.watchdog);
      this.watchdog = null;
      if (!(interval > 0)) return;
      const socket = this.socket;
      this.watchdog = this.timers.set(() => {
        if (socket === this.socket) socket.close(4000, "no ping from the server");
      }, interval * 2000 + 1000);
    }

    closed(socket, code, reason) {
      if (socket !== this.socket) return;
      this.watch(0);
      this.socket = null;
      if (this.stopped || this.finalCodes.has(code)) {
        this.stopped = true;
        this.setState("closed", {code, reason});
        return;
      }
      // Equal jitter: half the exponential delay, plus up to as much again at random, so
      // a thousand clients dropped together do not all come back in the same instant.
      const ceiling = Math.min(this.maxDelay, this.minDelay * 2 ** this.attempt);
      const wait = Math.round(ceiling / 2 + (this.random() * ceiling) / 2);
      this.attempt += 1;
      this.stats.reconnects += 1;
      this.setState("reconnecting", {code, reason, delay: wait});
      this.retryTimer = this.timers.set(() => this.connect(), wait);
    }

    // Try now instead of waiting out the backoff (the network came back, say).
    reconnectNow() {
      if (this.retryTimer === null || this.stopped) return;
      this.timers.clear(this.retryTimer);
      this.connect();
    }

    send(frame) {
      const open = this.socket && this.socket.readyState === 1;
      if (open) this.socket.send(JSON.stringify(frame));
      return Boolean(open);
    }

    close(code = 1000, reason = "") {
      this.stopped = true;
      if (this.retryTimer !== null) this.timers.clear(this.retryTimer);
      if (this.socket) this.socket.close(code, reason);
      else this.setState("closed", {code, reason});
    }
  }

  global.ConsumersSocket = ConsumersSocket;
  if (typeof module !== "undefined" && module.exports) module.exports = ConsumersSocket;
})(typeof window !== "undefined" ? window : globalThis);
