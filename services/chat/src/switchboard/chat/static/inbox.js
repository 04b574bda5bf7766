/* Switchboard agent inbox: one page for chat, email, fax and voice contacts.
   Safety: every string from a customer (or any server data) is rendered with textContent or as
   an attribute value, never as HTML. */
(function () {
  "use strict";
  var t = window.SBI18n.t;
  var $ = function (id) { return document.getElementById(id); };
  var KEY = "sb-inbox";
  // Channel icons as inline SVG paths (no icon font, no emoji font needed).
  var ICON_PATHS = {
    chat: ["M4 5h16v10H9l-5 4z"],
    email: ["M3 6h18v12H3z", "M3 6l9 7 9-7"],
    fax: ["M6 3h9l3 3v5H6z", "M4 11h16v8H4z", "M8 15h8"],
    voice: ["M6 3l3 1 1 4-2 1a11 11 0 0 0 6 6l1-2 4 1 1 3-2 3C10 20 4 14 3 5z"],
  };
  function icon(channel) {
    var span = document.createElement("span");
    span.className = "icon";
    span.setAttribute("data-channel", channel);
    span.setAttribute("title", t("ch_" + channel));
    var svgNode = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svgNode.setAttribute("viewBox", "0 0 24 24");
    svgNode.setAttribute("aria-hidden", "true");
    (ICON_PATHS[channel] || ICON_PATHS.chat).forEach(function (d) {
      var path = document.createElementNS("http://www.w3.org/2000/svg", "path");
      path.setAttribute("d", d);
      svgNode.appendChild(path);
    });
    span.appendChild(svgNode);
    return span;
  }

  var state = {
    token: null, agent: null, socket: null,
    offers: {}, contacts: {}, order: [], current: null,
    threads: {}, notes: {}, codes: [], breakReasons: [], presence: null, surge: null,
    drafts: {}, connected: null, caseData: null, caseHistory: null, kb: null,
  };
  var ERROR_SECONDS = 10;  // how long an error stays up

  function el(tag, attrs) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "cls") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child == null) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function show(node, on) { node.hidden = !on; }
  function lang() { return window.SBI18n.current(); }
  // A duration in words in the UI's language (4 hours, 28 sec), never as 0:28 / 4:00:00.
  function humanDuration(seconds) {
    var s = Math.max(0, Math.round(seconds));
    var parts = { days: Math.floor(s / 86400), hours: Math.floor((s % 86400) / 3600), minutes: Math.floor((s % 3600) / 60), seconds: s % 60 };
    if (parts.days || parts.hours) parts.seconds = 0;  // to the minute once it is hours long
    Object.keys(parts).forEach(function (k) { if (!parts[k]) delete parts[k]; });
    if (!Object.keys(parts).length) return new Intl.NumberFormat(lang(), { style: "unit", unit: "second", unitDisplay: "short" }).format(0);
    if (window.Intl && Intl.DurationFormat) return new Intl.DurationFormat(lang(), { style: "short" }).format(parts);
    return Object.keys(parts).map(function (k) {
      return new Intl.NumberFormat(lang(), { style: "unit", unit: k.replace(/s$/, ""), unitDisplay: "short" }).format(parts[k]);
    }).join(" ");
  }
  function label(prefix, code) {
    var key = prefix + code;
    var s = t(key);
    return s === key ? String(code).replace(/_/g, " ") : s;
  }
  function fmtDuration(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    return h ? h + ":" + pad(m) + ":" + pad(r) : m + ":" + pad(r);
  }
  // Dates and times in the UI's language, whatever the browser's own locale.
  function fmtTime(ms) { return ms ? new Date(ms).toLocaleString(lang()) : ""; }
  function saved() { try { return JSON.parse(sessionStorage.getItem(KEY) || "null"); } catch (e) { return null; } }
  function save() {
    sessionStorage.setItem(KEY, JSON.stringify({ token: state.token, agent: state.agent, current: state.current, drafts: state.drafts }));
  }
  var errorTimers = {};
  // An error on the page: set, and taken down again after ERROR_SECONDS.
  function error(node, message) {
    node.textContent = message || "";
    show(node, !!message);
    clearTimeout(errorTimers[node.id]);
    if (message) errorTimers[node.id] = setTimeout(function () { error(node, ""); }, ERROR_SECONDS * 1000);
  }
  // What a refused action means, in the UI's language: by what was asked and the kind of
  // refusal (the server's own text names internal ids and is for the logs).
  function problem(what, ack) {
    var kind = (ack && ack.kind) || "Internal";
    var specific = "err_" + what + "_" + kind;
    if (t(specific) !== specific) return t(specific);
    var general = "err_" + kind;
    return t(general) !== general ? t(general) : t("err_Internal");
  }

  // ---- sign-in ----------------------------------------------------------------------------

  function initialTenant() {
    var q = new URLSearchParams(location.search).get("tenant");
    if (q) $("login-tenant").value = q;
  }

  function signedIn(body) {
    state.token = body.token;
    state.agent = body.agent;
    $("login-password").value = "";
    save();
    window.SBI18n.load(state.agent.ui_language).then(start);
  }

  // "Sign in with <company>" for a tenant with an OIDC provider, and the way back from it.
  window.SBPage.companySignIn({
    t: t, page: "inbox", done: signedIn,
    fail: function (message) { error($("login-error"), message); },
  });

  $("login").addEventListener("submit", function (ev) {
    ev.preventDefault();
    error($("login-error"), "");
    fetch("api/agent/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        tenant: $("login-tenant").value.trim(),
        agent_id: $("login-agent").value.trim(),
        password: $("login-password").value,
      }),
    }).then(function (r) {
      return r.json().then(function (body) { return { status: r.status, body: body }; });
    }).then(function (res) {
      if (res.status !== 200) {
        error($("login-error"), res.status === 401 ? t("wrongLogin") : res.body.error);
        return;
      }
      signedIn(res.body);
    }).catch(function (e) { error($("login-error"), String(e)); });
  });

  $("sign-out").addEventListener("click", function () {
    var done = function () {
      sessionStorage.removeItem(KEY);
      if (state.socket) state.socket.disconnect();
      location.reload();
    };
    if (state.socket && state.socket.connected) {
      state.socket.timeout(5000).emit("presence", { presence: "offline" }, done);
    } else done();
  });

  // ---- the socket -------------------------------------------------------------------------

  function start() {
    show($("login"), false);
    show($("desk"), true);
    renderMe();
    var socket = io("/agent", { auth: { token: state.token }, transports: ["websocket"] });
    state.socket = socket;
    socket.on("connect", function () {
      state.connected = true;
      renderConn();
      error($("desk-error"), "");
      socket.emit("sign_in", {}, onDesk);
    });
    socket.on("disconnect", function () {
      state.connected = false;
      renderConn();
    });
    socket.on("connect_error", function (err) {
      error($("desk-error"), err && err.message);
      if (err && /token|expired|signature|role/i.test(err.message)) {
        sessionStorage.removeItem(KEY);
        socket.disconnect();
        show($("desk"), false);
        show($("login"), true);
        error($("login-error"), err.message);
      }
    });
    socket.on("offer", function (offer) {
      // A re-offer of a contact replaces the offer that timed out before it.
      Object.keys(state.offers).forEach(function (id) {
        if (state.offers[id].contact.contact_id === offer.contact.contact_id) delete state.offers[id];
      });
      state.offers[offer.offer_id] = offer;
      renderOffers();
    });
    socket.on("offer_gone", function (d) { delete state.offers[d.offer_id]; renderOffers(); });
    socket.on("contact", function (c) { upsertContact(c); });
    socket.on("contact_gone", function (d) { removeContact(d.contact_id); });
    socket.on("presence", function (p) { state.presence = p; renderPresence(); });
    socket.on("surge", function (s) { state.surge = s; renderSurge(); });
    // An administrator changed this agent or the tenant's wrap-up codes: shown at once.
    socket.on("profile", function (d) {
      if (d.agent) state.agent = d.agent;
      if (d.wrap_up_codes) state.codes = d.wrap_up_codes;
      save();
      renderMe();
      renderCodes();
    });
    socket.on("desk_error", function () { error($("desk-error"), t("err_session")); });
    socket.on("message", onChatMessage);
    socket.on("typing", function (d) {
      if (d.contact_id === state.current) show($("typing"), !!d.typing);
    });
    socket.on("status", function (s) {
      var c = state.contacts[s.contact_id];
      if (c && s.state === "ended") { c.ended = true; renderContacts(); if (s.contact_id === state.current) renderHeader(c); }
    });
    // A supervisor's private note to this agent about one of their chats: shown in its thread
    // (marked as a supervisor note), never sent to the customer.
    socket.on("supervisor_note", function (n) {
      var notes = state.notes[n.contact_id] = state.notes[n.contact_id] || [];
      if (notes.some(function (x) { return x.note_id === n.note_id; })) return;
      notes.push(n);
      if (n.contact_id === state.current) {
        $("thread").appendChild(noteItem(n));
        $("thread").scrollTop = $("thread").scrollHeight;
      } else if (state.contacts[n.contact_id]) {
        state.contacts[n.contact_id].unread = true;
        renderContacts();
      }
    });
    socket.on("rated", function (d) {
      var thread = state.threads[d.contact_id];
      if (thread && !thread.some(function (m) { return m.message_id === "rated:" + d.contact_id; })) {
        thread.push({ message_id: "rated:" + d.contact_id, author: "system", rated: d.score });
        if (d.contact_id === state.current) renderThread();
      }
    });
  }

  function renderMe() {
    var a = state.agent;
    $("me").textContent = a.name + " (" + a.agent_id + ")";
    var languages = Object.keys(a.languages || {}).map(function (k) { return k + ":" + a.languages[k]; });
    $("my-profile").textContent = [label("role_", a.role || "agent")].concat(languages.length ? [languages.join(", ")] : []).join(" · ");
  }

  function renderConn() {
    if (state.connected === null) return;
    $("conn").textContent = state.connected ? t("connected") : t("reconnecting");
    $("conn").className = "conn " + (state.connected ? "ok" : "bad");
  }

  function onDesk(ack) {
    if (!ack || !ack.ok) { error($("desk-error"), problem("desk", ack)); return; }
    state.codes = ack.wrap_up_codes || [];
    state.breakReasons = ack.break_reasons || [];
    state.presence = ack.presence;
    state.surge = ack.surge;
    state.offers = {};
    (ack.offers || []).forEach(function (o) { state.offers[o.offer_id] = o; });
    state.contacts = {};
    state.order = [];
    (ack.contacts || []).forEach(function (c) { state.contacts[c.contact_id] = c; state.order.push(c.contact_id); });
    renderPresence();
    renderSurge();
    renderOffers();
    renderContacts();
    renderCodes();
    var keep = state.current || (saved() || {}).current;
    if (keep && state.contacts[keep]) select(keep);
    else if (state.current && !state.contacts[state.current]) deselect();
  }

  // ---- presence and surge -----------------------------------------------------------------

  function renderPresence() {
    var sel = $("presence");
    clear(sel);
    sel.appendChild(el("option", { value: "available", text: t("available") }));
    state.breakReasons.forEach(function (r) {
      sel.appendChild(el("option", { value: "break:" + r, text: t("break") + " — " + t("br_" + r) }));
    });
    sel.appendChild(el("option", { value: "offline", text: t("offline") }));
    var p = state.presence || { presence: "offline" };
    var value = p.presence === "break" ? "break:" + p.reason : p.presence;
    if (!Array.prototype.some.call(sel.options, function (o) { return o.value === value; })) {
      // A break's reason is the tenant's own word; the router's reasons for the states it sets
      // (not responding, wrap-up) are not in the agent's language: the notice below says why.
      var reason = p.presence === "break" && p.reason ? " — " + p.reason : "";
      sel.appendChild(el("option", { value: value, text: t(p.presence) + reason }));
    }
    sel.value = value;
    sel.setAttribute("data-presence", p.presence);
    // Set by the router or a supervisor, not by the agent: say why no contacts come, and how to
    // take them again (the router's reason is not in the agent's language).
    var notice = "";
    if (p.presence === "not_responding") notice = t("notRespondingNotice");
    else if (p.presence === "offline" && p.by) notice = t("signedOutByNotice", { by: p.by_name || p.by });
    else if (p.presence === "offline" && p.reason === "signed out") notice = t("signedOutNotice");
    else if (p.presence === "break" && p.by) notice = t("breakByNotice", { by: p.by_name || p.by });
    $("presence-notice").textContent = notice;
    show($("presence-notice"), !!notice);
  }

  $("presence").addEventListener("change", function () {
    var v = $("presence").value;
    var parts = v.split(":");
    state.socket.emit("presence", { presence: parts[0], reason: parts[1] || "" }, function (ack) {
      if (!ack.ok) {
        error($("desk-error"), ack.locked ? t("breakLockedSurge") : problem("presence", ack));
        if (ack.locked) { $("surge").textContent = t("breakLockedSurge"); show($("surge"), true); }
        renderPresence();
      } else {
        error($("desk-error"), "");
        state.presence = ack.presence;
        renderPresence();
      }
    });
  });

  function renderSurge() {
    var s = state.surge || { level: 0 };
    var breaks = Array.prototype.filter.call($("presence").options, function (o) { return o.value.indexOf("break:") === 0; });
    breaks.forEach(function (o) { o.disabled = s.level > 0; });
    if (s.level > 0) {
      $("surge").textContent = t("surgeLevel", { level: s.level, queue: s.queue });
      show($("surge"), true);
    } else show($("surge"), false);
  }

  // ---- offers -----------------------------------------------------------------------------

  function renderOffers() {
    var box = $("offers");
    clear(box);
    Object.keys(state.offers).forEach(function (id) {
      var o = state.offers[id];
      if (!live(o)) { delete state.offers[id]; return; }
      var c = o.contact;
      var card = el("article", { cls: "offer", "data-testid": "offer", "data-offer-id": id, "data-channel": c.channel },
        icon(c.channel),
        el("strong", { text: t("newOffer", { channel: t("ch_" + c.channel) }) }),
        el("span", { cls: "who", text: c.customer_name || "" }),
        el("span", { cls: "muted", text: (c.language || "") + (c.skills.length ? " · " + c.skills.join(", ") : "") }),
        el("span", { cls: "preview", text: c.subject || (c.text || "").slice(0, 140) }),
        el("span", { cls: "countdown", "data-testid": "offer-countdown", "data-expires": String(o.expires_at || "") }),
        el("button", { type: "button", cls: "accept", "data-testid": "offer-accept", text: t("accept") }),
        el("button", { type: "button", cls: "decline", "data-testid": "offer-decline", text: t("decline") })
      );
      card.querySelector(".accept").addEventListener("click", function () { accept(id); });
      card.querySelector(".decline").addEventListener("click", function () { decline(id); });
      box.appendChild(card);
    });
    tick();
  }

  // An offer the router still holds for the agent: one whose accept timeout has not passed.
  function live(o) { return !o.expires_at || o.expires_at > Date.now(); }

  // The offer the A and D keys act on: the live one that expires first.
  function firstOffer() {
    var ids = Object.keys(state.offers).filter(function (id) { return live(state.offers[id]); });
    ids.sort(function (a, b) { return (state.offers[a].expires_at || Infinity) - (state.offers[b].expires_at || Infinity); });
    return ids[0];
  }

  function accept(id) {
    if (!id) return;
    state.socket.emit("accept", { offer_id: id }, function (ack) {
      if (!ack.ok) { error($("desk-error"), problem("accept", ack)); delete state.offers[id]; renderOffers(); return; }
      upsertContact(ack.contact);
      // The new contact is shown; the focus stays where it was, so the keys stay shortcuts.
      select(ack.contact.contact_id);
    });
  }

  function decline(id) {
    if (!id) return;
    state.socket.emit("decline", { offer_id: id, reason: "declined" }, function (ack) {
      if (!ack.ok) error($("desk-error"), problem("decline", ack));
      delete state.offers[id];
      renderOffers();
    });
  }

  // ---- the contact list -------------------------------------------------------------------

  function upsertContact(c) {
    if (!state.contacts[c.contact_id]) state.order.push(c.contact_id);
    state.contacts[c.contact_id] = c;
    renderContacts();
    if (c.contact_id === state.current) {
      renderHeader(c);
      if (c.reply_channel !== "chat") renderThread();  // replies and their delivery
    }
  }

  function removeContact(id) {
    delete state.contacts[id];
    state.order = state.order.filter(function (x) { return x !== id; });
    delete state.threads[id];
    delete state.notes[id];
    delete state.drafts[id];
    if (state.current === id) deselect();
    renderContacts();
  }

  // A countdown: minutes and seconds ticking under an hour, in words (23 hr 57 min) above.
  function countdown(ms) { return ms >= 3600 * 1000 ? humanDuration(ms / 1000) : fmtDuration(ms); }

  function slaText(c, now) {
    if (c.responded_at) return { text: t("answered"), cls: "ok" };
    if (!c.sla_due) return { text: "", cls: "" };
    var left = c.sla_due - now;
    return left >= 0
      ? { text: t("slaLeft", { t: countdown(left) }), cls: left < 0.2 * (c.sla_due - (c.created_at || now)) ? "warn" : "ok" }
      : { text: t("slaOver", { t: countdown(-left) }), cls: "bad" };
  }

  function renderContacts() {
    var list = $("contact-list");
    clear(list);
    show($("no-contacts"), state.order.length === 0);
    state.order.forEach(function (id) {
      var c = state.contacts[id];
      var item = el("li", {
          cls: "contact" + (id === state.current ? " current" : "") + (c.ended ? " ended" : "") + (c.unread ? " unread" : ""),
          "data-testid": "contact-item", "data-contact-id": id, "data-channel": c.channel, tabindex: "0",
        },
        icon(c.channel),
        el("span", { cls: "who", text: c.customer_name || (c.identities[0] || {}).value || id.slice(0, 8) }),
        el("span", { cls: "preview", text: c.subject || (c.text || "").slice(0, 60) }),
        el("span", { cls: "sla", "data-testid": "sla" })
      );
      item.addEventListener("click", function () { select(id); });
      list.appendChild(item);
    });
    tick();
  }

  function tick() {
    var now = Date.now();
    // An offer whose time is up is gone: the router has taken it back.
    var expired = Object.keys(state.offers).filter(function (id) { return !live(state.offers[id]); });
    if (expired.length) {
      expired.forEach(function (id) { delete state.offers[id]; });
      var box = $("offers");
      expired.forEach(function (id) {
        var card = box.querySelector("[data-offer-id='" + CSS.escape(id) + "']");
        if (card) card.remove();
      });
    }
    document.querySelectorAll("#offers .countdown").forEach(function (node) {
      var exp = Number(node.getAttribute("data-expires"));
      node.textContent = exp ? t("expiresIn", { s: Math.max(1, Math.ceil((exp - now) / 1000)) }) : "";
    });
    document.querySelectorAll("#contact-list .contact").forEach(function (node) {
      var c = state.contacts[node.getAttribute("data-contact-id")];
      if (!c) return;
      var s = c.ended ? { text: t("ended"), cls: "" } : slaText(c, now);
      var span = node.querySelector(".sla");
      span.textContent = s.text;
      span.className = "sla " + s.cls;
    });
    var cur = state.current && state.contacts[state.current];
    if (cur && cur.channel === "voice") {
      var ct = document.querySelector("#voice-details [data-k=calltime]");
      if (ct) ct.textContent = fmtDuration(now - (cur.assigned_at || now));
    }
  }
  setInterval(tick, 1000);

  function move(step) {
    if (!state.order.length) return;
    var i = state.order.indexOf(state.current);
    i = i < 0 ? 0 : (i + step + state.order.length) % state.order.length;
    select(state.order[i]);
  }

  // ---- the conversation view --------------------------------------------------------------

  function deselect() {
    state.current = null;
    state.caseData = null;
    save();
    show($("conv"), false);
    show($("pick"), true);
    show($("case-body"), false);
    show($("case-none"), true);
    renderRecordings(null);
  }

  function select(id) {
    var c = state.contacts[id];
    if (!c) return;
    // Each conversation keeps its own draft.
    if (state.current && state.current !== id) state.drafts[state.current] = $("reply-text").value;
    if (state.current !== id || !$("reply-text").value) $("reply-text").value = state.drafts[id] || "";
    state.current = id;
    c.unread = false;
    save();
    renderContacts();
    show($("pick"), false);
    show($("conv"), true);
    show($("typing"), false);
    error($("reply-error"), "");
    renderHeader(c);
    var thread = $("thread");
    clear(thread);
    if (c.channel === "chat" && c.reply_channel === "chat") {
      state.socket.emit("join", { contact_id: id }, function (ack) {
        if (!ack.ok) { error($("reply-error"), problem("open", ack)); return; }
        state.threads[id] = ack.messages.slice();
        if (ack.rated) state.threads[id].push({ message_id: "rated:" + id, author: "system", rated: ack.rating || 0 });
        if (ack.ended) c.ended = true;
        if (state.current === id) { renderHeader(c); renderThread(); }
      });
    } else {
      state.socket.emit("open", { contact_id: id }, function (ack) {
        if (!ack.ok) { error($("reply-error"), problem("open", ack)); return; }
        state.contacts[id] = ack.contact;
        state.threads[id] = ack.messages;
        if (state.current === id) { renderHeader(ack.contact); renderThread(); }
      });
    }
    state.caseData = null;
    loadCase(id);
  }

  function renderHeader(c) {
    clear($("conv-icon"));
    $("conv-icon").appendChild(icon(c.channel));
    $("conv-name").textContent = c.customer_name || (c.identities[0] || {}).value || "";
    $("conv-meta").textContent = [t("ch_" + c.channel), languageName(c.language), c.queue, c.subject].filter(Boolean).join(" · ");
    $("conv-state").textContent = c.ended ? t("ended") : t("active");
    $("conv-state").setAttribute("data-state", c.ended ? "ended" : "active");
    var voice = c.channel === "voice";
    show($("voice-panel"), voice);
    if (voice) {
      var dl = $("voice-details");
      clear(dl);
      var phone = (c.identities.filter(function (i) { return i.kind === "phone"; })[0] || {}).value || "";
      [[t("phone"), phone], [t("queue"), c.queue], [t("language"), c.language], [t("waitedSince"), fmtTime(c.created_at)]]
        .forEach(function (row) { dl.appendChild(el("dt", { text: row[0] })); dl.appendChild(el("dd", { text: row[1] || "" })); });
      dl.appendChild(el("dt", { text: t("callTime") }));
      dl.appendChild(el("dd", { "data-k": "calltime" }));
      $("hold").textContent = c.held ? t("unhold") : t("hold");
    }
    var composerOn = !voice;
    show($("reply-text"), composerOn);
    show($("reply-send"), composerOn);
    // An ended chat is read-only until wrap-up; its unsent draft stays readable.
    var closed = !!c.ended && c.reply_channel === "chat";
    $("reply-text").readOnly = closed;
    $("reply-send").disabled = closed;
    var to = c.reply_channel === "email"
      ? (c.identities.filter(function (i) { return i.kind === "email"; })[0] || {}).value
      : c.reply_channel === "fax" ? (c.identities.filter(function (i) { return i.kind === "phone"; })[0] || {}).value : "";
    $("reply-via").textContent = voice ? t("voiceNoReply")
      : c.reply_channel === "chat" ? t("replyViaChat")
      : t("replyVia", { channel: t("ch_" + c.reply_channel), to: to || "?" });
    $("composer").setAttribute("data-channel", c.reply_channel);
  }

  // Email text: the new part shown, quoted history folded away.
  function emailBody(text) {
    var lines = (text || "").split(/\r?\n/);
    var cut = lines.length;
    for (var i = 0; i < lines.length; i++) {
      var line = lines[i];
      if (/^\s*>/.test(line) || /^(On .+ wrote:|-----\s*Original Message\s*-----|.+\s작성:|.+写道[:：]?)\s*$/.test(line)) { cut = i; break; }
    }
    var box = el("div", { cls: "email-body" }, el("pre", { text: lines.slice(0, cut).join("\n").trim() }));
    if (cut < lines.length) {
      box.appendChild(el("details", { cls: "quoted", "data-testid": "quoted" },
        el("summary", { text: t("quoted") }), el("pre", { text: lines.slice(cut).join("\n") })));
    }
    return box;
  }

  function attachmentsOf(c) {
    var box = el("div", { cls: "attachments" });
    (c.attachments || []).forEach(function (a) {
      var url = "api/agent/attachment?contact_id=" + encodeURIComponent(c.contact_id) + "&index=" + a.index;
      if (/^image\/(png|jpeg|gif|webp)$/.test(a.content_type)) {
        var img = el("img", { cls: "page", alt: t("faxPage", { n: a.index + 1 }), "data-testid": "fax-page" });
        box.appendChild(el("figure", {}, img, el("figcaption", { text: t("faxPage", { n: a.index + 1 }) + " · " + a.filename })));
        fetch(url, { headers: { authorization: "Bearer " + state.token } })
          .then(function (r) { return r.ok ? r.blob() : null; })
          .then(function (b) { if (b) img.src = URL.createObjectURL(b); });
      } else {
        var btn = el("button", { type: "button", cls: "download", text: t("download") + ": " + a.filename });
        btn.addEventListener("click", function () {
          fetch(url, { headers: { authorization: "Bearer " + state.token } })
            .then(function (r) { return r.blob(); })
            .then(function (b) {
              var link = el("a", { href: URL.createObjectURL(b), download: a.filename });
              link.click();
            });
        });
        box.appendChild(btn);
      }
    });
    return box;
  }

  function renderThread() {
    var id = state.current;
    var c = state.contacts[id];
    var thread = $("thread");
    clear(thread);
    if (!c) return;
    if (c.reply_channel !== "chat") {
      var first = el("li", { cls: "msg customer", "data-testid": "msg", "data-author": "customer" },
        el("div", { cls: "meta", text: [c.customer_name, (c.identities[0] || {}).value, fmtTime(c.created_at)].filter(Boolean).join(" · ") }));
      if (c.subject) first.appendChild(el("div", { cls: "subject", text: t("subject") + ": " + c.subject }));
      first.appendChild(c.channel === "email" ? emailBody(c.text) : el("pre", { text: c.text || "" }));
      if (c.attachments && c.attachments.length) first.appendChild(attachmentsOf(c));
      thread.appendChild(first);
      (state.threads[id] || []).forEach(function (m) {
        if (m.message_id && m.message_id.indexOf(":initial") > 0) return;
        thread.appendChild(el("li", { cls: "msg " + m.author, "data-testid": "msg", "data-author": m.author },
          el("div", { cls: "meta", text: fmtTime(m.sent_at) }),
          c.channel === "email" && m.author === "customer" ? emailBody(m.text) : el("pre", { text: m.text })));
      });
      (c.replies || []).forEach(function (r) { thread.appendChild(replyItem(c, r)); });
    } else {
      var items = (state.threads[id] || []).map(function (m) {
        return { at: m.sent_at ? Date.parse(m.sent_at) : 0, node: chatItem(m) };
      });
      (state.notes[id] || []).forEach(function (n) { items.push({ at: n.at, node: noteItem(n) }); });
      // In the order they happened (a sort that keeps equal times in place).
      items.map(function (x, i) { x.i = i; return x; })
        .sort(function (a, b) { return (a.at || 0) - (b.at || 0) || a.i - b.i; })
        .forEach(function (x) { thread.appendChild(x.node); });
    }
    thread.scrollTop = thread.scrollHeight;
  }

  // An email or fax reply with what became of it (the channel's DeliveryStatus); a failed one
  // can be sent again.
  function replyItem(c, r) {
    var delivery = r.delivery || "";
    var item = el("li", { cls: "msg agent", "data-testid": "msg", "data-author": "agent", "data-delivery": delivery, "data-reply-id": r.id || "" },
      el("div", { cls: "meta", text: t("you") + " · " + fmtTime(r.sent_at) + (r.to ? " · " + t("sentTo", { to: r.to }) : "") }),
      el("pre", { text: r.text }));
    if (delivery) {
      var status = el("div", { cls: "delivery " + delivery, "data-testid": "delivery", text: t("dl_" + delivery) });
      if (delivery === "failed" && r.delivery_detail) status.setAttribute("title", r.delivery_detail);
      if (r.retried) status.appendChild(document.createTextNode(" · " + t("dl_retried")));
      else if (delivery === "failed") {
        var retry = el("button", { type: "button", cls: "retry", "data-testid": "retry", text: t("retry") });
        retry.addEventListener("click", function () {
          retry.disabled = true;
          state.socket.emit("reply", { contact_id: c.contact_id, retry_of: r.id }, function (ack) {
            retry.disabled = false;
            if (!ack.ok) { error($("reply-error"), problem("reply", ack)); return; }
            r.retried = ack.reply.id;
            addReply(c.contact_id, ack.reply);
          });
        });
        status.appendChild(retry);
      }
      item.appendChild(status);
    }
    return item;
  }

  function addReply(id, reply) {
    var c = state.contacts[id];
    if (!c || c.reply_channel === "chat") return;
    c.replies = c.replies || [];
    if (!c.replies.some(function (r) { return r.id === reply.id; })) c.replies.push(reply);
    if (state.current === id) renderThread();
  }

  function stars(score) {
    var n = Math.max(0, Math.min(5, Math.round(score)));
    return "★★★★★".slice(0, n) + "☆☆☆☆☆".slice(0, 5 - n);
  }

  function chatItem(m) {
    var text = m.text || "";
    if (m.rated !== undefined) text = m.rated ? t("ratedScore", { stars: stars(m.rated), score: m.rated }) : t("ratedNoScore");
    var item = el("li", { cls: "msg " + m.author, "data-testid": "msg", "data-author": m.author, "data-message-id": m.message_id || "" },
      el("div", { cls: "meta", text: (m.author === "agent" ? (m.agent_name || t("you")) : m.author === "customer" ? t("customer") : "") + (m.sent_at ? " · " + new Date(m.sent_at).toLocaleTimeString(lang()) : "") }),
      el("div", { cls: "text", "data-testid": "msg-text", text: text }));
    if (m.attachment) {
      item.appendChild(el("div", { cls: "muted", text: "📎 " + (m.attachment.filename || "") }));
    }
    return item;
  }

  function noteItem(n) {
    return el("li", { cls: "msg supervisor-note", "data-testid": "supervisor-note", "data-author": "supervisor", "data-note-id": n.note_id },
      el("div", { cls: "meta", text: t("supervisorNote") + " · " + (n.supervisor_name || n.supervisor_id) + (n.at ? " · " + new Date(n.at).toLocaleTimeString(lang()) : "") }),
      el("div", { cls: "text", text: n.text }),
      el("div", { cls: "note-private", text: t("supervisorNotePrivate") }));
  }

  function onChatMessage(m) {
    var id = m.contact_id;
    var thread = state.threads[id];
    if (thread) {
      if (thread.some(function (x) { return x.message_id === m.message_id; })) return;
      thread.push(m);
    }
    if (id === state.current) {
      if (thread) $("thread").appendChild(chatItem(m));
      $("thread").scrollTop = $("thread").scrollHeight;
      show($("typing"), false);
      if (m.author === "customer") state.socket.emit("read", { contact_id: id, message_id: m.message_id });
    } else if (state.contacts[id] && m.author === "customer") {
      state.contacts[id].unread = true;
      renderContacts();
    }
  }

  // ---- the composer -----------------------------------------------------------------------

  var typingTimer = null;
  $("reply-text").addEventListener("input", function () {
    if (state.current) { state.drafts[state.current] = $("reply-text").value; save(); }
    var c = state.contacts[state.current];
    if (!c || c.reply_channel !== "chat") return;
    if (!typingTimer) state.socket.emit("typing", { contact_id: c.contact_id, typing: true });
    clearTimeout(typingTimer);
    typingTimer = setTimeout(function () {
      typingTimer = null;
      state.socket.emit("typing", { contact_id: c.contact_id, typing: false });
    }, 2000);
  });

  function send() {
    var id = state.current;
    var text = $("reply-text").value;
    var c = state.contacts[id];
    if (!id || !text.trim() || !c || (c.ended && c.reply_channel === "chat")) return;
    $("reply-send").disabled = true;
    state.socket.emit("reply", { contact_id: id, text: text }, function (ack) {
      var shown = state.contacts[state.current];
      $("reply-send").disabled = !!(shown && shown.ended && shown.reply_channel === "chat");
      if (!ack.ok) { error($("reply-error"), problem("reply", ack)); return; }
      error($("reply-error"), "");
      // The draft sent is gone; another conversation's draft stays.
      if (state.drafts[id] === text || state.current === id) delete state.drafts[id];
      if (state.current === id && $("reply-text").value === text) $("reply-text").value = "";
      save();
      addReply(id, ack.reply);
      if (state.current === id) loadCase(id);  // the first response met
    });
  }

  $("composer").addEventListener("submit", function (ev) { ev.preventDefault(); send(); });
  $("reply-text").addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); send(); }
  });

  function renderCodes() {
    var sel = $("wrapup-code");
    var chosen = sel.value;
    clear(sel);
    state.codes.forEach(function (code) { sel.appendChild(el("option", { value: code, text: label("wu_", code) })); });
    if (chosen && state.codes.indexOf(chosen) >= 0) sel.value = chosen;
  }

  $("wrapup").addEventListener("click", function () {
    var id = state.current;
    if (!id) return;
    state.socket.emit("wrap_up", { contact_id: id, code: $("wrapup-code").value }, function (ack) {
      if (!ack.ok) { error($("reply-error"), problem("wrap_up", ack)); return; }
      removeContact(id);
    });
  });

  $("hold").addEventListener("click", function () {
    var c = state.contacts[state.current];
    if (!c) return;
    state.socket.emit("hold", { contact_id: c.contact_id, held: !c.held }, function (ack) {
      if (!ack.ok) error($("reply-error"), problem("hold", ack));
      else upsertContact(ack.contact);
    });
  });

  // ---- the case side panel ----------------------------------------------------------------

  var caseId = null;

  // The case panel; a contact the case service has not recorded yet (its consumer runs a little
  // behind) is asked about again, with growing pauses, while it is the one shown.
  var caseLoads = 0;
  function loadCase(id, attempt) {
    attempt = attempt || 0;
    if (!attempt) error($("case-error"), "");
    var mine = ++caseLoads;  // an answer overtaken by a later request is stale
    state.socket.emit("case", { contact_id: id }, function (ack) {
      if (state.current !== id || mine !== caseLoads) return;
      if (ack.ok && !ack.case && attempt < 20) {
        setTimeout(function () { if (state.current === id) loadCase(id, attempt + 1); }, 500 * Math.min(attempt + 1, 6));
      }
      if (!ack.ok) { error($("case-error"), problem("case", ack)); show($("case-body"), false); show($("case-none"), true); return; }
      state.caseData = ack.case;
      state.caseHistory = ack.history;
      renderCase(ack.case, ack.history);
    });
  }

  function renderCase(c, history) {
    show($("case-body"), !!c);
    show($("case-none"), !c);
    caseId = c ? c.case_id : null;
    if (!c) { renderRecordings(null); return; }
    $("case-ref").textContent = c.reference || c.case_id.slice(0, 8);
    $("case-subject").textContent = c.subject || "";
    $("case-status").value = c.status;
    $("case-to-kb").setAttribute("href", "kb#case=" + encodeURIComponent(c.case_id));
    showCaseToKb();
    var sla = $("case-sla");
    clear(sla);
    (c.sla || []).forEach(function (s) {
      sla.appendChild(el("li", { cls: s.breached ? "bad" : "ok", "data-metric": s.metric, "data-state": s.state,
        text: t("slaLine", { metric: label("slaMetric_", s.metric), elapsed: humanDuration(s.elapsed), target: humanDuration(s.target), state: label("slaState_", s.state) }) }));
    });
    var notes = $("notes");
    clear(notes);
    (c.notes || []).forEach(function (n) {
      notes.appendChild(el("li", {}, el("div", { cls: "meta", text: n.author + " · " + fmtTime(n.at) }), el("div", { text: n.text })));
    });
    var list = $("history");
    clear(list);
    (history || []).forEach(function (h) {
      var channels = el("span", { cls: "channels" });
      h.contacts.forEach(function (k) { channels.appendChild(icon(k.channel)); });
      list.appendChild(el("li", { "data-case-id": h.case_id },
        channels,
        el("strong", { text: " " + (h.reference || "") + " " }),
        el("span", { text: h.subject || "" }),
        el("span", { cls: "muted", text: " · " + t("st_" + h.status) + " · " + fmtTime(h.created_at) })));
    });
    renderRecordings(c);
  }

  // ---- call recordings ------------------------------------------------------------------------

  // Contact id -> its player, kept while its case is shown: drawing the panel again (a new UI
  // language, a reloaded case) does not stop a recording playing.
  var players = {};

  function renderRecordings(c) {
    var box = $("recordings");
    var wanted = {};
    (c && c.contacts || []).forEach(function (k) {
      if ((k.messages || []).some(function (m) { return m.recording; })) wanted[k.contact_id] = k;
    });
    Object.keys(players).forEach(function (id) {
      if (!wanted[id]) { players[id].stop(); delete players[id]; }
    });
    clear(box);
    Object.keys(wanted).forEach(function (id) {
      var p = players[id] || (players[id] = recordingPlayer(id));
      p.relabel(wanted[id]);
      box.appendChild(p.node);
    });
  }

  function recordingPlayer(contactId) {
    return window.SBRecording.player(contactId, { token: function () { return state.token; }, when: fmtTime });
  }

  // A resolved case may become a knowledge-base draft (its subject and the agents' replies).
  function showCaseToKb() {
    var resolved = ["resolved", "closed", "pending_review", "pending_confirmation"];
    show($("case-to-kb"), resolved.indexOf($("case-status").value) >= 0);
  }

  $("case-status").addEventListener("change", function () {
    showCaseToKb();
    if (!caseId) return;
    var wanted = $("case-status").value;
    state.socket.emit("case_status", { case_id: caseId, status: wanted }, function (ack) {
      if (!ack.ok) { error($("case-error"), problem("case_status", ack)); if (state.current) loadCase(state.current); }
      else {
        error($("case-error"), "");
        var now = (ack.case && ack.case.status) || wanted;  // a policy may hold it for review
        if (state.caseData && state.caseData.case_id === caseId) state.caseData.status = now;
        $("case-status").value = now;
        showCaseToKb();
        if (state.current) loadCase(state.current);  // answers asked before the change are stale
      }
    });
  });

  $("note-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = $("note-text").value;
    if (!caseId || !text.trim()) return;
    state.socket.emit("note", { case_id: caseId, text: text }, function (ack) {
      if (!ack.ok) { error($("case-error"), problem("note", ack)); return; }
      $("note-text").value = "";
      $("notes").appendChild(el("li", {}, el("div", { cls: "meta", text: ack.note.author + " · " + fmtTime(ack.note.at) }), el("div", { text: ack.note.text })));
    });
  });

  function languageName(code) {
    if (!code) return "";
    try { return new Intl.DisplayNames([lang()], { type: "language" }).of(code) || code; } catch (e) { return code; }
  }

  function renderKbLanguages() {
    var sel = $("kb-language");
    var chosen = sel.value;
    clear(sel);
    sel.appendChild(el("option", { value: "", text: t("kbAllLanguages") }));
    ["ko", "zh", "en", "ja"].forEach(function (code) { sel.appendChild(el("option", { value: code, text: languageName(code) })); });
    sel.value = chosen;
  }

  // Knowledge search: every language unless the agent picks one; the contact's language first.
  function searchKb() {
    var q = $("kb-query").value.trim();
    if (!q) return;
    var c = state.contacts[state.current];
    state.socket.emit("kb_search", { query: q, language: $("kb-language").value, prefer: c ? c.language : "" }, function (ack) {
      state.kb = ack;
      renderKb();
    });
  }

  function renderKb() {
    var ack = state.kb;
    var list = $("kb-results");
    clear(list);
    if (!ack) return;
    if (!ack.ok) { list.appendChild(el("li", { cls: "error", text: problem("kb", ack) })); return; }
    if (!ack.available) { list.appendChild(el("li", { cls: "muted", text: t("kbUnavailable") })); return; }
    if (!ack.hits.length) { list.appendChild(el("li", { cls: "muted", text: t("kbNone") })); return; }
    ack.hits.forEach(function (h) {
      var btn = el("button", { type: "button", cls: "insert", "data-testid": "kb-insert", text: t("insert") });
      btn.addEventListener("click", function () {
        var box = $("reply-text");
        box.value = (box.value ? box.value.replace(/\s*$/, "\n\n") : "") + h.body;
        if (state.current) { state.drafts[state.current] = box.value; save(); }
        box.focus();
      });
      list.appendChild(el("li", { "data-testid": "kb-hit", "data-language": h.language || "" },
        el("strong", { text: h.title }), " ",
        el("span", { cls: "lang-badge", text: languageName(h.language) }),
        el("p", { cls: "muted", text: h.snippet || h.body.slice(0, 160) }), btn));
    });
  }

  $("kb-form").addEventListener("submit", function (ev) { ev.preventDefault(); searchKb(); });
  $("kb-language").addEventListener("change", searchKb);

  // ---- keyboard shortcuts -----------------------------------------------------------------

  function typingInField(ev) {
    var tag = (ev.target && ev.target.tagName) || "";
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT";
  }

  document.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape" && typingInField(ev)) { ev.target.blur(); return; }
    if (typingInField(ev) || ev.ctrlKey || ev.metaKey || ev.altKey || $("desk").hidden) return;
    var k = ev.key;
    if (k === "a" || k === "A") { ev.preventDefault(); accept(firstOffer()); }
    else if (k === "d" || k === "D") { ev.preventDefault(); decline(firstOffer()); }
    else if (k === "j" || k === "J") { ev.preventDefault(); move(1); }
    else if (k === "k" || k === "K") { ev.preventDefault(); move(-1); }
    else if (k === "r" || k === "R") { ev.preventDefault(); $("reply-text").focus(); }
    else if (k === "/") { ev.preventDefault(); $("kb-query").focus(); }
    else if (k === "?") { ev.preventDefault(); $("help").showModal(); }
  });

  $("help-toggle").addEventListener("click", function () { $("help").showModal(); });
  $("help-close").addEventListener("click", function () { $("help").close(); });
  // A new UI language: everything on the page is drawn again in it.
  document.addEventListener("sb-lang", function () {
    renderKbLanguages();
    if (!state.socket) return;
    renderConn(); renderPresence(); renderSurge(); renderOffers(); renderContacts(); renderCodes(); renderKb();
    ["desk-error", "reply-error", "case-error"].forEach(function (id) { error($(id), ""); });
    var cur = state.current && state.contacts[state.current];
    if (cur) { renderHeader(cur); renderThread(); if (state.caseData) renderCase(state.caseData, state.caseHistory); }
  });

  // ---- start --------------------------------------------------------------------------------

  initialTenant();
  var prior = saved();
  if (prior && prior.token) {
    state.token = prior.token;
    state.agent = prior.agent;
    state.current = prior.current || null;
    state.drafts = prior.drafts || {};
    window.SBI18n.load().then(start);
  } else {
    window.SBI18n.load();
  }
})();
