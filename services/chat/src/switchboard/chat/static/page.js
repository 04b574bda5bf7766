/* Switchboard staff pages' shared parts (the QA, knowledge-base, wallboard and admin screens):
   building DOM nodes, the sign-in form and the JSON API calls made with the signed-in user's
   inbox token. All text is set with textContent.

   SBPage.el(tag, { text, cls, <attribute>: value }, child...) -> element;
   SBPage.svg(tag, { <attribute>: value }, text) -> SVG element; SBPage.clear(node)
   SBPage.signIn({ key, t, roles, refused, done }): the #login form signs in with
     POST api/agent/login, shows a wrong password (t("wrongLogin")) or, when `roles` is given, a
     role not among them (t(refused)) in #login-error, keeps the session in sessionStorage[key]
     and calls done(token, agent)
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

  function signIn(opts) {
    $("login").addEventListener("submit", function (ev) {
      ev.preventDefault();
      fetch("api/agent/login", {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ tenant: $("login-tenant").value.trim(), agent_id: $("login-agent").value.trim(), password: $("login-password").value }),
      }).then(function (r) { return r.json().then(function (b) { return { status: r.status, body: b }; }); })
        .then(function (res) {
          var err = $("login-error");
          if (res.status !== 200) { err.textContent = res.status === 401 ? opts.t("wrongLogin") : res.body.error; err.hidden = false; return; }
          if (opts.roles && opts.roles.indexOf(res.body.agent.role) < 0) { err.textContent = opts.t(opts.refused); err.hidden = false; return; }
          sessionStorage.setItem(opts.key, JSON.stringify({ token: res.body.token, agent: res.body.agent }));
          opts.done(res.body.token, res.body.agent);
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

  window.SBPage = { el: el, svg: svg, clear: clear, signIn: signIn, api: api };
})();
