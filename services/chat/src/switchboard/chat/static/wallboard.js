/* Switchboard supervisor wallboard: live queues, agents by state, the surge level, the chats in
   progress and the day's charts, drawn as inline SVG. A supervisor watches a live chat read-only
   (both sides, live) and can send its agent a private note, which the customer never sees; they
   listen to a live call on their own phone (the voice gateway rings it), monitoring, whispering to
   the agent or barging in, and switch between them without redialling. The live figures come from the router every second; the day's
   charts come from the record (the case service's reports, today in the tenant's time zone), so
   they show the whole day whenever the board is opened. All data is rendered with textContent /
   attributes only. */
(function () {
  "use strict";
  var t = window.SBI18n.t;
  var $ = function (id) { return document.getElementById(id); };
  var KEY = "sb-wallboard";
  var state = { token: null, agent: null, socket: null, day: null, last: null, live: [], watching: null, seen: {}, calls: [], listening: null };
  var LIVE_SECONDS = 3;  // how often the list of live chats is asked for

  var el = window.SBPage.el;
  var clear = window.SBPage.clear;
  var svg = window.SBPage.svg;
  function secs(s) {
    s = Math.round(s || 0);
    return s >= 3600 ? Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m"
      : s >= 60 ? Math.floor(s / 60) + "m " + (s % 60) + "s" : s + "s";
  }
  function pct(x) { return (Math.round((x || 0) * 1000) / 10) + "%"; }
  function error(msg) { $("board-error").textContent = msg || ""; $("board-error").hidden = !msg; }

  window.SBPage.signIn({ key: KEY, t: t, roles: ["supervisor", "team_lead"], refused: "needSupervisor", done: function (token, agent) {
    state.token = token; state.agent = agent;
    window.SBI18n.load(state.agent.ui_language).then(start);
  } });

  $("sign-out").addEventListener("click", function () { sessionStorage.removeItem(KEY); location.reload(); });

  function start() {
    $("login").hidden = true;
    $("board").hidden = false;
    $("me").textContent = state.agent.name;
    var socket = io("/agent", { auth: { token: state.token }, transports: ["websocket"] });
    state.socket = socket;
    socket.on("connect", function () {
      $("conn").textContent = t("connected"); $("conn").className = "conn ok"; error("");
      socket.emit("watch", {}, function (ack) {
        if (!ack.ok) { error(ack.error); return; }
      });
      pollLive();
      pollCalls();
      // Watching ends with the connection: a reconnect watches again.
      if (state.watching) supervise(state.watching.contact_id);
    });
    socket.on("disconnect", function () {
      $("conn").textContent = t("reconnecting"); $("conn").className = "conn bad";
      // The server hangs up the supervisor's phone when the socket goes.
      if (state.listening) endListening("listenDropped");
    });
    socket.on("message", onWatchedMessage);
    socket.on("status", function (s) {
      if (state.watching && s.contact_id === state.watching.contact_id && s.state === "ended") {
        state.watching.ended = true;
        renderWatchState();
      }
    });
    setInterval(function () { pollLive(); pollCalls(); }, LIVE_SECONDS * 1000);
    socket.on("connect_error", function (err) { error(err && err.message); });
    socket.on("day", function (d) { state.day = d; drawCharts(); fillToday(); });
    socket.on("stats", function (s) {
      if (s.error) { error(s.error); return; }
      var target = state.last ? state.last.total.sl_target : null;
      state.last = s;
      render(s);
      renderLive();
      renderCalls();
      if (target !== s.total.sl_target) drawCharts();
    });
  }

  // ---- live chats and watching one ----------------------------------------------------------

  function pollLive() {
    if (!state.socket || !state.socket.connected) return;
    state.socket.emit("live_chats", {}, function (ack) {
      if (!ack.ok) { error(problem(ack)); return; }
      state.live = ack.chats;
      renderLive();
    });
  }

  function pollCalls() {
    if (!state.socket || !state.socket.connected) return;
    state.socket.emit("live_calls", {}, function (ack) {
      if (!ack.ok) { error(problem(ack)); return; }
      state.calls = ack.calls;
      var l = state.listening;
      if (l && l.phase === "on" && !state.calls.some(function (c) { return c.contact_id === l.contact_id; })) {
        endListening("callEnded");
      }
      renderCalls();
    });
  }

  // A refusal of a call action in the UI's language: its own wording, else the general one.
  function callProblem(name, ack) {
    var key = "err_" + name + "_" + (ack.kind || "Internal");
    var text = t(key);
    return text === key ? problem(ack) : text;
  }

  // Rows are rebuilt only when the calls or the listening change (a mode being picked or a
  // button being pressed is not lost to the every-second refresh); durations tick in place.
  function renderCalls() {
    var body = $("wb-calls");
    var now = Date.now();
    var l = state.listening;
    var shape = JSON.stringify([state.calls.map(function (c) { return [c.contact_id, c.agent_name]; }), l ? l.contact_id : null, window.SBI18n.current()]);
    if (body.getAttribute("data-shape") === shape) {
      state.calls.forEach(function (c) {
        var cell = body.querySelector('tr[data-contact-id="' + CSS.escape(c.contact_id) + '"] td.duration');
        if (cell) cell.textContent = c.started_at ? secs((now - c.started_at) / 1000) : "";
      });
      return;
    }
    body.setAttribute("data-shape", shape);
    clear(body);
    $("wb-calls-none").hidden = state.calls.length > 0;
    state.calls.forEach(function (c) {
      var on = l && l.contact_id === c.contact_id;
      var mode = el("select", { "data-testid": "wb-listen-mode", "aria-label": t("listenMode") });
      ["monitor", "whisper", "barge"].forEach(function (m) { mode.appendChild(el("option", { value: m, text: t("mode" + m.charAt(0).toUpperCase() + m.slice(1)) })); });
      var button = el("button", { type: "button", "data-testid": "wb-listen", text: t("listen") });
      if (l) { button.disabled = true; mode.disabled = true; }
      button.addEventListener("click", function () { listen(c, mode.value); });
      body.appendChild(el("tr", { "data-contact-id": c.contact_id, "data-testid": "wb-live-call", cls: on ? "watched" : "" },
        el("td", { text: c.agent_name || c.agent_id }),
        el("td", { cls: "duration", text: c.started_at ? secs((now - c.started_at) / 1000) : "" }),
        el("td", {}, on ? null : mode, on ? null : button)));
    });
  }

  function listen(c, mode) {
    if (state.listening) return;
    var l = { contact_id: c.contact_id, agent_name: c.agent_name || c.agent_id, supervision_id: null, mode: mode, phase: "ringing", left: false };
    state.listening = l;
    renderListen(""); renderCalls();
    // Acked once the supervisor answers their phone (or the gateway refuses): nothing waits.
    state.socket.emit("listen", { contact_id: c.contact_id, mode: mode }, function (ack) {
      if (l.left) {  // left while the phone rang: hang it up again
        if (ack.ok) state.socket.emit("leave_call", { supervision_id: ack.supervision_id }, function () {});
        return;
      }
      if (!ack.ok) { endListening(null, callProblem("listen", ack)); return; }
      l.supervision_id = ack.supervision_id; l.mode = ack.mode; l.phase = "on";
      renderListen(""); renderCalls();
    });
  }

  function setMode(mode) {
    var l = state.listening;
    if (!l || l.phase !== "on" || l.mode === mode || l.pending) return;
    l.pending = true;
    state.socket.emit("listen_mode", { supervision_id: l.supervision_id, mode: mode }, function (ack) {
      l.pending = false;
      if (state.listening !== l) return;
      if (!ack.ok) { renderListen(callProblem("listen_mode", ack)); return; }
      l.mode = ack.mode;
      renderListen("");
    });
  }

  function leave() {
    var l = state.listening;
    if (!l) return;
    l.left = true;
    if (l.supervision_id) state.socket.emit("leave_call", { supervision_id: l.supervision_id }, function () {});
    endListening(null);
  }

  // Listening ended: `reason` (a string key) or `message` (already worded) stays shown.
  function endListening(reason, message) {
    if (state.listening) state.listening.left = true;
    state.listening = null;
    var text = message || (reason ? t(reason) : "");
    if (text) {
      $("listen").hidden = false;
      $("listen").className = "listen error";
      $("listen-state").textContent = text;
      document.querySelectorAll("#listen .modes button").forEach(function (b) { b.hidden = true; });
      $("listen-leave").textContent = t("dismiss");
    } else $("listen").hidden = true;
    renderCalls();
  }

  function renderListen(problemText) {
    var l = state.listening;
    if (!l) return;
    var box = $("listen");
    box.hidden = false;
    box.className = "listen" + (problemText ? " error" : "");
    box.setAttribute("data-phase", l.phase);
    box.setAttribute("data-mode", l.phase === "on" ? l.mode : "");
    var states = { monitor: "listenMonitoring", whisper: "listenWhispering", barge: "listenBarging" };
    var text = l.phase === "ringing" ? t("listenRinging") : t(states[l.mode], { agent: l.agent_name });
    $("listen-state").textContent = problemText ? text + " — " + problemText : text;
    document.querySelectorAll("#listen .modes button").forEach(function (b) {
      b.hidden = false;
      b.disabled = l.phase !== "on";
      b.setAttribute("aria-pressed", String(l.phase === "on" && b.getAttribute("data-mode") === l.mode));
    });
    $("listen-leave").textContent = t("leaveCall");
  }

  document.querySelectorAll("#listen .modes button").forEach(function (b) {
    b.addEventListener("click", function () { setMode(b.getAttribute("data-mode")); });
  });
  $("listen-leave").addEventListener("click", function () {
    if (state.listening) leave(); else $("listen").hidden = true;
  });

  function problem(ack) {
    var key = "err_" + (ack.kind || "Internal");
    var text = t(key);
    return text === key ? ack.error : text;
  }

  function renderLive() {
    var body = $("wb-live");
    clear(body);
    $("wb-live-none").hidden = state.live.length > 0;
    var now = Date.now();
    state.live.forEach(function (c) {
      var watched = state.watching && state.watching.contact_id === c.contact_id;
      var button = el("button", { type: "button", "data-testid": "wb-watch", text: t("watch") });
      button.addEventListener("click", function () { supervise(c.contact_id); });
      body.appendChild(el("tr", { "data-contact-id": c.contact_id, "data-testid": "wb-live-chat", cls: watched ? "watched" : "" },
        el("td", { text: c.customer_name || "—" }),
        el("td", { text: c.agent_name || c.agent_id }),
        el("td", { "data-testid": "wb-live-waiting", cls: c.waiting_since ? "waiting" : "", text: c.waiting_since ? secs((now - c.waiting_since) / 1000) : "–" }),
        el("td", { text: c.started_at ? secs((now - c.started_at) / 1000) : "" }),
        el("td", {}, watched ? null : button)));
    });
  }

  function supervise(contactId) {
    var previous = state.watching;
    if (previous && previous.contact_id !== contactId) {
      state.socket.emit("unsupervise", { contact_id: previous.contact_id }, function () {});
    }
    state.socket.emit("supervise", { contact_id: contactId }, function (ack) {
      if (!ack.ok) { error(problem(ack)); if (!previous || previous.contact_id !== contactId) closeWatch(false); return; }
      error("");
      var again = previous && previous.contact_id === contactId;
      state.watching = { contact_id: ack.contact_id, customer_name: ack.customer_name, agent_name: ack.agent_name || ack.agent_id, ended: false, notes: again ? previous.notes : [] };
      state.seen = {};
      var thread = $("watch-thread");
      clear(thread);
      ack.messages.forEach(addWatched);
      state.watching.notes.forEach(function (n) { thread.appendChild(noteItem(n)); });
      $("watch-who").textContent = (ack.customer_name || t("customer")) + " ↔ " + state.watching.agent_name;
      $("note-status").textContent = "";
      $("watch").hidden = false;
      renderWatchState();
      renderLive();
    });
  }

  function closeWatch(tell) {
    var w = state.watching;
    state.watching = null;
    $("watch").hidden = true;
    if (tell && w) state.socket.emit("unsupervise", { contact_id: w.contact_id }, function () {});
    renderLive();
  }

  function renderWatchState() {
    var ended = !!(state.watching && state.watching.ended);
    $("watch-state").textContent = ended ? t("ended") : "";
    $("note-send").disabled = ended;
    $("note-text").disabled = ended;
  }

  function addWatched(m) {
    if (state.seen[m.message_id]) return;
    state.seen[m.message_id] = true;
    var who = m.author === "agent" ? (m.agent_name || state.watching.agent_name) : m.author === "customer" ? (state.watching.customer_name || t("customer")) : "";
    var thread = $("watch-thread");
    thread.appendChild(el("li", { cls: "msg " + m.author, "data-testid": "watch-msg", "data-author": m.author, "data-message-id": m.message_id },
      el("div", { cls: "meta", text: who + (m.sent_at ? " · " + new Date(m.sent_at).toLocaleTimeString(window.SBI18n.current()) : "") }),
      el("div", { cls: "text", text: m.text || (m.attachment ? "📎 " + (m.attachment.filename || "") : "") })));
    thread.scrollTop = thread.scrollHeight;
  }

  function onWatchedMessage(m) {
    if (state.watching && m.contact_id === state.watching.contact_id) addWatched(m);
  }

  function noteItem(n) {
    return el("li", { cls: "msg supervisor-note", "data-testid": "watch-note", "data-author": "supervisor" },
      el("div", { cls: "meta", text: t("supervisorNote") + " · " + new Date(n.at).toLocaleTimeString(window.SBI18n.current()) }),
      el("div", { cls: "text", text: n.text }),
      el("div", { cls: "note-private", text: t("supervisorNotePrivate") }));
  }

  $("watch-close").addEventListener("click", function () { closeWatch(true); });
  $("note-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var w = state.watching;
    var text = $("note-text").value;
    if (!w || !text.trim()) return;
    $("note-send").disabled = true;
    state.socket.emit("whisper", { contact_id: w.contact_id, text: text }, function (ack) {
      renderWatchState();
      if (!ack.ok) { $("note-status").textContent = problem(ack); return; }
      $("note-text").value = "";
      $("note-status").textContent = t("noteSent");
      w.notes.push(ack.note);
      if (state.watching === w) {
        $("watch-thread").appendChild(noteItem(ack.note));
        $("watch-thread").scrollTop = $("watch-thread").scrollHeight;
      }
    });
  });

  function tile(id, cls) { var n = $(id); if (n) n.className = "tile " + (cls || ""); }

  function render(s) {
    var total = s.total;
    $("wb-waiting").textContent = String(total.waiting);
    $("wb-longest").textContent = secs(total.longest_wait);
    tile("tile-longest", total.longest_wait > (total.sl_threshold || 20) ? "bad" : "ok");
    $("wb-asa").textContent = secs(total.asa);
    // A rate with no outcome in the window is undefined: "–", never 0 %.
    $("wb-abandon").textContent = total.answered + total.abandoned ? pct(total.abandonment_rate) : "–";
    tile("tile-abandon", total.abandonment_rate > 0.05 ? "bad" : "ok");
    $("wb-surge").textContent = String(s.surge_level);
    tile("tile-surge", s.surge_level > 0 ? "bad" : "ok");
    gauge(total.answered + total.abandoned > 0 ? total.service_level : null, total.sl_target || 0.8);
    var body = $("wb-queues");
    clear(body);
    s.queues.forEach(function (q) {
      body.appendChild(el("tr", { "data-queue": q.queue },
        el("td", { text: q.queue }), el("td", { text: String(q.waiting), "data-testid": "wb-queue-waiting" }),
        el("td", { text: secs(q.longest_wait) }),
        el("td", { text: q.answered + q.abandoned ? pct(q.service_level) + " / " + pct(q.sl_target) : "–" }),
        el("td", { text: secs(q.asa) }), el("td", { text: q.answered + q.abandoned ? pct(q.abandonment_rate) : "–" }),
        el("td", { text: String(q.surge_level) })));
    });
    // By their state on the board: available means free to take a contact now (the server
    // counts an available agent with open contacts or an outstanding offer as busy).
    var shown = teamFilter(s);
    var counts = {};
    shown.forEach(function (a) { counts[a.state] = (counts[a.state] || 0) + 1; });
    var states = $("wb-states");
    clear(states);
    stateBars(states, counts);
    var agents = $("wb-agents");
    // Rows are rebuilt only when an agent's state changes (a button being pressed is not lost
    // to the every-second refresh); the durations tick in place.
    var key = JSON.stringify([s.teams || [], s.my_teams || [], shown.map(function (a) {
      return [a.agent_id, a.name, a.team, a.state, a.presence, a.reason, a.active, a.since];
    })]);
    if (agents.getAttribute("data-key") === key) {
      Array.prototype.forEach.call(agents.querySelectorAll("[data-since]"), function (td) {
        td.textContent = secs((Date.now() - Number(td.getAttribute("data-since"))) / 1000);
      });
      return;
    }
    agents.setAttribute("data-key", key);
    clear(agents);
    // Under their team (the directory's), when the tenant has teams.
    var groups = (s.teams || []).map(function (tm) { return { id: tm.id, name: tm.name }; });
    groups.push({ id: "", name: t("noTeam") });
    groups.forEach(function (g) {
      var members = shown.filter(function (a) { return (a.team || "") === g.id; });
      if (!members.length) return;
      if ((s.teams || []).length) {
        agents.appendChild(el("tr", { cls: "team-row", "data-team": g.id }, el("th", { colspan: "7", text: g.name })));
      }
      members.forEach(function (a) {
        agents.appendChild(el("tr", { "data-agent": a.agent_id, "data-team": a.team || "" },
          el("td", { text: a.name || a.agent_id }),
          el("td", { cls: "state-" + a.state, "data-testid": "wb-agent-state", text: t(a.state) + stateReason(a) }),
          el("td", { text: String(a.active) }),
          a.since ? el("td", { "data-since": String(a.since), text: secs((Date.now() - a.since) / 1000) }) : el("td", { text: "" }),
          el("td", { "data-today": "signed_in", "data-testid": "wb-agent-signed-in-today" }),
          el("td", { "data-today": "break", "data-testid": "wb-agent-break-today" }),
          agentActions(a, mayChange(s, a))));
      });
    });
    fillToday();
  }

  // Each agent's day so far, from the case service's record (the "day" report, every minute):
  // time signed in, and on a break with the number of breaks.
  function fillToday() {
    var today = (state.day && state.day.agents) || {};
    Array.prototype.forEach.call($("wb-agents").querySelectorAll("tr[data-agent]"), function (tr) {
      var d = today[tr.getAttribute("data-agent")];
      var signedIn = tr.querySelector('[data-today="signed_in"]'), onBreak = tr.querySelector('[data-today="break"]');
      signedIn.textContent = d ? secs(d.signed_in_s) : "–";
      onBreak.textContent = d ? secs(d.break_s) + (d.breaks ? " (" + d.breaks + ")" : "") : "–";
    });
  }

  // A break's reason in the board's language (the tenant's own word when it has no
  // translation); the router's reasons for the states it sets are English and say no more
  // than the state.
  function stateReason(a) {
    if (a.presence !== "break" || !a.reason) return "";
    var key = "br_" + a.reason, text = t(key);
    return " — " + (text === key ? a.reason : text);
  }

  // What a supervisor (or the team's lead) may do for an agent: make available again one on a
  // break or not responding (missed offers in a row), sign out one still signed in.
  function agentActions(a, allowed) {
    var cell = el("td", { cls: "agent-actions" });
    if (!allowed) return cell;
    if (a.presence === "break" || a.presence === "not_responding") {
      cell.appendChild(agentButton(a, "available", "wb-agent-available", t("makeAvailable")));
    }
    if (a.presence && a.presence !== "offline") {
      cell.appendChild(agentButton(a, "offline", "wb-agent-sign-out", t("signOutAgent")));
    }
    return cell;
  }

  // A supervisor may change any agent; a team lead those of the teams it leads.
  function mayChange(s, a) {
    if (state.agent.role !== "team_lead") return true;
    return !!a.team && (s.my_teams || []).indexOf(a.team) >= 0;
  }

  function agentButton(a, presence, testid, label) {
    var button = el("button", { type: "button", cls: "secondary", "data-testid": testid, text: label });
    button.addEventListener("click", function () {
      button.disabled = true;
      state.socket.emit("agent_presence", { agent_id: a.agent_id, presence: presence }, function (ack) {
        button.disabled = false;
        error(ack && ack.ok ? "" : problem(ack || {}));
      });
    });
    return button;
  }

  // The agents shown: a team lead's own team by default, every agent for a supervisor; the
  // picker changes it (its choice kept while the page is open).
  function teamFilter(s) {
    var teams = s.teams || [];
    var box = $("wb-team-filter"), select = $("wb-team");
    box.hidden = !teams.length;
    if (!teams.length) return s.agents;
    if (state.team === undefined) state.team = (s.my_teams || [])[0] || "*";
    if (state.team !== "*" && state.team !== "" && !teams.some(function (tm) { return tm.id === state.team; })) state.team = "*";
    var shape = JSON.stringify([teams, window.SBI18n.current()]);
    if (select.getAttribute("data-shape") !== shape) {
      select.setAttribute("data-shape", shape);
      clear(select);
      select.appendChild(el("option", { value: "*", text: t("allTeams") }));
      teams.forEach(function (tm) {
        var mine = (s.my_teams || []).indexOf(tm.id) >= 0;
        select.appendChild(el("option", { value: tm.id, text: tm.name + (mine ? " ★" : "") }));
      });
      select.appendChild(el("option", { value: "", text: t("noTeam") }));
    }
    select.value = state.team;
    if (state.team === "*") return s.agents;
    return s.agents.filter(function (a) { return (a.team || "") === state.team; });
  }
  $("wb-team").addEventListener("change", function () {
    state.team = $("wb-team").value;
    if (state.last) render(state.last);
  });

  function gauge(sl, target) {
    var g = $("wb-gauge");
    clear(g);
    var arc = function (from, to, color, width) {
      var a0 = Math.PI * (1 - from), a1 = Math.PI * (1 - to);
      var x0 = 60 + 50 * Math.cos(a0), y0 = 60 - 50 * Math.sin(a0);
      var x1 = 60 + 50 * Math.cos(a1), y1 = 60 - 50 * Math.sin(a1);
      g.appendChild(svg("path", { d: "M" + x0 + " " + y0 + " A50 50 0 0 1 " + x1 + " " + y1, stroke: color, "stroke-width": width, fill: "none" }));
    };
    arc(0, 0.9999, "#dde1e6", 10);
    if (sl != null) arc(0, Math.max(0.001, Math.min(0.9999, sl)), sl >= target ? "#1e8a4c" : "#c62828", 10);
    var ta = Math.PI * (1 - target);
    g.appendChild(svg("line", { x1: 60 + 40 * Math.cos(ta), y1: 60 - 40 * Math.sin(ta), x2: 60 + 58 * Math.cos(ta), y2: 60 - 58 * Math.sin(ta), stroke: "#1d2430", "stroke-width": 2 }));
    g.appendChild(svg("text", { x: 60, y: 58, "text-anchor": "middle", "class": "gauge-value", "data-testid": "wb-sl-value" }, sl == null ? "–" : pct(sl)));
    g.appendChild(svg("text", { x: 60, y: 69, "text-anchor": "middle" }, t("target") + " " + pct(target)));
  }

  function stateBars(box, counts) {
    var order = ["available", "busy", "wrap_up", "break", "not_responding", "offline"];
    var colors = { available: "#1e8a4c", busy: "#2357d8", wrap_up: "#7a5af5", break: "#c77700", not_responding: "#c62828", offline: "#9aa3ad" };
    var max = Math.max.apply(null, [1].concat(order.map(function (k) { return counts[k] || 0; })));
    var s = svg("svg", { viewBox: "0 0 400 " + order.length * 22, width: "100%", height: order.length * 22, role: "img" });
    order.forEach(function (k, i) {
      var n = counts[k] || 0;
      s.appendChild(svg("text", { x: 0, y: i * 22 + 15, "data-state": k }, t(k)));
      s.appendChild(svg("rect", { x: 110, y: i * 22 + 4, width: Math.max(1, 250 * n / max), height: 14, fill: colors[k] }));
      s.appendChild(svg("text", { x: 115 + 250 * n / max, y: i * 22 + 15, "data-testid": "wb-state-" + k }, String(n)));
    });
    box.appendChild(s);
  }

  var W = 600, H = 160, L = 36, B = 20;
  function minuteX(hour, minute) { return L + (W - L) * (hour * 60 + minute) / 1440; }
  function hourAxis(node, zone) {
    node.appendChild(svg("line", { x1: L, y1: H - B, x2: W, y2: H - B, stroke: "#dde1e6" }));
    [0, 6, 12, 18].forEach(function (h) { node.appendChild(svg("text", { x: minuteX(h, 0), y: H - 4 }, h + ":00")); });
    node.appendChild(svg("text", { x: W, y: H - 4, "text-anchor": "end", "class": "zone" }, zone || ""));
  }

  // Today's service level per 15 minutes (the report's SL: answered within the threshold over
  // answered + abandoned), at the time of day in the tenant's zone.
  function drawSl() {
    var node = $("chart-sl");
    clear(node);
    var day = state.day;
    if (!day) return;
    hourAxis(node, day.time_zone);
    node.appendChild(svg("text", { x: 0, y: 12 }, "100"));
    node.appendChild(svg("text", { x: 0, y: H - B }, "0"));
    var y = function (v) { return H - B - (H - B - 10) * v / 100; };
    var target = 100 * ((state.last && state.last.total.sl_target) || 0.8);
    node.appendChild(svg("line", { x1: L, y1: y(target), x2: W, y2: y(target), stroke: "#1d2430", "stroke-dasharray": "4 4" }));
    var pts = day.quarters.filter(function (q) { return q.service_level != null; }).map(function (q) {
      return { x: minuteX(q.hour, q.minute + 7.5), v: 100 * q.service_level };
    });
    if (pts.length > 1) {
      node.appendChild(svg("polyline", { points: pts.map(function (p) { return p.x.toFixed(1) + "," + y(p.v).toFixed(1); }).join(" "), fill: "none", stroke: "#1e8a4c", "stroke-width": 2 }));
    }
    pts.forEach(function (p) {
      node.appendChild(svg("circle", { cx: p.x.toFixed(1), cy: y(p.v).toFixed(1), r: 3, fill: p.v >= target ? "#1e8a4c" : "#c62828", "data-testid": "wb-day-point", "data-value": p.v.toFixed(1) }));
    });
    node.setAttribute("aria-label", t("chartSl"));
  }

  // Today's contacts per local hour (the same report): answered and abandoned, stacked.
  function drawDay() {
    var node = $("chart-day");
    clear(node);
    var day = state.day;
    if (!day) return;
    hourAxis(node, day.time_zone);
    var rows = day.hours;
    var max = Math.max.apply(null, [4].concat(rows.map(function (r) { return r.answered + r.abandoned; })));
    node.appendChild(svg("text", { x: 0, y: 12 }, String(Math.round(max))));
    var slot = (W - L) / 24;
    rows.forEach(function (r) {
      if (!r.answered && !r.abandoned) return;
      var x = L + r.hour * slot + 2;
      var hA = (H - B - 10) * r.answered / max, hB = (H - B - 10) * r.abandoned / max;
      node.appendChild(svg("rect", { x: x, y: H - B - hA, width: slot - 4, height: hA, fill: "#1e8a4c", "data-hour": r.hour, "data-answered": r.answered, "data-abandoned": r.abandoned }));
      node.appendChild(svg("rect", { x: x, y: H - B - hA - hB, width: slot - 4, height: hB, fill: "#c62828" }));
    });
    node.setAttribute("aria-label", t("chartHourly"));
  }

  function drawCharts() { drawSl(); drawDay(); }

  document.addEventListener("sb-lang", function () { if (state.last) render(state.last); renderLive(); renderCalls(); if (state.listening) renderListen(""); drawCharts(); });

  var prior = null;
  try { prior = JSON.parse(sessionStorage.getItem(KEY) || "null"); } catch (e) { prior = null; }
  var q = new URLSearchParams(location.search).get("tenant");
  if (q) $("login-tenant").value = q;
  if (prior && prior.token) {
    state.token = prior.token; state.agent = prior.agent;
    window.SBI18n.load().then(start);
  } else window.SBI18n.load();
})();
