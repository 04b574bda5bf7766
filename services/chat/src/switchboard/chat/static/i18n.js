/* Switchboard inbox, wallboard, QA screen and admin console: UI strings in Korean, Chinese,
   English and Japanese. A page names its languages and string files on <body>:
   data-i18n-langs="ko zh en ja" data-i18n-dir="static/i18n/admin/". Strings are set with
   textContent only. */
(function () {
  "use strict";
  var body = document.body;
  var LANGS = ((body && body.getAttribute("data-i18n-langs")) || "ko zh en").split(" ");
  var DIR = (body && body.getAttribute("data-i18n-dir")) || "static/i18n/";
  var strings = {};
  var current = "en";

  function pick(preferred) {
    var stored = null;
    try { stored = localStorage.getItem("sb-ui-lang"); } catch (e) { stored = null; }
    var candidates = [preferred, stored, (navigator.language || "en").slice(0, 2)];
    for (var i = 0; i < candidates.length; i++) {
      if (candidates[i] && LANGS.indexOf(candidates[i]) >= 0) return candidates[i];
    }
    return "en";
  }

  function t(key, vars) {
    var s = (strings[current] && strings[current][key]) || (strings.en && strings.en[key]) || key;
    if (vars) {
      Object.keys(vars).forEach(function (k) { s = s.split("{" + k + "}").join(String(vars[k])); });
    }
    return s;
  }

  function apply() {
    document.documentElement.lang = current;
    document.querySelectorAll("[data-i18n]").forEach(function (el) {
      el.textContent = t(el.getAttribute("data-i18n"));
    });
    document.querySelectorAll("[data-i18n-placeholder]").forEach(function (el) {
      el.setAttribute("placeholder", t(el.getAttribute("data-i18n-placeholder")));
    });
    document.querySelectorAll("select.ui-lang").forEach(function (sel) { sel.value = current; });
  }

  function load(lang) {
    lang = pick(lang);
    var need = lang === "en" ? ["en"] : ["en", lang];
    return Promise.all(need.map(function (l) {
      if (strings[l]) return null;
      return fetch(DIR + l + ".json").then(function (r) { return r.json(); })
        .then(function (data) { strings[l] = data; });
    })).then(function () {
      current = lang;
      try { localStorage.setItem("sb-ui-lang", lang); } catch (e) { /* private mode */ }
      apply();
      document.dispatchEvent(new CustomEvent("sb-lang", { detail: lang }));
      return lang;
    });
  }

  document.addEventListener("change", function (ev) {
    if (ev.target && ev.target.classList && ev.target.classList.contains("ui-lang")) {
      load(ev.target.value);
    }
  });

  window.SBI18n = { t: t, load: load, apply: apply, current: function () { return current; } };
})();
