// Switchboard chat widget loader. Embed with one tag:
//   <script src="https://chat.example.com/widget.js" data-tenant="demo" async></script>
// It adds a launcher button and, on click, an iframe with the chat panel served by the chat
// itself (so the panel's scripts, storage and socket stay on the chat's origin). Optional
// attributes: data-language (ko, zh, en, ja), data-position (right|left), data-color (#rrggbb),
// data-help-centre ("true": a second button, "Help centre", opens the customer portal — knowledge
// search and the customer's requests — in the same panel, in the widget's language).
(function () {
  "use strict";
  var script = document.currentScript || (function () {
    var found = document.querySelectorAll("script[src*='widget.js'][data-tenant]");
    return found[found.length - 1];
  })();
  if (!script || window.__switchboardWidget) return;
  window.__switchboardWidget = true;

  var base = new URL(script.src, window.location.href);
  var tenant = script.getAttribute("data-tenant") || "";
  var language = script.getAttribute("data-language") || "";
  var left = script.getAttribute("data-position") === "left";
  var color = /^#[0-9a-fA-F]{6}$/.test(script.getAttribute("data-color") || "") ? script.getAttribute("data-color") : "#2454d6";
  var help = script.getAttribute("data-help-centre") === "true";
  var LABELS = { ko: "상담 채팅", zh: "在线客服", ja: "チャット", en: "Chat with us" };
  var HELP_LABELS = { ko: "고객 센터", zh: "帮助中心", ja: "ヘルプセンター", en: "Help centre" };
  var lang = (language || navigator.language || "en").slice(0, 2).toLowerCase();
  if (!LABELS[lang]) lang = "en";
  var label = LABELS[lang];

  // A shadow root keeps the host page's CSS away from the launcher and vice versa.
  var host = document.createElement("div");
  host.setAttribute("data-switchboard-widget", "");
  var root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
  var style = document.createElement("style");
  style.textContent =
    ":host{all:initial}" +
    ".sb-bar{position:fixed;bottom:20px;" + (left ? "left" : "right") + ":20px;z-index:2147483000;" +
    "display:flex;gap:8px;flex-direction:" + (left ? "row" : "row-reverse") + "}" +
    ".sb-launch{border:0;border-radius:28px;padding:14px 20px;font:600 15px system-ui,sans-serif;color:#fff;" +
    "background:" + color + ";box-shadow:0 4px 16px rgba(0,0,0,.25);cursor:pointer}" +
    ".sb-panel{position:fixed;bottom:84px;" + (left ? "left" : "right") + ":20px;z-index:2147483000;" +
    "width:380px;max-width:calc(100vw - 40px);height:600px;max-height:calc(100vh - 110px);border:0;" +
    "border-radius:12px;box-shadow:0 8px 32px rgba(0,0,0,.3);background:#fff}" +
    "[hidden]{display:none!important}";
  var bar = document.createElement("div");
  bar.className = "sb-bar";
  // The panel shows the chat or the help centre, one at a time; each keeps its own frame, so a
  // chat under way is not reloaded when the customer looks something up.
  var entries = [];

  function entry(name, text, src) {
    var item = { name: name, frame: null, button: document.createElement("button") };
    item.button.className = "sb-launch";
    item.button.type = "button";
    item.button.textContent = text;
    item.button.setAttribute("data-sb-entry", name);
    item.button.setAttribute("aria-expanded", "false");
    item.button.addEventListener("click", function () {
      var showing = item.frame && !item.frame.hidden;
      entries.forEach(function (other) {
        if (other.frame) other.frame.hidden = true;
        other.button.setAttribute("aria-expanded", "false");
      });
      if (showing) return;
      if (!item.frame) {
        item.frame = document.createElement("iframe");
        item.frame.className = "sb-panel";
        item.frame.title = text;
        item.frame.src = src().toString();
        item.frame.setAttribute("allow", "clipboard-write");
        item.frame.setAttribute("data-sb-panel", name);
        root.appendChild(item.frame);
      }
      item.frame.hidden = false;
      item.button.setAttribute("aria-expanded", "true");
    });
    entries.push(item);
    bar.appendChild(item.button);
  }

  entry("chat", label, function () {
    var src = new URL("/widget", base);
    src.searchParams.set("tenant", tenant);
    // The site's language is a default: a language the customer chose in the panel wins.
    if (language) src.searchParams.set("default_lang", language);
    return src;
  });
  if (help) {
    entry("help", HELP_LABELS[lang], function () {
      var src = new URL("/portal", base);
      src.searchParams.set("tenant", tenant);
      src.searchParams.set("lang", lang);
      src.searchParams.set("embed", "1");
      return src;
    });
  }

  root.appendChild(style);
  root.appendChild(bar);
  (document.body || document.documentElement).appendChild(host);
})();
