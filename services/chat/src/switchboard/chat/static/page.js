/* Switchboard staff pages' shared parts (the QA, knowledge-base, wallboard and admin screens):
   building DOM nodes, the sign-in form and the JSON API calls made with the signed-in user's
   inbox token. All text is set with textContent.

   SBPage.el(tag, { text, cls, <attribute>: value }, child...) -> element;
   SBPage.svg(tag, { <attribute>: value }, text) -> SVG element; SBPage.clear(node)
   SBPage.signIn({ key, t, roles, refused, done }): the #login form signs in with
     POST api/agent/login, shows a wrong password (t("wrongLogin")) or, when `roles` is given, a
     role not among them (t(refused)) in #login-error, keeps the session in sessionStorage[key]
     and calls done(token, agent)
   SBPage.companySignIn({ t, page, done, fail }): "Sign in with <company>" (#login-oidc) when the
     tenant typed in #login-tenant has an OIDC provider; back from the provider, the page's
     token is taken (POST api/agent/oidc/result) and given to done({token, expires_at, agent}),
     or why it was refused to fail(message) in the UI's language (t("oidc_<reason>"))
   SBPage.api(prefix, key, token)(action, body) -> a promise of the reply to POST <prefix><action>
     (token() gives the bearer token; a 401 drops sessionStorage[key]) */
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };

  function el(tag, attrs) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "cls") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    for (var i = 2; i < arguments.length; i++) if (arguments[i] != null) node.appendChild(arguments[i]);
    return node;
  }
  var SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text != null) node.textContent = text;
    return node;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function companySignIn(opts) {
    var button = $("login-oidc");
    var tenantInput = $("login-tenant");
    var name = null, asked = null, timer = null;
    function label() {
      if (name) button.textContent = opts.t("oidcSignIn").split("{name}").join(name);
      button.hidden = !name;
    }
    function offer() {
      var tenant = tenantInput.value.trim();
      if (tenant === asked) return;
      asked = tenant;
      if (!tenant) { name = null; label(); return; }
      fetch("api/agent/oidc?tenant=" + encodeURIComponent(tenant))
        .then(function (r) { return r.json(); })
        .then(function (b) { if (asked === tenant) { name = b.name || null; label(); } })
        .catch(function () { name = null; label(); });
    }
    // Why the provider's answer was refused, once the page's strings are there.
    function refuse(reason) {
      var key = "oidc_" + (["unavailable", "expired", "refused", "unknown", "disabled"].indexOf(reason) >= 0 ? reason : "refused");
      if (opts.t(key) !== key) { opts.fail(opts.t(key)); return; }
      document.addEventListener("sb-lang", function once() {
        document.removeEventListener("sb-lang", once);
        opts.fail(opts.t(key));
      });
    }
    if (!button) return;
    var q = new URLSearchParams(location.search).get("tenant");
    if (q) tenantInput.value = q;
    tenantInput.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(offer, 300); });
    tenantInput.addEventListener("change", offer);
    document.addEventListener("sb-lang", label);
    button.addEventListener("click", function () {
      location.href = "api/agent/oidc/start?tenant=" + encodeURIComponent(tenantInput.value.trim()) +
        "&page=" + encodeURIComponent(opts.page);
    });
    offer();
    var hash = location.hash.replace(/^#/, "");
    if (!/^oidc(-error)?=/.test(hash)) return;
    history.replaceState(null, "", location.pathname + location.search);
    var reason = hash.split("=")[1];
    if (hash.indexOf("oidc-error=") === 0) { refuse(reason); return; }
    fetch("api/agent/oidc/result", { method: "POST" })
      .then(function (r) { return r.json().then(function (b) { return { status: r.status, body: b }; }); })
      .then(function (res) {
        if (res.status !== 200) { refuse("expired"); return; }
        opts.done(res.body);
      }).catch(function (e) { opts.fail(String(e)); });
  }

  function signIn(opts) {
    function accept(body) {
      var err = $("login-error");
      if (opts.roles && opts.roles.indexOf(body.agent.role) < 0) { err.textContent = opts.t(opts.refused); err.hidden = false; return; }
      sessionStorage.setItem(opts.key, JSON.stringify({ token: body.token, agent: body.agent }));
      opts.done(body.token, body.agent);
    }
    companySignIn({
      t: opts.t, page: document.body.getAttribute("data-page") || "inbox", done: accept,
      fail: function (message) { var err = $("login-error"); err.textContent = message; err.hidden = false; },
    });
    $("login").addEventListener("submit", function (ev) {
      ev.preventDefault();
      fetch("api/agent/login", {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ tenant: $("login-tenant").value.trim(), agent_id: $("login-agent").value.trim(), password: $("login-password").value }),
      }).then(function (r) { return r.json().then(function (b) { return { status: r.status, body: b }; }); })
        .then(function (res) {
          var err = $("login-error");
          if (res.status !== 200) { err.textContent = res.status === 401 ? opts.t("wrongLogin") : res.body.error; err.hidden = false; return; }
          accept(res.body);
        });
    });
  }

  function api(prefix, key, token) {
    return function (action, body) {
      return fetch(prefix + action, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: "Bearer " + token() },
        body: JSON.stringify(body || {}),
      }).then(function (r) {
        return r.json().then(function (b) {
          if (r.status === 401) sessionStorage.removeItem(key);
          if (r.status !== 200) throw new Error(b.error || String(r.status));
          return b;
        });
      });
    };
  }

  window.SBPage = { el: el, svg: svg, clear: clear, signIn: signIn, companySignIn: companySignIn, api: api };
})();
