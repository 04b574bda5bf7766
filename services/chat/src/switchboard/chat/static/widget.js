// Switchboard chat widget loader. Embed with one tag:
//   <script src="https://chat.example.com/widget.js" data-tenant="demo" async></script>
// It adds a launcher button and, on click, an iframe with the chat panel served by the chat
// itself (so the panel's scripts, storage and socket stay on the chat's origin). Optional
// attributes: data-language (ko, zh, en, ja), data-position (right|left), data-color (#rrggbb).
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
  var LABELS = { ko: "상담 채팅", zh: "在线客服", ja: "チャット", en: "Chat with us" };
  var lang = (language || navigator.language || "en").slice(0, 2).toLowerCase();
  var label = LABELS[lang] || LABELS.en;

  // A shadow root keeps the host page's CSS away from the launcher and vice versa.
  var host = document.createElement("div");
  host.setAttribute("data-switchboard-widget", "");
  var root = host.attachShadow ? host.attachShadow({ mode: "closed" }) : host;
  var style = document.createElement("style");
  style.textContent =
    ":host{all:initial}" +
    ".sb-launch{position:fixed;bottom:20px;" + (left ? "left" : "right") + ":20px;z-index:2147483000;" +
    "border:0;border-radius:28px;padding:14px 20px;font:600 15px system-ui,sans-serif;color:#fff;" +
    "background:" + color + ";box-shadow:0 4px 16px rgba(0,0,0,.25);cursor:pointer}" +
    ".sb-panel{position:fixed;bottom:84px;" + (left ? "left" : "right") + ":20px;z-index:2147483000;" +
    "width:380px;max-width:calc(100vw - 40px);height:600px;max-height:calc(100vh - 110px);border:0;" +
    "border-radius:12px;box-shadow:0 8px 32px rgba(0,0,0,.3);background:#fff}" +
    "[hidden]{display:none!important}";
  var button = document.createElement("button");
  button.className = "sb-launch";
  button.type = "button";
  button.textContent = label;
  button.setAttribute("aria-expanded", "false");
  var frame = null;

  button.addEventListener("click", function () {
    if (!frame) {
      var src = new URL("/widget", base);
      src.searchParams.set("tenant", tenant);
      // The site's language is a default: a language the customer chose in the panel wins.
      if (language) src.searchParams.set("default_lang", language);
      frame = document.createElement("iframe");
      frame.className = "sb-panel";
      frame.title = label;
      frame.src = src.toString();
      frame.setAttribute("allow", "clipboard-write");
      root.appendChild(frame);
      button.setAttribute("aria-expanded", "true");
      return;
    }
    frame.hidden = !frame.hidden;
    button.setAttribute("aria-expanded", String(!frame.hidden));
  });

  root.appendChild(style);
  root.appendChild(button);
  (document.body || document.documentElement).appendChild(host);
})();
