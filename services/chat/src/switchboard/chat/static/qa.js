/* Switchboard QA screen. Evaluators (qa, supervisor) sample handled contacts (random and
   targeted), review one's transcript (and a call's recording, in the shared player of
   recording.js) beside the scoring form and submit an evaluation, and decide
   disputes; the evaluated agent sees its evaluations and disputes one with a reason; leads read
   the scorecard per agent and per team, with the fatal-error rate per day drawn as inline SVG.
   Every call is POST api/qa/<action> with the signed-in user's token (the case service decides
   what each role may do). All data is rendered with textContent / attributes only. */
(function () {
  "use strict";
  var t = window.SBI18n.t;
  var $ = function (id) { return document.getElementById(id); };
  var KEY = "sb-qa";
  var DAY = 86400000;
  var EVALUATORS = ["qa", "supervisor"];
  var LEADS = ["qa", "supervisor", "team_lead"];
  var state = { token: null, agent: null, view: null, forms: [], review: null, card: null };

  var el = window.SBPage.el;
  var clear = window.SBPage.clear;
  var svg = window.SBPage.svg;
  function pct(x) { return (Math.round((x || 0) * 1000) / 10) + "%"; }
  function score(x) { return String(Math.round((x || 0) * 10) / 10); }
  function when(ms) {
    if (!ms) return "";
    return new Date(ms).toLocaleString(window.SBI18n.current(), { dateStyle: "short", timeStyle: "short" });
  }
  function error(msg) { $("qa-error").textContent = msg || ""; $("qa-error").hidden = !msg; }
  function role() { return state.agent ? state.agent.role : ""; }
  function isEvaluator() { return EVALUATORS.indexOf(role()) >= 0; }
  function dateInput(id, offsetDays) {
    var d = new Date(Date.now() + offsetDays * DAY);
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    $(id).value = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate());
  }
  // A local date's start, and the end of the "to" date (its next midnight), in milliseconds.
  function dayStart(id) { var p = $(id).value.split("-"); return new Date(+p[0], +p[1] - 1, +p[2]).getTime(); }
  function dayEnd(id) { var p = $(id).value.split("-"); return new Date(+p[0], +p[1] - 1, +p[2] + 1).getTime(); }

  var api = window.SBPage.api("api/qa/", KEY, function () { return state.token; });
  // Each view shows the answer to its latest request only: an earlier request answered late (the
  // list loaded on sign-in, then again with the evaluator's filter) must not replace it.
  var asked = {};
  function latest(view, request) {
    var n = (asked[view] = (asked[view] || 0) + 1);
    var superseded = function () { return asked[view] !== n; };
    return request.then(function (res) {
      return superseded() ? new Promise(function () {}) : res;  // superseded: never settles
    }, function (err) {
      if (superseded()) return new Promise(function () {});
      throw err;
    });
  }
  function failed(err) { error(err && err.message ? err.message : String(err)); }

  // ---- sign-in ----------------------------------------------------------------------------------

  window.SBPage.signIn({ key: KEY, t: t, done: function (token, agent) {
    state.token = token; state.agent = agent;
    window.SBI18n.load(state.agent.ui_language).then(start);
  } });
  $("sign-out").addEventListener("click", function () {
    sessionStorage.removeItem(KEY); sessionStorage.removeItem("sb-inbox"); location.reload();
  });

  function start() {
    $("login").hidden = true;
    $("app").hidden = false;
    $("me").textContent = state.agent.name + " · " + t("role_" + role());
    document.querySelectorAll("#tabs button").forEach(function (b) {
      var r = b.getAttribute("data-role");
      // "My evaluations" is for those whose contacts are evaluated, not for the evaluators.
      b.hidden = !(r === "evaluator" ? isEvaluator() : r === "lead" ? LEADS.indexOf(role()) >= 0 : !isEvaluator());
      b.addEventListener("click", function () { show(b.getAttribute("data-view")); });
    });
    dateInput("s-from", -7); dateInput("s-to", 0);
    dateInput("c-from", -30); dateInput("c-to", 0);
    show(isEvaluator() ? "samples" : LEADS.indexOf(role()) >= 0 ? "scorecard" : "mine");
  }

  function show(view) {
    state.view = view;
    error("");
    if (view !== "review") showRecording(null);
    document.querySelectorAll(".view").forEach(function (v) { v.hidden = v.id !== "view-" + view; });
    document.querySelectorAll("#tabs button").forEach(function (b) {
      b.classList.toggle("current", b.getAttribute("data-view") === view);
    });
    if (view === "samples") loadSamples();
    else if (view === "disputes") loadDisputes();
    else if (view === "mine") loadMine();
    else if (view === "scorecard") loadCard();
    else if (view === "forms") loadForms();
  }

  function statusTag(e) {
    return el("span", { cls: "tag s-" + e.status, "data-testid": "eval-status", "data-status": e.status, text: t("qs_" + e.status) });
  }
  function scoreText(e) {
    return score(e.score) + (e.fatal_errors ? " · " + t("qaFatalCount", { n: e.fatal_errors }) : "");
  }

  // ---- samples ----------------------------------------------------------------------------------

  $("sample-filter").addEventListener("submit", function (ev) { ev.preventDefault(); loadSamples(); });

  function loadSamples() {
    var targets = Array.prototype.map.call(document.querySelectorAll("input[name=target]:checked"), function (c) { return c.value; });
    var rate = Math.max(0, Math.min(100, Number($("s-rate").value) || 0)) / 100;
    latest("samples", api("samples", {
      from: dayStart("s-from"), to: dayEnd("s-to"), agent_id: $("s-agent").value.trim(),
      channel: $("s-channel").value, targets: targets, rate: rate,
    })).then(function (res) {
      var body = $("samples");
      clear(body);
      res.samples.forEach(function (s) {
        var why = el("td", {});
        s.reasons.forEach(function (r) { why.appendChild(el("span", { cls: "tag r-" + r, "data-reason": r, text: t("r_" + r) })); });
        var review = el("button", { type: "button", "data-testid": "review", text: t(s.evaluation ? "qaView" : "qaReview") });
        review.addEventListener("click", function () { openReview(s.contact_id, s.evaluation, s.evaluation ? "view" : "score"); });
        body.appendChild(el("tr", { "data-testid": "sample", "data-contact": s.contact_id },
          el("td", { text: s.contact_id }), el("td", { text: s.agent_id }),
          el("td", { text: t("ch_" + s.channel) }), el("td", { text: when(s.ended_at) }), why,
          el("td", {}, s.evaluation ? statusTag(s.evaluation) : null, document.createTextNode(s.evaluation ? " " + scoreText(s.evaluation) : "")),
          el("td", {}, review)));
      });
      $("samples-empty").hidden = res.samples.length > 0;
    }).catch(failed);
  }

  // ---- review: the transcript beside the form ---------------------------------------------------

  function loadFormList() {
    return api("forms").then(function (res) { state.forms = res.forms; return res.forms; });
  }

  // mode: score (a new evaluation), view, dispute (the agent's own), decide (a second evaluator).
  function openReview(contactId, evaluation, mode) {
    state.review = { contact_id: contactId, evaluation: evaluation, mode: mode, form: null };
    show("review");
    $("review-result").textContent = "";
    $("comment").value = evaluation ? evaluation.comment : "";
    $("comment").readOnly = mode !== "score";
    $("dispute-reason").value = ""; $("decision-note").value = "";
    $("score-actions").hidden = mode !== "score";
    $("dispute-actions").hidden = mode !== "dispute";
    $("decide-actions").hidden = mode !== "decide";
    $("form-choice").hidden = mode !== "score";
    disputeInfo(evaluation);
    clear($("transcript")); clear($("form-items"));
    showRecording(null);
    latest("transcript", api("contact", { contact_id: contactId })).then(renderTranscript).catch(failed);
    var formReady = evaluation
      ? api("form", { form_id: evaluation.form_id, version: evaluation.form_version })
      : loadFormList().then(function (forms) {
        var sel = $("form-select");
        clear(sel);
        forms.forEach(function (f) { sel.appendChild(el("option", { value: f.form_id, text: (f.title || f.form_id) + " (v" + f.version + ")" })); });
        return forms[0];
      });
    latest("review-form", formReady).then(function (form) { renderForm(form, evaluation ? evaluation.items : null); }).catch(failed);
  }

  $("form-select").addEventListener("change", function () {
    var f = state.forms.filter(function (x) { return x.form_id === $("form-select").value; })[0];
    if (f) renderForm(f, null);
  });

  // A call's recording, in the shared player (recording.js) above its transcript, beside the
  // form: the evaluator plays and seeks while scoring. Opening the player is an audited playback.
  var player = null;
  function showRecording(c) {
    var box = $("qa-recording");
    if (player && (!c || player.contactId !== c.contact_id)) { player.stop(); player = null; }
    clear(box);
    var recorded = c && c.messages.some(function (m) { return m.recording; });
    box.hidden = !recorded;
    if (!recorded) return;
    if (!player) {
      player = window.SBRecording.player(c.contact_id, { token: function () { return state.token; }, when: when });
      player.contactId = c.contact_id;
    }
    player.relabel(null);
    box.appendChild(player.node);
  }

  function renderTranscript(res) {
    var c = res.contact;
    showRecording(c);
    $("review-meta").textContent = [t("ch_" + c.channel), c.agent_id, c.queue, when(c.ended_at),
      res.case.reference, res.case.customer].filter(Boolean).join(" · ");
    var list = $("transcript");
    clear(list);
    if (c.subject) list.appendChild(el("li", { cls: "msg system" }, el("div", { cls: "subject", text: c.subject })));
    c.messages.forEach(function (m) {
      var who = m.author === "agent" ? (m.agent_id || t("qaAgent")) : m.author === "customer" ? t("qaCustomer") : t("qaSystem");
      list.appendChild(el("li", { cls: "msg " + m.author, "data-testid": "transcript-msg", "data-author": m.author },
        el("div", { cls: "meta", text: who + " · " + when(m.sent_at) }),
        el("pre", { cls: "text", text: m.recording ? t("recording") : m.text }),
        m.attachments.length ? el("div", { cls: "meta", text: m.attachments.map(function (a) { return a.filename; }).join(", ") }) : null));
    });
    if (!c.messages.length) list.appendChild(el("li", { cls: "msg system", text: t("qaNoMessages") }));
  }

  function renderForm(form, answers) {
    state.review.form = form;
    $("form-version").textContent = (form.title || form.form_id) + " v" + form.version;
    var box = $("form-items");
    clear(box);
    var editable = state.review.mode === "score" || state.review.mode === "decide";
    form.items.forEach(function (item) {
      var passed = answers && Object.prototype.hasOwnProperty.call(answers, item.item_id) ? answers[item.item_id] : true;
      var name = "item-" + item.item_id;
      var li = el("li", { cls: (item.fatal ? "fatal" : "") + (passed ? "" : " failed"), "data-testid": "form-item", "data-item": item.item_id, "data-fatal": String(item.fatal) });
      var pass = el("input", { type: "radio", name: name, value: "pass" });
      var fail = el("input", { type: "radio", name: name, value: "fail" });
      pass.checked = passed; fail.checked = !passed;
      pass.disabled = fail.disabled = !editable;
      [pass, fail].forEach(function (r) { r.addEventListener("change", function () { li.classList.toggle("failed", fail.checked); }); });
      li.appendChild(el("div", {},
        el("span", { cls: "tag" + (item.fatal ? " fatal" : ""), text: item.fatal ? t("qaFatalItem") : t("qaNonFatalItem", { w: item.weight }) }),
        document.createTextNode(" " + (item.text || item.item_id))));
      li.appendChild(el("div", { cls: "choice" },
        el("label", {}, pass, document.createTextNode(" " + t("qaPass"))),
        el("label", {}, fail, document.createTextNode(" " + t("qaFail")))));
      box.appendChild(li);
    });
  }

  function answers() {
    var out = {};
    state.review.form.items.forEach(function (item) {
      var fail = document.querySelector("input[name='item-" + item.item_id + "'][value=fail]");
      out[item.item_id] = !(fail && fail.checked);
    });
    return out;
  }

  // Who scored it, the agent's dispute and the decision, as far as they go.
  function disputeInfo(e) {
    var info = $("dispute-info");
    info.hidden = !e;
    if (!e) { info.textContent = ""; return; }
    var lines = [t("qaScoredBy", { who: e.evaluator, form: e.form_id, version: e.form_version })];
    if (e.dispute_reason) lines.push(t("qaDisputedBy", { agent: e.agent_id }) + ": " + e.dispute_reason);
    if (e.decided_by) {
      lines.push(t("qaDecidedBy", { who: e.decided_by }) + " — " + t("qs_" + e.status) + (e.decision_note ? ": " + e.decision_note : ""));
      if (e.status === "changed") lines.push(t("qaOriginal", { score: score(e.original_score), fatal: e.original_fatal_errors }));
    }
    info.textContent = lines.join("\n");
  }

  function done(e) {
    state.review.evaluation = e;
    disputeInfo(e);
    $("review-result").textContent = t("qaResult", { score: score(e.score), fatal: e.fatal_errors, nonfatal: e.non_fatal_errors }) + " — " + t("qs_" + e.status);
    $("score-actions").hidden = $("dispute-actions").hidden = $("decide-actions").hidden = true;
  }

  $("submit-score").addEventListener("click", function () {
    var r = state.review;
    error("");
    if (!r || !r.form) return;
    api("score", { contact_id: r.contact_id, form_id: r.form.form_id, form_version: r.form.version, items: answers(), comment: $("comment").value })
      .then(done).catch(failed);
  });
  $("dispute-submit").addEventListener("click", function () {
    var reason = $("dispute-reason").value.trim();
    if (!reason) { error(t("qaReasonNeeded")); return; }
    api("dispute", { evaluation_id: state.review.evaluation.evaluation_id, reason: reason }).then(done).catch(failed);
  });
  $("uphold").addEventListener("click", function () {
    api("decide", { evaluation_id: state.review.evaluation.evaluation_id, uphold: true, note: $("decision-note").value })
      .then(done).catch(failed);
  });
  $("change-score").addEventListener("click", function () {
    api("decide", { evaluation_id: state.review.evaluation.evaluation_id, uphold: false, items: answers(), note: $("decision-note").value })
      .then(done).catch(failed);
  });
  $("back").addEventListener("click", function () {
    showRecording(null);
    var mode = state.review ? state.review.mode : "";
    show(mode === "dispute" || (mode === "view" && !isEvaluator()) ? "mine" : mode === "decide" ? "disputes" : "samples");
  });

  // ---- disputes and the agent's own evaluations -------------------------------------------------

  function loadDisputes() {
    latest("disputes", api("evaluations", { status: "disputed" })).then(function (res) {
      var body = $("disputes");
      clear(body);
      res.evaluations.forEach(function (e) {
        var open = el("button", { type: "button", "data-testid": "decide", text: t("qaDecide") });
        open.addEventListener("click", function () { openReview(e.contact_id, e, "decide"); });
        body.appendChild(el("tr", { "data-testid": "dispute", "data-evaluation": e.evaluation_id },
          el("td", { text: e.contact_id }), el("td", { text: e.agent_id }), el("td", { text: e.evaluator }),
          el("td", { text: scoreText(e) }), el("td", { text: e.dispute_reason }), el("td", {}, open)));
      });
      $("disputes-empty").hidden = res.evaluations.length > 0;
    }).catch(failed);
  }

  function loadMine() {
    latest("mine", api("evaluations", { agent_id: state.agent.agent_id })).then(function (res) {
      var body = $("mine");
      clear(body);
      res.evaluations.forEach(function (e) {
        var mode = e.status === "scored" ? "dispute" : "view";
        var open = el("button", { type: "button", "data-testid": mode === "dispute" ? "open-dispute" : "review", text: t(mode === "dispute" ? "qaViewOrDispute" : "qaView") });
        open.addEventListener("click", function () { openReview(e.contact_id, e, mode); });
        body.appendChild(el("tr", { "data-testid": "my-evaluation", "data-evaluation": e.evaluation_id },
          el("td", { text: when(e.scored_at) }), el("td", { text: t("ch_" + e.channel) }),
          el("td", { "data-testid": "my-score", text: score(e.score) }), el("td", { text: String(e.fatal_errors) }),
          el("td", {}, statusTag(e)), el("td", {}, open)));
      });
      $("mine-empty").hidden = res.evaluations.length > 0;
    }).catch(failed);
  }

  // ---- scorecard --------------------------------------------------------------------------------

  $("card-filter").addEventListener("submit", function (ev) { ev.preventDefault(); loadCard(); });

  function loadCard() {
    latest("scorecard", api("scorecard", { from: dayStart("c-from"), to: dayEnd("c-to"), team: $("c-team").value.trim(), agent_id: $("c-agent").value.trim() }))
      .then(function (card) { state.card = card; renderCard(); }).catch(failed);
  }

  function lines(id, rows, names) {
    var body = $(id);
    clear(body);
    rows.forEach(function (r) {
      // A directory team by its name (its id when renamed away), agents in none as "No team".
      var label = names ? (r.key ? names[r.key] || r.key : t("noTeam")) : r.key || "–";
      body.appendChild(el("tr", { "data-key": r.key },
        el("td", { text: label }), el("td", { text: String(r.evaluations) }),
        el("td", { text: score(r.average_score) }), el("td", { "data-testid": "fatal-rate", text: pct(r.fatal_error_rate) })));
    });
  }

  function renderCard() {
    var card = state.card;
    if (!card) return;
    var n = card.total.evaluations;
    $("card-n").textContent = String(n);
    $("card-avg").textContent = n ? score(card.total.average_score) : "–";
    $("card-fatal").textContent = n ? pct(card.total.fatal_error_rate) : "–";
    lines("card-agents", card.agents);
    var byTeam = card.team_by === "team";
    // The directory's teams when the tenant has them, else the queues.
    ["card-team-head", "c-team-label"].forEach(function (id) {
      $(id).setAttribute("data-i18n", byTeam ? "team" : "qaTeam");
      $(id).textContent = t(byTeam ? "team" : "qaTeam");
    });
    lines("card-teams", card.teams, byTeam ? card.team_names : null);
    chart(card.days);
  }

  // The fatal-error rate (red, with its value) and the average score (blue) per day, 0-100.
  function chart(days) {
    var node = $("qa-chart");
    clear(node);
    var W = 600, H = 200, L = 40, R = 10, T = 16, B = 24;
    var y = function (v) { return H - B - (H - B - T) * v / 100; };
    [0, 50, 100].forEach(function (v) {
      node.appendChild(svg("line", { x1: L, y1: y(v), x2: W - R, y2: y(v), stroke: "#dde1e6" }));
      node.appendChild(svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", "class": "axis" }, v + "%"));
    });
    node.setAttribute("aria-label", t("qaFatalRate"));
    if (!days.length) {
      node.appendChild(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", "class": "axis" }, t("qaNoEvaluations")));
      return;
    }
    var x = function (i) { return days.length === 1 ? (L + W - R) / 2 : L + 12 + (W - R - L - 24) * i / (days.length - 1); };
    var fatal = days.map(function (d, i) { return { x: x(i), v: 100 * d.fatal_error_rate, d: d }; });
    var avg = days.map(function (d, i) { return { x: x(i), v: d.average_score }; });
    var line = function (pts, color) {
      if (pts.length > 1) node.appendChild(svg("polyline", { points: pts.map(function (p) { return p.x.toFixed(1) + "," + y(p.v).toFixed(1); }).join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
    };
    line(avg, "#2357d8");
    line(fatal, "#c62828");
    avg.forEach(function (p) { node.appendChild(svg("circle", { cx: p.x.toFixed(1), cy: y(p.v).toFixed(1), r: 3, fill: "#2357d8" })); });
    var step = Math.max(1, Math.ceil(days.length / 8));
    fatal.forEach(function (p, i) {
      var day = p.d.date || new Date(p.d.day).toISOString().slice(0, 10);  // the tenant's day
      node.appendChild(svg("circle", { cx: p.x.toFixed(1), cy: y(p.v).toFixed(1), r: 4, fill: "#c62828", "data-testid": "qa-chart-point", "data-day": day, "data-value": p.v.toFixed(1) }));
      node.appendChild(svg("text", { x: p.x.toFixed(1), y: (y(p.v) - 8).toFixed(1), "text-anchor": "middle", fill: "#c62828", "data-testid": "qa-chart-value" }, pct(p.d.fatal_error_rate)));
      if (i % step === 0) node.appendChild(svg("text", { x: p.x.toFixed(1), y: H - 6, "text-anchor": "middle", "class": "axis" }, day.slice(5, 10)));
    });
  }

  // ---- forms ------------------------------------------------------------------------------------

  function loadForms() {
    loadFormList().then(function (forms) {
      var list = $("forms-list");
      clear(list);
      forms.forEach(function (f) {
        var fatal = f.items.filter(function (i) { return i.fatal; }).length;
        var edit = el("button", { type: "button", text: t("qaEdit") });
        edit.addEventListener("click", function () { $("form-yaml").value = yamlOf(f); });
        list.appendChild(el("li", { "data-testid": "form", "data-form": f.form_id, "data-version": String(f.version) },
          el("strong", { text: (f.title || f.form_id) + " (" + f.form_id + " v" + f.version + ")" }),
          document.createTextNode(" " + t("qaItemsCount", { n: f.items.length, fatal: fatal }) + " "), edit));
      });
    }).catch(failed);
  }

  function quote(s) { return JSON.stringify(String(s)); }
  function yamlOf(f) {
    return ["id: " + f.form_id, "title: " + quote(f.title), "items:"].concat(f.items.map(function (i) {
      return "  - {id: " + i.item_id + ", text: " + quote(i.text) + ", fatal: " + i.fatal + ", weight: " + i.weight + "}";
    })).join("\n") + "\n";
  }

  $("put-form").addEventListener("click", function () {
    $("form-result").textContent = ""; error("");
    api("put_form", { yaml: $("form-yaml").value }).then(function (f) {
      $("form-result").textContent = t("qaFormSaved", { id: f.form_id, version: f.version });
      loadForms();
    }).catch(failed);
  });

  document.addEventListener("sb-lang", function () {
    if (!state.view) return;
    $("me").textContent = state.agent.name + " · " + t("role_" + role());
    if (state.view === "scorecard") renderCard();
    else if (state.view === "review" && player) player.relabel(null);
    else if (state.view !== "review") show(state.view);
  });

  // Opened from the inbox ("My evaluations"), the tab carries the inbox's session.
  var prior = null;
  try { prior = JSON.parse(sessionStorage.getItem(KEY) || sessionStorage.getItem("sb-inbox") || "null"); } catch (e) { prior = null; }
  var q = new URLSearchParams(location.search).get("tenant");
  if (q) $("login-tenant").value = q;
  if (prior && prior.token) {
    state.token = prior.token; state.agent = prior.agent;
    window.SBI18n.load().then(start);
  } else window.SBI18n.load();
})();
