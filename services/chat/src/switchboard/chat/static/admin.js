/* Switchboard admin console: a tenant's agents, queues and routing steps, and the change log.
   Administrators change; supervisors view. Everything goes through /api/admin with the inbox
   token of the signed-in user. Text from the server is set with textContent only. */
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var t = function (k, v) { return window.SBI18n.t(k, v); };
  var KEY = "sb-admin";
  var state = { token: null, agent: null, agents: null, editing: null, routing: null, tab: "agents" };

  function el(tag, opts, children) {
    var node = document.createElement(tag);
    opts = opts || {};
    if (opts.text !== undefined) node.textContent = opts.text;
    if (opts.cls) node.className = opts.cls;
    Object.keys(opts.attrs || {}).forEach(function (k) { node.setAttribute(k, opts.attrs[k]); });
    (children || []).forEach(function (c) { node.appendChild(c); });
    return node;
  }

  function api(method, path, body) {
    var init = { method: method, headers: { Authorization: "Bearer " + state.token } };
    if (body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    return fetch("api/admin/" + path, init).then(function (r) {
      var type = r.headers.get("content-type") || "";
      var read = type.indexOf("application/json") === 0 ? r.json() : r.text();
      return read.then(function (data) {
        if (r.status === 401) { signOut(); }
        if (r.status !== 200) { var e = new Error(data && data.error ? data.error : String(r.status)); e.status = r.status; throw e; }
        return data;
      });
    });
  }

  function showError(message) { var e = $("error"); e.textContent = message || ""; e.hidden = !message; }
  function notice(message) {
    var n = $("notice"); n.textContent = message; n.hidden = !message;
    if (message) setTimeout(function () { if (n.textContent === message) n.hidden = true; }, 6000);
  }
  function mayChange() { return state.agent && state.agent.role === "admin"; }

  // ---- sign-in -----------------------------------------------------------------------------

  window.SBPage.signIn({ key: KEY, t: t, roles: ["admin", "supervisor"], refused: "needAdmin", done: function (token, agent) {
    state.token = token; state.agent = agent;
    window.SBI18n.load(state.agent.ui_language).then(start);
  } });

  function signOut() {
    sessionStorage.removeItem(KEY);
    state.token = null; state.agent = null;
    $("console").hidden = true; $("login").hidden = false;
  }
  $("sign-out").addEventListener("click", signOut);

  function start() {
    $("login").hidden = true; $("console").hidden = false;
    label();
    $("read-only").hidden = mayChange();
    ["add-agent", "codes-save", "routing-check", "routing-apply", "policy-check", "policy-apply", "h-add", "h-remove", "h-save", "languages-save", "oidc-save", "oidc-remove", "team-add"].forEach(function (id) { $(id).hidden = !mayChange(); });
    OIDC_INPUTS.forEach(function (id) { $(id).disabled = !mayChange(); });
    $("routing-yaml").readOnly = !mayChange();
    $("codes").readOnly = !mayChange();
    $("policy-yaml").readOnly = !mayChange();
    $("languages").readOnly = !mayChange();
    selectTab(state.tab);
  }

  function label() {
    $("me").textContent = state.agent.name + " (" + t("role_" + state.agent.role) + ")";
  }

  // ---- tabs --------------------------------------------------------------------------------

  function selectTab(name) {
    state.tab = name; showError("");
    document.querySelectorAll("[data-tab]").forEach(function (b) { b.setAttribute("aria-selected", String(b.getAttribute("data-tab") === name)); });
    document.querySelectorAll("[data-panel]").forEach(function (p) { p.hidden = p.getAttribute("data-panel") !== name; });
    if (name === "agents") loadAgents();
    if (name === "routing") loadRouting();
    if (name === "policy") { loadPolicy(); loadTemplates(); loadSla(); loadTasks(); }
    if (name === "qa") loadQaForms();
    if (name === "audit") loadAudit();
  }
  document.querySelectorAll("[data-tab]").forEach(function (b) {
    b.addEventListener("click", function () { selectTab(b.getAttribute("data-tab")); });
  });

  // ---- agents ------------------------------------------------------------------------------

  function pairs(map) {
    return Object.keys(map || {}).map(function (k) { return k + ":" + map[k]; }).join(", ");
  }

  function parsePairs(text) {
    var out = {};
    text.split(",").forEach(function (part) {
      part = part.trim();
      if (!part) return;
      var i = part.lastIndexOf(":");
      var name = (i < 0 ? part : part.slice(0, i)).trim();
      var raw = i < 0 ? "" : part.slice(i + 1).trim();
      // Numbers go as numbers; anything else as typed, for the server to say what is wrong.
      out[name] = /^-?\d+$/.test(raw) ? parseInt(raw, 10) : raw;
    });
    return out;
  }

  function loadAgents() {
    return api("GET", "agents").then(function (data) { state.agents = data; renderAgents(); })
      .catch(function (e) { showError(e.message); });
  }

  function renderAgents() {
    var data = state.agents;
    $("agents-version").textContent = t("versionN", { n: data.version });
    var rows = $("agent-rows");
    rows.textContent = "";
    data.agents.forEach(function (a) {
      var actions = el("td", { cls: "row-actions" });
      if (mayChange()) {
        actions.appendChild(button(t("edit"), "edit-" + a.agent_id, function () { openForm(a); }));
        actions.appendChild(button(t("resetPassword"), "reset-" + a.agent_id, function () { resetPassword(a); }));
        actions.appendChild(button(a.disabled ? t("enable") : t("disable"), "toggle-" + a.agent_id, function () { toggle(a); }));
      }
      var row = el("tr", { cls: a.disabled ? "disabled" : "", attrs: { "data-agent": a.agent_id, "data-testid": "agent-row" } }, [
        el("td", { text: a.agent_id }), el("td", { text: a.name }), el("td", { text: t("role_" + a.role) }),
        el("td", { text: pairs(a.languages) }), el("td", { text: pairs(a.skills) }), el("td", { text: pairs(a.capacity) }),
        el("td", { text: teamName(a.team), attrs: { "data-testid": "agent-team" } }),
        el("td", { text: a.disabled ? t("disabled") : t("active"), attrs: { "data-testid": "agent-status" } }), actions
      ]);
      rows.appendChild(row);
    });
    if (document.activeElement !== $("codes")) $("codes").value = data.wrap_up_codes.join(", ");
    renderOidc(data.oidc);
    renderTeams();
  }

  // ---- teams (the agents file's teams: id, name, leads) -----------------------------------------
  function teamName(id) {
    var found = (state.agents.teams || []).filter(function (tm) { return tm.id === id; })[0];
    return found ? found.name : "";
  }
  function ids(text) { return text.split(",").map(function (x) { return x.trim(); }).filter(Boolean); }
  function renderTeams() {
    var teams = state.agents.teams || [];
    var rows = $("team-rows");
    if (rows.contains(document.activeElement)) return;
    rows.textContent = "";
    teams.forEach(function (tm, i) {
      var members = state.agents.agents.filter(function (a) { return a.team === tm.id; }).map(function (a) { return a.agent_id; });
      var name = el("input", { attrs: { "data-testid": "team-name", value: tm.name } });
      var leads = el("input", { attrs: { "data-testid": "team-leads", value: tm.leads.join(", ") } });
      name.value = tm.name; leads.value = tm.leads.join(", ");
      name.readOnly = leads.readOnly = !mayChange();
      var actions = el("td", { cls: "row-actions" });
      if (mayChange()) {
        actions.appendChild(button(t("save"), "team-save-" + tm.id, function () {
          var next = teams.slice();
          next[i] = { id: tm.id, name: name.value.trim(), leads: ids(leads.value) };
          saveTeams(next, "teamSaved", tm.id);
        }));
        actions.appendChild(button(t("removeTeam"), "team-remove-" + tm.id, function () {
          saveTeams(teams.filter(function (x) { return x.id !== tm.id; }), "teamRemoved", tm.id);
        }));
      }
      rows.appendChild(el("tr", { attrs: { "data-team": tm.id, "data-testid": "team-row" } }, [
        el("td", { text: tm.id }), el("td", {}, [name]), el("td", {}, [leads]),
        el("td", { text: members.join(", "), attrs: { "data-testid": "team-members" } }), actions
      ]));
    });
  }
  function saveTeams(teams, message, id) {
    return api("PUT", "teams", { teams: teams, version: state.agents.version }).then(function (data) {
      state.agents = data;
      if (document.activeElement) document.activeElement.blur();
      renderAgents();
      $("teams-error").textContent = "";
      notice(t(message, { id: id }));
      return true;
    }).catch(function (e) { $("teams-error").textContent = e.message; return false; });
  }
  $("team-add").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var id = $("t-id").value.trim();
    var team = { id: id, name: $("t-name").value.trim() || id, leads: ids($("t-leads").value) };
    saveTeams((state.agents.teams || []).concat([team]), "teamAdded", id).then(function (ok) {
      if (ok) { $("t-id").value = ""; $("t-name").value = ""; $("t-leads").value = ""; }
    });
  });

  // The tenant's company sign-in (the agents file's oidc section).
  var OIDC_INPUTS = ["oidc-name", "oidc-issuer", "oidc-client-id", "oidc-secret-file", "oidc-claim", "oidc-domain"];
  var OIDC_KEYS = ["name", "issuer", "client_id", "client_secret_file", "agent_claim", "email_domain"];
  function renderOidc(oidc) {
    if ($("oidc-form").contains(document.activeElement)) return;
    OIDC_INPUTS.forEach(function (id, i) {
      $(id).value = (oidc && oidc[OIDC_KEYS[i]]) || (id === "oidc-claim" ? "preferred_username" : "");
    });
    $("oidc-remove").disabled = !oidc;
  }
  function saveOidc(oidc, message) {
    api("PUT", "oidc", { oidc: oidc, version: state.agents.version }).then(function (data) {
      state.agents = data;
      if (document.activeElement) document.activeElement.blur();
      renderAgents();
      $("oidc-error").textContent = "";
      notice(t(message));
    }).catch(function (e) { $("oidc-error").textContent = e.message; });
  }
  $("oidc-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var oidc = {};
    OIDC_INPUTS.forEach(function (id, i) { oidc[OIDC_KEYS[i]] = $(id).value.trim(); });
    saveOidc(oidc, "oidcSaved");
  });
  $("oidc-remove").addEventListener("click", function () { saveOidc(null, "oidcRemoved"); });

  $("codes-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var codes = $("codes").value.split(",").map(function (s) { return s.trim(); }).filter(Boolean);
    api("PUT", "wrap-up-codes", { wrap_up_codes: codes, version: state.agents.version }).then(function (data) {
      state.agents = data; $("codes").blur(); renderAgents();
      $("codes-error").textContent = "";
      notice(t("codesSaved"));
    }).catch(function (e) { $("codes-error").textContent = e.message; });
  });

  function button(label, testid, onclick) {
    var b = el("button", { text: label, attrs: { type: "button", "data-testid": testid } });
    b.addEventListener("click", onclick);
    return b;
  }

  function openForm(agent) {
    state.editing = agent;
    $("password-form").hidden = true;
    var f = $("agent-form");
    f.hidden = false;
    $("agent-form-title").textContent = agent ? t("editAgent", { id: agent.agent_id }) : t("addAgent");
    $("f-id").value = agent ? agent.agent_id : ""; $("f-id").disabled = !!agent;
    $("f-name").value = agent ? agent.name : "";
    $("f-password").value = ""; $("f-password-label").hidden = !!agent;
    $("f-role").value = agent ? agent.role : "agent";
    $("f-ui").value = agent ? agent.ui_language : window.SBI18n.current();
    $("f-languages").value = agent ? pairs(agent.languages) : "";
    $("f-skills").value = agent ? pairs(agent.skills) : "";
    $("f-capacity").value = agent ? pairs(agent.capacity) : "";
    var picker = $("f-team");
    picker.textContent = "";
    picker.appendChild(el("option", { text: t("noTeam"), attrs: { value: "" } }));
    (state.agents.teams || []).forEach(function (tm) { picker.appendChild(el("option", { text: tm.name, attrs: { value: tm.id } })); });
    picker.value = agent ? agent.team || "" : "";
    $("f-error").textContent = "";
    (agent ? $("f-name") : $("f-id")).focus();
  }
  $("add-agent").addEventListener("click", function () { openForm(null); });
  $("f-cancel").addEventListener("click", function () { $("agent-form").hidden = true; });

  $("agent-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var body = {
      name: $("f-name").value.trim(), role: $("f-role").value, ui_language: $("f-ui").value,
      languages: parsePairs($("f-languages").value), skills: parsePairs($("f-skills").value),
      capacity: parsePairs($("f-capacity").value), team: $("f-team").value
    };
    var editing = state.editing;
    var call = editing
      ? api("PUT", "agents/" + encodeURIComponent(editing.agent_id), Object.assign(body, { version: state.agents.version }))
      : api("POST", "agents", Object.assign(body, { id: $("f-id").value.trim(), password: $("f-password").value }));
    call.then(function (data) {
      state.agents = data; renderAgents();
      $("agent-form").hidden = true;
      notice(editing ? t("agentSaved", { id: editing.agent_id }) : t("agentAdded", { id: body.id }));
    }).catch(function (e) { $("f-error").textContent = e.message; });
  });

  function resetPassword(a) {
    state.resetting = a;
    $("agent-form").hidden = true;
    $("password-form").hidden = false;
    $("pw-title").textContent = t("newPasswordFor", { id: a.agent_id });
    $("pw-new").value = ""; $("pw-error").textContent = "";
    $("pw-new").focus();
  }
  $("pw-cancel").addEventListener("click", function () { $("password-form").hidden = true; });
  $("password-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var a = state.resetting;
    api("POST", "agents/" + encodeURIComponent(a.agent_id) + "/password", { password: $("pw-new").value })
      .then(function (data) {
        state.agents = data; renderAgents();
        $("password-form").hidden = true;
        notice(t("passwordReset", { id: a.agent_id }));
      })
      .catch(function (e) { $("pw-error").textContent = e.message; });
  });

  function toggle(a) {
    api("PUT", "agents/" + encodeURIComponent(a.agent_id), { disabled: !a.disabled, version: state.agents.version })
      .then(function (data) { state.agents = data; renderAgents(); notice(t(a.disabled ? "agentEnabled" : "agentDisabled", { id: a.agent_id })); })
      .catch(function (e) { showError(e.message); });
  }

  function download(path, filename) {
    api("GET", path).then(function (text) {
      var url = URL.createObjectURL(new Blob([text], { type: "application/yaml" }));
      var a = el("a", { attrs: { href: url, download: filename } });
      document.body.appendChild(a); a.click(); a.remove();
      setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
    }).catch(function (e) { showError(e.message); });
  }
  $("export-agents").addEventListener("click", function () { download("agents.yaml", "agents.yaml"); });
  $("export-policy").addEventListener("click", function () { download("case-policy.yaml", "policy.yaml"); });
  $("export-routing").addEventListener("click", function () { download("routing.yaml", "router.yaml"); });
  $("export-qa").addEventListener("click", function () { download("qa-forms.yaml", "qa-forms.yaml"); });

  // ---- routing -----------------------------------------------------------------------------

  function loadRouting() {
    return api("GET", "routing").then(function (data) {
      state.routing = data;
      $("routing-yaml").value = data.yaml;
      var found = /^languages:\s*\[([^\]]*)\]/m.exec(data.yaml);
      $("languages").value = found ? found[1].split(",").map(function (x) { return x.trim(); }).filter(Boolean).join(", ") : "";
      $("languages-error").textContent = "";
      $("routing-version").textContent = t("versionN", { n: data.version });
      result("", "");
    }).catch(function (e) { showError(e.message); });
  }
  $("routing-reload").addEventListener("click", loadRouting);

  $("languages-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var languages = $("languages").value.split(",").map(function (x) { return x.trim(); }).filter(Boolean);
    api("PUT", "languages", { languages: languages }).then(function () {
      return loadRouting();
    }).then(function () {
      if (!$("languages-error").textContent) notice(t("languagesSaved"));
    }).catch(function (e) { $("languages-error").textContent = e.message; });
  });

  function result(text, kind) {
    var r = $("routing-result");
    r.textContent = text; r.className = "result " + kind; r.hidden = !text;
    r.setAttribute("data-state", kind);
  }

  function sendRouting(dryRun) {
    api("POST", "routing", { yaml: $("routing-yaml").value, dry_run: dryRun }).then(function (data) {
      if (dryRun) { result(t("routingValid"), "ok"); return; }
      state.routing.version = data.version;
      $("routing-version").textContent = t("versionN", { n: data.version });
      result(t("routingApplied", { n: data.version }), "ok");
    }).catch(function (e) { result(e.message, "bad"); });
  }
  $("routing-check").addEventListener("click", function () { sendRouting(true); });
  $("routing-apply").addEventListener("click", function () { sendRouting(false); });

  $("preview-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    api("POST", "preview", {
      channel: $("p-channel").value, language: $("p-language").value.trim(),
      skills: $("p-skills").value.split(",").map(function (s) { return s.trim(); }).filter(Boolean),
      queue: $("p-queue").value.trim()
    }).then(renderPreview).catch(function (e) { showError(e.message); });
  });

  function renderPreview(p) {
    $("preview-result").hidden = false;
    $("preview-summary").textContent = p.outcome === "offered"
      ? t("previewOffered", { agent: p.agent_id, queue: p.queue })
      : t("previewWaits", { queue: p.queue });
    var rows = $("preview-rows");
    rows.textContent = "";
    p.candidates.forEach(function (c, i) {
      rows.appendChild(el("tr", { attrs: { "data-testid": "preview-candidate", "data-agent": c.agent_id } }, [
        el("td", { text: c.agent_id }),
        el("td", { cls: i === 0 ? "verdict-offer" : "", text: i === 0 ? t("wouldOffer") : t("candidateN", { n: i + 1 }) }),
        el("td", { text: t("score", { n: c.score }) + (c.sticky ? " · " + t("sticky") : "") })
      ]));
    });
    p.excluded.forEach(function (x) {
      rows.appendChild(el("tr", { attrs: { "data-testid": "preview-excluded", "data-agent": x.agent_id } }, [
        el("td", { text: x.agent_id }),
        el("td", { cls: "verdict-excluded", text: x.reasons.map(function (r) { return t("why_" + r); }).join(", ") }),
        el("td", { text: x.detail })
      ]));
    });
    if (p.excluded_total > p.excluded.length) {
      rows.appendChild(el("tr", {}, [el("td", { text: t("andMore", { n: p.excluded_total - p.excluded.length }), attrs: { colspan: "3" } })]));
    }
  }

  // ---- the tenant's policies (case service) ---------------------------------------------

  function loadPolicy() {
    return api("GET", "case-policy").then(showPolicy).catch(function (e) { showError(e.message); });
  }
  $("policy-reload").addEventListener("click", loadPolicy);

  function showPolicy(data) {
    state.policy = data;
    $("policy-yaml").value = data.yaml;
    $("policy-version").textContent = t("versionN", { n: data.version });
    var h = data.hours || { timezone: "", hours: {}, holidays: [] };
    $("h-timezone").value = h.timezone;
    $("h-hours").value = Object.keys(h.hours).map(function (d) { return d + " " + h.hours[d]; }).join("\n");
    var list = $("h-holidays");
    list.textContent = "";
    h.holidays.forEach(function (d) { list.appendChild(el("option", { text: d, attrs: { value: d } })); });
    $("h-error").textContent = "";
  }

  function policyResult(text, kind) {
    var r = $("policy-result");
    r.textContent = text; r.className = "result " + kind; r.hidden = !text;
    r.setAttribute("data-state", kind);
  }

  function sendPolicy(body, dryRun, onError) {
    body.dry_run = dryRun; body.version = state.policy.version;
    return api("POST", "case-policy", body).then(function (data) {
      if (dryRun) { policyResult(t("policyValid"), "ok"); return; }
      showPolicy(data);
      policyResult(t("policyApplied", { n: data.version }), "ok");
    }).catch(onError);
  }
  $("policy-check").addEventListener("click", function () {
    sendPolicy({ yaml: $("policy-yaml").value }, true, function (e) { policyResult(e.message, "bad"); });
  });
  $("policy-apply").addEventListener("click", function () {
    sendPolicy({ yaml: $("policy-yaml").value }, false, function (e) { policyResult(e.message, "bad"); });
  });

  $("h-add").addEventListener("click", function () {
    var d = $("h-new-holiday").value;
    if (!d) return;
    var list = $("h-holidays");
    var known = Array.prototype.map.call(list.options, function (o) { return o.value; });
    if (known.indexOf(d) < 0) list.appendChild(el("option", { text: d, attrs: { value: d } }));
    $("h-new-holiday").value = "";
  });
  $("h-remove").addEventListener("click", function () {
    var list = $("h-holidays");
    if (list.selectedIndex >= 0) list.remove(list.selectedIndex);
  });
  $("hours-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var hours = {};
    $("h-hours").value.split("\n").forEach(function (line) {
      var parts = line.trim().split(/\s+/);
      if (parts[0]) hours[parts[0]] = parts.slice(1).join(" ");
    });
    var current = state.policy.hours || {};
    sendPolicy({ hours: {
      calendar: current.calendar || "", timezone: $("h-timezone").value.trim(), hours: hours,
      holidays: Array.prototype.map.call($("h-holidays").options, function (o) { return o.value; })
    } }, false, function (e) { $("h-error").textContent = e.message; }).then(function () {
      if (!$("h-error").textContent) notice(t("hoursSaved"));
    });
  });

  // ---- case templates as forms (in the tenant's policies) ---------------------------------

  var LANGS = ["ko", "zh", "en", "ja"];
  var KINDS = ["text", "multiline", "choice", "date"];

  function texts(v) { return typeof v === "string" ? { en: v } : (v && typeof v === "object" ? v : {}); }
  function inLang(v) { var m = texts(v); return m[window.SBI18n.current()] || m.en || ""; }
  function langInputs(prefix, value) {
    var m = texts(value);
    return LANGS.map(function (l) {
      var i = el("input", { cls: prefix + "-" + l, attrs: { "data-testid": prefix + "-" + l, placeholder: l, lang: l } });
      i.value = m[l] || ""; i.readOnly = !mayChange();
      return i;
    });
  }
  function readLangs(root, prefix) {
    var out = {};
    LANGS.forEach(function (l) { var v = root.querySelector("." + prefix + "-" + l).value.trim(); if (v) out[l] = v; });
    return out;
  }

  function loadTemplates() {
    return api("GET", "templates").then(function (data) {
      state.templates = data;
      $("new-template").hidden = !data.may_change;
      var rows = $("tpl-rows");
      rows.textContent = "";
      data.templates.forEach(function (tp) {
        var c = tp.catalogue || {};
        rows.appendChild(el("tr", { attrs: { "data-testid": "tpl-row", "data-template": tp.name } }, [
          el("td", { text: tp.name }), el("td", { text: tp.subject || "" }), el("td", { text: inLang(c.name) }),
          el("td", { text: String((c.fields || []).length) }),
          el("td", { cls: "row-actions" }, [button(data.may_change ? t("edit") : t("view"), "edit-tpl-" + tp.name, function () { openTemplate(tp); })])
        ]));
      });
    }).catch(function (e) { showError(e.message); });
  }

  function openTemplate(tp) {
    state.template = tp;
    var ro = !mayChange();
    $("tpl-editor").hidden = false;
    $("tpl-name").value = tp ? tp.name : ""; $("tpl-name").disabled = !!tp;
    [["tpl-subject", "subject"], ["tpl-case-type", "case_type"], ["tpl-priority", "priority"], ["tpl-queue", "queue"]].forEach(function (p) {
      $(p[0]).value = tp && tp[p[1]] ? tp[p[1]] : ""; $(p[0]).readOnly = ro;
    });
    $("tpl-skills").value = tp && tp.skills ? tp.skills.join(", ") : ""; $("tpl-skills").readOnly = ro;
    var c = (tp && tp.catalogue) || {};
    var box = $("tpl-texts");
    box.textContent = "";
    box.appendChild(el("label", {}, [el("span", { text: t("formName") })].concat(langInputs("tpl-cat-name", c.name))));
    box.appendChild(el("label", {}, [el("span", { text: t("formDescription") })].concat(langInputs("tpl-cat-desc", c.description))));
    $("tpl-fields").textContent = "";
    (c.fields || []).forEach(addTemplateField);
    ["tpl-add-field", "tpl-save"].forEach(function (id) { $(id).hidden = ro; });
    $("tpl-error").textContent = "";
  }

  function addTemplateField(f) {
    var ro = !mayChange();
    var name = el("input", { cls: "fld-name", attrs: { "data-testid": "fld-name" } }); name.value = f.name || ""; name.readOnly = ro;
    var kind = el("select", { cls: "fld-kind", attrs: { "data-testid": "fld-kind" } });
    KINDS.forEach(function (k) { kind.appendChild(el("option", { text: t("kind_" + k), attrs: { value: k } })); });
    kind.value = f.kind || "text"; kind.disabled = ro;
    var required = el("input", { cls: "fld-required", attrs: { type: "checkbox", "data-testid": "fld-required" } });
    required.checked = !!f.required; required.disabled = ro;
    var choices = el("input", { cls: "fld-choices", attrs: { "data-testid": "fld-choices" } });
    choices.value = (f.choices || []).map(function (ch) { return typeof ch === "object" ? ch.value : ch; }).join(", ");
    choices.readOnly = ro;
    var max = el("input", { cls: "fld-max", attrs: { type: "number", min: "1", "data-testid": "fld-max" } });
    max.value = f.max_length || ""; max.readOnly = ro;
    var row = el("tr", { attrs: { "data-testid": "tpl-field" } }, [
      el("td", {}, [name]), el("td", {}, [kind]), el("td", {}, [required]),
      el("td", { cls: "langs" }, langInputs("fld-label", f.label)), el("td", {}, [choices]), el("td", {}, [max]), el("td", {})
    ]);
    row.original = f;
    if (!ro) row.lastChild.appendChild(button(t("removeItem"), "fld-remove", function () { row.remove(); }));
    $("tpl-fields").appendChild(row);
  }

  function readField(row) {
    var q = function (cls) { return row.querySelector("." + cls); };
    // What the form does not show (a pattern, choices' labels) is kept as it was.
    var f = Object.assign({}, row.original || {});
    f.name = q("fld-name").value.trim(); f.kind = q("fld-kind").value;
    if (q("fld-required").checked) f.required = true; else delete f.required;
    var label = readLangs(row, "fld-label");
    if (Object.keys(label).length) f.label = label; else delete f.label;
    var before = {};
    (f.choices || []).forEach(function (ch) { if (typeof ch === "object") before[ch.value] = ch; });
    var values = q("fld-choices").value.split(",").map(function (x) { return x.trim(); }).filter(Boolean);
    if (f.kind === "choice" || values.length) f.choices = values.map(function (v) { return before[v] || v; }); else delete f.choices;
    var max = q("fld-max").value.trim();
    if (max) f.max_length = /^\d+$/.test(max) ? parseInt(max, 10) : max; else delete f.max_length;
    return f;
  }

  $("new-template").addEventListener("click", function () { openTemplate(null); $("tpl-name").focus(); });
  $("tpl-add-field").addEventListener("click", function () { addTemplateField({ kind: "text" }); });
  $("tpl-cancel").addEventListener("click", function () { $("tpl-editor").hidden = true; });
  $("tpl-editor").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var tp = Object.assign({}, state.template || {});
    var name = $("tpl-name").value.trim();
    [["tpl-subject", "subject"], ["tpl-case-type", "case_type"], ["tpl-priority", "priority"], ["tpl-queue", "queue"]].forEach(function (p) {
      var v = $(p[0]).value.trim(); if (v) tp[p[1]] = v; else delete tp[p[1]];
    });
    var skills = $("tpl-skills").value.split(",").map(function (x) { return x.trim(); }).filter(Boolean);
    if (skills.length) tp.skills = skills; else delete tp.skills;
    var fields = Array.prototype.map.call($("tpl-fields").querySelectorAll("tr"), readField);
    var catName = readLangs($("tpl-texts"), "tpl-cat-name"), desc = readLangs($("tpl-texts"), "tpl-cat-desc");
    if (fields.length || Object.keys(catName).length || tp.catalogue) {
      var c = Object.assign({}, tp.catalogue || {});
      c.name = catName; c.fields = fields;
      if (Object.keys(desc).length) c.description = desc; else delete c.description;
      tp.catalogue = c;
    }
    delete tp.name; delete tp.tenant;
    api("PUT", "templates/" + encodeURIComponent(name), { template: tp, version: state.templates.version }).then(function (data) {
      $("tpl-editor").hidden = true;
      notice(t("templateSaved", { name: name }));
      loadPolicy(); loadSla(); loadTasks();
      return loadTemplates();
    }).catch(function (e) { $("tpl-error").textContent = e.message; });
  });

  // ---- SLA policies and escalation rules as forms (in the tenant's policies) ----------------

  var METRICS = ["first_response", "next_response", "resolution"];
  var ESC_KINDS = ["functional", "hierarchical"];
  function list(v) { return v === undefined || v === null || v === "" ? [] : (Array.isArray(v) ? v : [v]); }
  function splitList(text) { return text.split(",").map(function (x) { return x.trim(); }).filter(Boolean); }
  function setList(obj, key, text) { var v = splitList(text); if (v.length) obj[key] = v; else delete obj[key]; }
  function setText(obj, key, text) { var v = text.trim(); if (v) obj[key] = v; else delete obj[key]; }

  function loadSla() {
    return api("GET", "sla-policies").then(function (data) {
      state.sla = data;
      $("new-sla").hidden = !data.may_change;
      var rows = $("sla-rows");
      rows.textContent = "";
      data.policies.forEach(function (sp) {
        rows.appendChild(el("tr", { attrs: { "data-testid": "sla-row", "data-sla": sp.name } }, [
          el("td", { text: sp.name }), el("td", { text: sp.calendar || "24x7" }), el("td", { text: list(sp.priority).join(", ") }),
          el("td", { text: sp.first_response || "" }), el("td", { text: sp.next_response || "" }), el("td", { text: sp.resolution || "" }),
          el("td", { text: String(list(sp.escalation).length) }),
          el("td", { cls: "row-actions" }, [button(data.may_change ? t("edit") : t("view"), "edit-sla-" + sp.name, function () { openSla(sp); })])
        ]));
      });
    }).catch(function (e) { showError(e.message); });
  }

  function openSla(sp) {
    state.slaPolicy = sp;
    var ro = !(state.sla && state.sla.may_change);
    $("sla-editor").hidden = false;
    $("sla-name").value = sp ? sp.name : ""; $("sla-name").disabled = !!sp;
    var cal = $("sla-calendar");
    cal.textContent = "";
    state.sla.calendars.forEach(function (c) { cal.appendChild(el("option", { text: c, attrs: { value: c } })); });
    cal.value = (sp && sp.calendar) || "24x7"; cal.disabled = ro;
    $("sla-priority").value = sp ? list(sp.priority).join(", ") : ""; $("sla-priority").readOnly = ro;
    $("sla-queue").value = sp ? list(sp.queue).join(", ") : ""; $("sla-queue").readOnly = ro;
    METRICS.forEach(function (m) { $("sla-" + m).value = (sp && sp[m]) || ""; $("sla-" + m).readOnly = ro; });
    $("sla-rules").textContent = "";
    list(sp && sp.escalation).forEach(addRule);
    ["sla-add-rule", "sla-save"].forEach(function (id) { $(id).hidden = ro; });
    $("sla-error").textContent = "";
  }

  function addRule(r) {
    var ro = !(state.sla && state.sla.may_change);
    function input(cls, value, type) {
      var i = el("input", { cls: cls, attrs: { "data-testid": cls, type: type || "text" } });
      i.value = value === undefined || value === null ? "" : String(value); i.readOnly = ro;
      return i;
    }
    var kind = el("select", { cls: "esc-kind", attrs: { "data-testid": "esc-kind" } });
    ESC_KINDS.forEach(function (k) { kind.appendChild(el("option", { text: t("esc_" + k), attrs: { value: k } })); });
    kind.value = r.kind || "functional"; kind.disabled = ro;
    var row = el("tr", { attrs: { "data-testid": "sla-rule" } }, [
      el("td", {}, [input("esc-at", r.at, "number")]), el("td", {}, [kind]), el("td", {}, [input("esc-level", r.level)]),
      el("td", {}, [input("esc-actions", list(r.actions).join(", "))]), el("td", {}, [input("esc-notify", list(r.notify).join(", "))]),
      el("td", {}, [input("esc-reassign", r.reassign_to)]), el("td", {}, [input("esc-repeat", r.repeat_every)]), el("td", {})
    ]);
    row.original = r;
    if (!ro) row.lastChild.appendChild(button(t("removeItem"), "esc-remove", function () { row.remove(); }));
    $("sla-rules").appendChild(row);
  }

  function readRule(row) {
    var q = function (cls) { return row.querySelector("." + cls); };
    // What the form does not show (metrics, priority, queue) is kept as it was.
    var r = Object.assign({}, row.original || {});
    var at = q("esc-at").value.trim();
    if (at) r.at = /^\d+$/.test(at) ? parseInt(at, 10) : at; else delete r.at;
    r.kind = q("esc-kind").value;
    setText(r, "level", q("esc-level").value);
    setList(r, "actions", q("esc-actions").value);
    setList(r, "notify", q("esc-notify").value);
    setText(r, "reassign_to", q("esc-reassign").value);
    setText(r, "repeat_every", q("esc-repeat").value);
    return r;
  }

  $("new-sla").addEventListener("click", function () { openSla(null); $("sla-name").focus(); });
  $("sla-add-rule").addEventListener("click", function () { addRule({ kind: "functional", at: 80, actions: ["event"] }); });
  $("sla-cancel").addEventListener("click", function () { $("sla-editor").hidden = true; });
  $("sla-editor").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var sp = Object.assign({}, state.slaPolicy || {});
    var name = $("sla-name").value.trim();
    sp.calendar = $("sla-calendar").value;
    setList(sp, "priority", $("sla-priority").value);
    setList(sp, "queue", $("sla-queue").value);
    METRICS.forEach(function (m) { setText(sp, m, $("sla-" + m).value); });
    var rules = Array.prototype.map.call($("sla-rules").querySelectorAll("tr"), readRule);
    if (rules.length) sp.escalation = rules; else delete sp.escalation;
    delete sp.name; delete sp.tenant;
    api("PUT", "sla-policies/" + encodeURIComponent(name), { policy: sp, version: state.sla.version }).then(function () {
      $("sla-editor").hidden = true;
      notice(t("slaSaved", { name: name }));
      loadPolicy(); loadTemplates(); loadTasks();
      return loadSla();
    }).catch(function (e) { $("sla-error").textContent = e.message; });
  });

  // ---- recurring tasks as forms (in the tenant's policies) ----------------------------------

  function loadTasks() {
    return api("GET", "recurring").then(function (data) {
      state.tasks = data;
      $("new-task").hidden = !data.may_change;
      var rows = $("task-rows");
      rows.textContent = "";
      data.tasks.forEach(function (tk) {
        rows.appendChild(el("tr", { attrs: { "data-testid": "task-row", "data-task": tk.name } }, [
          el("td", { text: tk.name }), el("td", { text: tk.template || "" }), el("td", { text: t("every_" + (tk.every || "monthly")) }),
          el("td", { text: tk.day === undefined ? "" : String(tk.day) }), el("td", { text: tk.at || "09:00" }), el("td", { text: tk.timezone || "UTC" }),
          el("td", { cls: "row-actions" }, [button(data.may_change ? t("edit") : t("view"), "edit-task-" + tk.name, function () { openTask(tk); })])
        ]));
      });
    }).catch(function (e) { showError(e.message); });
  }

  function openTask(tk) {
    state.task = tk;
    var ro = !(state.tasks && state.tasks.may_change);
    $("task-editor").hidden = false;
    $("task-name").value = tk ? tk.name : ""; $("task-name").disabled = !!tk;
    var sel = $("task-template");
    sel.textContent = "";
    state.tasks.templates.forEach(function (n) { sel.appendChild(el("option", { text: n, attrs: { value: n } })); });
    if (tk && tk.template && state.tasks.templates.indexOf(tk.template) < 0) sel.appendChild(el("option", { text: tk.template, attrs: { value: tk.template } }));
    sel.value = (tk && tk.template) || state.tasks.templates[0] || ""; sel.disabled = ro;
    $("task-every").value = (tk && tk.every) || "monthly"; $("task-every").disabled = ro;
    [["task-day", "day"], ["task-at", "at"], ["task-timezone", "timezone"], ["task-start", "start"]].forEach(function (p) {
      var v = tk ? tk[p[1]] : undefined;
      $(p[0]).value = v === undefined || v === null ? "" : String(v); $(p[0]).readOnly = ro;
    });
    $("task-save").hidden = ro;
    $("task-error").textContent = "";
  }

  $("new-task").addEventListener("click", function () { openTask(null); $("task-name").focus(); });
  $("task-cancel").addEventListener("click", function () { $("task-editor").hidden = true; });
  $("task-editor").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var tk = Object.assign({}, state.task || {});
    var name = $("task-name").value.trim();
    tk.template = $("task-template").value; tk.every = $("task-every").value;
    var day = $("task-day").value.trim();
    if (day) tk.day = /^-?\d+$/.test(day) ? parseInt(day, 10) : day; else delete tk.day;
    setText(tk, "at", $("task-at").value); setText(tk, "timezone", $("task-timezone").value); setText(tk, "start", $("task-start").value);
    delete tk.name; delete tk.tenant;
    api("PUT", "recurring/" + encodeURIComponent(name), { task: tk, version: state.tasks.version }).then(function () {
      $("task-editor").hidden = true;
      notice(t("taskSaved", { name: name }));
      loadPolicy(); loadTemplates(); loadSla();
      return loadTasks();
    }).catch(function (e) { $("task-error").textContent = e.message; });
  });

  // ---- QA forms (the case service's) --------------------------------------------------------

  function qaMayChange() { return !!(state.qa && state.qa.may_change); }

  function loadQaForms() {
    return api("GET", "qa-forms").then(function (data) {
      state.qa = data;
      $("new-qa-form").hidden = !data.may_change;
      var rows = $("qa-rows");
      rows.textContent = "";
      data.forms.forEach(function (f) {
        rows.appendChild(el("tr", { attrs: { "data-testid": "qa-row", "data-form": f.form_id } }, [
          el("td", { text: f.form_id }), el("td", { text: f.title }),
          el("td", { text: t("versionN", { n: f.version }), attrs: { "data-testid": "qa-row-version" } }),
          el("td", { text: String(f.items.length) }),
          el("td", { text: f.built_in ? t("builtIn") : f.created_by }),
          el("td", { cls: "row-actions" }, [button(qaMayChange() ? t("edit") : t("view"), "open-qa-" + f.form_id, function () { openQaForm(f, f.version); })])
        ]));
      });
    }).catch(function (e) { showError(e.message); });
  }

  function openQaForm(form, latest) {
    state.qaForm = form; state.qaLatest = latest;
    $("qa-editor").hidden = false;
    $("qa-id").value = form ? form.form_id : ""; $("qa-id").disabled = !!form;
    $("qa-title").value = form ? form.title : "";
    var versions = $("qa-version");
    versions.textContent = "";
    for (var n = latest; n >= 1; n--) versions.appendChild(el("option", { text: t("versionN", { n: n }), attrs: { value: String(n) } }));
    versions.value = String(form ? form.version : 1);
    versions.disabled = !form;
    $("qa-old").hidden = !form || form.version === latest;
    var rows = $("qa-items");
    rows.textContent = "";
    (form ? form.items : [{ item_id: "", text: "", fatal: false, weight: 1 }]).forEach(addQaItem);
    ["qa-add-item", "qa-save"].forEach(function (id) { $(id).hidden = !qaMayChange(); });
    $("qa-title").readOnly = !qaMayChange();
    $("qa-error").textContent = "";
    (form ? $("qa-title") : $("qa-id")).focus();
  }

  function addQaItem(item) {
    var ro = !qaMayChange();
    var input = function (cls, value, type) {
      var i = el("input", { cls: cls, attrs: { "data-testid": cls, type: type || "text" } });
      if (type === "checkbox") { i.checked = !!value; i.disabled = ro; } else { i.value = value; i.readOnly = ro; }
      return i;
    };
    var weight = input("qa-item-weight", String(item.weight === undefined ? 1 : item.weight), "number");
    weight.step = "any"; weight.min = "0";
    var fatal = input("qa-item-fatal", item.fatal, "checkbox");
    var sync = function () { weight.disabled = fatal.checked; };
    fatal.addEventListener("change", sync); sync();
    var row = el("tr", { attrs: { "data-testid": "qa-item" } }, [
      el("td", {}, [input("qa-item-id", item.item_id)]), el("td", { cls: "wide" }, [input("qa-item-text", item.text)]),
      el("td", {}, [fatal]), el("td", {}, [weight]), el("td", {})
    ]);
    if (!ro) row.lastChild.appendChild(button(t("removeItem"), "qa-item-remove", function () { row.remove(); }));
    $("qa-items").appendChild(row);
  }

  $("new-qa-form").addEventListener("click", function () { openQaForm(null, 0); });
  $("qa-add-item").addEventListener("click", function () { addQaItem({ item_id: "", text: "", fatal: false, weight: 1 }); });
  $("qa-cancel").addEventListener("click", function () { $("qa-editor").hidden = true; });
  $("qa-version").addEventListener("change", function () {
    var id = state.qaForm.form_id;
    api("GET", "qa-forms/" + encodeURIComponent(id) + "?version=" + $("qa-version").value)
      .then(function (f) { openQaForm(f, state.qaLatest); })
      .catch(function (e) { $("qa-error").textContent = e.message; });
  });

  $("qa-editor").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var items = Array.prototype.map.call($("qa-items").querySelectorAll("tr"), function (row) {
      var q = function (cls) { return row.querySelector("." + cls); };
      var raw = q("qa-item-weight").value.trim();
      // A number goes as a number; anything else as typed, for the case service to refuse.
      return { item_id: q("qa-item-id").value.trim(), text: q("qa-item-text").value.trim(),
        fatal: q("qa-item-fatal").checked, weight: raw !== "" && !isNaN(Number(raw)) ? Number(raw) : raw };
    });
    var body = { form_id: $("qa-id").value.trim(), title: $("qa-title").value.trim(), items: items, version: state.qaLatest };
    api("POST", "qa-forms", body).then(function (f) {
      $("qa-editor").hidden = true;
      notice(t("qaFormSaved", { id: f.form_id, n: f.version }));
      return loadQaForms();
    }).catch(function (e) { $("qa-error").textContent = e.message; });
  });

  // ---- audit -------------------------------------------------------------------------------

  function loadAudit() {
    return api("GET", "audit").then(function (data) {
      var rows = $("audit-rows");
      rows.textContent = "";
      data.entries.forEach(function (e) {
        var details = e.changes.diff !== undefined ? e.changes.diff : Object.keys(e.changes).map(function (k) {
          var v = e.changes[k];
          var shown = Array.isArray(v) ? v.join(", ") : v !== null && typeof v === "object" ? pairs(v) : String(v);
          return k + ": " + shown;
        }).join("\n");
        rows.appendChild(el("tr", { attrs: { "data-testid": "audit-row" } }, [
          el("td", { text: new Date(e.at * 1000).toLocaleString(window.SBI18n.current()) }),
          el("td", { text: e.actor }), el("td", { text: t("act_" + e.action.replace(".", "_")) }),
          el("td", { text: e.target }), el("td", { text: String(e.version) }),
          el("td", {}, [el("pre", { text: details })])
        ]));
      });
    }).catch(function (e) { showError(e.message); });
  }

  // A new UI language: relabel what is shown, without losing what is being typed.
  document.addEventListener("sb-lang", function () {
    if (!state.token || $("console").hidden) return;
    label();
    if (state.agents) renderAgents();
    if (state.routing) $("routing-version").textContent = t("versionN", { n: state.routing.version });
    if (state.policy) $("policy-version").textContent = t("versionN", { n: state.policy.version });
    if (state.tab === "audit") loadAudit();
    if (state.tab === "qa" && $("qa-editor").hidden) loadQaForms();
  });

  var prior = null;
  try { prior = JSON.parse(sessionStorage.getItem(KEY) || "null"); } catch (e) { prior = null; }
  var q = new URLSearchParams(location.search).get("tenant");
  if (q) $("login-tenant").value = q;
  window.SBI18n.load().then(function () {
    if (prior && prior.token) { state.token = prior.token; state.agent = prior.agent; start(); }
  });
})();
