// Switchboard web chat: the customer's side of the /customer Socket.IO namespace.
// Customer and agent text is only ever rendered with textContent.
(function () {
  "use strict";

  var STRINGS = {
    en: {
      title: "Chat with us", language: "Language", name: "Name", email: "Email (optional)",
      topic: "Topic", billing: "Billing", technical: "Technical support", account: "Account",
      complaint: "Complaint", start: "Start chat", send: "Send",
      placeholder: "Type your message…", connecting: "Connecting…",
      queued: "You are number {n} in the queue. An agent will be with you shortly.",
      assigned: "{agent} has joined the chat.", assignedAnon: "An agent has joined the chat.",
      ended: "The conversation has ended. Send a message to start a new one.",
      disconnected: "Connection lost. Reconnecting…", tooLarge: "Your message is too long.",
      failed: "Your message could not be sent. Please try again.", nameRequired: "Please enter your name.",
      noTenant: "This chat page is not configured (no tenant).",
      you: "You", agent: "Agent", system: "Notice"
    },
    ko: {
      title: "상담 채팅", language: "언어", name: "이름", email: "이메일 (선택)",
      topic: "문의 유형", billing: "요금/결제", technical: "기술 지원", account: "계정",
      complaint: "불만 접수", start: "채팅 시작", send: "보내기",
      placeholder: "메시지를 입력하세요…", connecting: "연결 중…",
      queued: "대기 순서 {n}번째입니다. 곧 상담원이 연결됩니다.",
      assigned: "{agent} 상담원이 연결되었습니다.", assignedAnon: "상담원이 연결되었습니다.",
      ended: "상담이 종료되었습니다. 메시지를 보내면 새 상담이 시작됩니다.",
      disconnected: "연결이 끊겼습니다. 다시 연결하는 중…", tooLarge: "메시지가 너무 깁니다.",
      failed: "메시지를 보내지 못했습니다. 다시 시도해 주세요.", nameRequired: "이름을 입력해 주세요.",
      noTenant: "채팅 페이지 설정이 올바르지 않습니다.",
      you: "나", agent: "상담원", system: "안내"
    },
    zh: {
      title: "在线客服", language: "语言", name: "姓名", email: "电子邮箱（可选）",
      topic: "咨询类型", billing: "账单", technical: "技术支持", account: "账户",
      complaint: "投诉", start: "开始聊天", send: "发送",
      placeholder: "请输入消息…", connecting: "正在连接…",
      queued: "您当前排在第 {n} 位，客服将尽快为您服务。",
      assigned: "客服 {agent} 已加入对话。", assignedAnon: "客服已加入对话。",
      ended: "对话已结束。发送消息即可开始新的对话。",
      disconnected: "连接已断开，正在重新连接…", tooLarge: "消息过长。",
      failed: "消息发送失败，请重试。", nameRequired: "请输入您的姓名。",
      noTenant: "聊天页面配置有误。",
      you: "我", agent: "客服", system: "提示"
    },
    ja: {
      title: "チャットでお問い合わせ", language: "言語", name: "お名前", email: "メールアドレス（任意）",
      topic: "お問い合わせ内容", billing: "料金・請求", technical: "技術サポート", account: "アカウント",
      complaint: "苦情", start: "チャットを開始", send: "送信",
      placeholder: "メッセージを入力…", connecting: "接続中…",
      queued: "現在 {n} 番目にお待ちいただいています。まもなく担当者が対応します。",
      assigned: "担当者 {agent} が参加しました。", assignedAnon: "担当者が参加しました。",
      ended: "チャットは終了しました。メッセージを送ると新しいチャットを開始します。",
      disconnected: "接続が切れました。再接続しています…", tooLarge: "メッセージが長すぎます。",
      failed: "メッセージを送信できませんでした。もう一度お試しください。", nameRequired: "お名前を入力してください。",
      noTenant: "チャットページの設定が正しくありません。",
      you: "あなた", agent: "担当者", system: "お知らせ"
    }
  };

  var body = document.body;
  var params = new URLSearchParams(window.location.search);
  var tenant = (params.get("tenant") || body.dataset.tenant || "").trim();
  var maxBytes = parseInt(body.dataset.maxMessageBytes, 10) || 4000;
  var storageKey = "switchboard.chat." + tenant;

  var el = {
    prechat: document.getElementById("prechat"),
    prechatError: document.getElementById("prechat-error"),
    language: document.getElementById("language"),
    name: document.getElementById("name"),
    email: document.getElementById("email"),
    topic: document.getElementById("topic"),
    conversation: document.getElementById("conversation"),
    status: document.getElementById("status"),
    messages: document.getElementById("messages"),
    error: document.getElementById("error"),
    composer: document.getElementById("composer"),
    text: document.getElementById("text"),
    send: document.getElementById("send")
  };

  var lang = "en";
  var socket = null;
  var profile = null;
  var seen = new Set();

  // The server's limit is in UTF-8 bytes (a Hangul or Han character is 3).
  function utf8Length(text) {
    var n = 0;
    for (var i = 0; i < text.length; i++) {
      var c = text.charCodeAt(i);
      if (c < 0x80) n += 1;
      else if (c < 0x800) n += 2;
      else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) { n += 4; i++; }
      else n += 3;
    }
    return n;
  }

  function t(key, values) {
    var text = (STRINGS[lang] || STRINGS.en)[key] || STRINGS.en[key] || key;
    Object.keys(values || {}).forEach(function (name) {
      text = text.split("{" + name + "}").join(String(values[name]));
    });
    return text;
  }

  function setLanguage(code) {
    lang = STRINGS[code] ? code : "en";
    document.documentElement.lang = lang;
    document.querySelectorAll("[data-i18n]").forEach(function (node) {
      node.textContent = t(node.dataset.i18n);
    });
    document.querySelectorAll("[data-i18n-placeholder]").forEach(function (node) {
      node.placeholder = t(node.dataset.i18nPlaceholder);
    });
    document.title = t("title");
  }

  function load() {
    try {
      var state = JSON.parse(window.localStorage.getItem(storageKey) || "null");
      return state && typeof state === "object" ? state : null;
    } catch (e) {
      return null;
    }
  }

  function save(state) {
    try {
      window.localStorage.setItem(storageKey, JSON.stringify(state));
    } catch (e) {
      // Private browsing may refuse storage; the chat still works, it just won't resume.
    }
  }

  function showError(node, text) {
    node.textContent = text || "";
    node.hidden = !text;
  }

  function setStatus(text) {
    el.status.textContent = text || "";
  }

  function showStatus(s) {
    if (!s || typeof s !== "object") return;
    if (s.state === "queued") setStatus(t("queued", { n: s.position }));
    else if (s.state === "assigned") {
      setStatus(s.agent_name ? t("assigned", { agent: s.agent_name }) : t("assignedAnon"));
    } else if (s.state === "ended") setStatus(t("ended"));
  }

  function formatTime(iso) {
    var when = new Date(iso);
    if (isNaN(when.getTime())) return "";
    try {
      return when.toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit" });
    } catch (e) {
      return when.toISOString().slice(11, 16);
    }
  }

  function render(m) {
    if (!m || typeof m !== "object" || seen.has(m.message_id)) return;
    seen.add(m.message_id);
    var author = m.author === "customer" || m.author === "agent" ? m.author : "system";
    var item = document.createElement("li");
    item.className = "message " + author;
    var meta = document.createElement("div");
    meta.className = "meta";
    var who = author === "customer" ? t("you") : author === "agent" ? (m.agent_name || t("agent")) : t("system");
    var time = formatTime(m.sent_at);
    meta.textContent = time ? who + " · " + time : who;
    var text = document.createElement("div");
    text.className = "text";
    text.textContent = String(m.text == null ? "" : m.text);
    item.appendChild(meta);
    item.appendChild(text);
    el.messages.appendChild(item);
    el.messages.scrollTop = el.messages.scrollHeight;
  }

  function authPayload() {
    var auth = { tenant: tenant, name: profile.name, language: profile.language };
    if (profile.email) auth.email = profile.email;
    if (profile.topic) auth.topic = profile.topic;
    if (profile.visitor_id) auth.visitor_id = profile.visitor_id;
    return auth;
  }

  function backToForm(message) {
    if (socket) {
      socket.disconnect();
      socket = null;
    }
    el.conversation.hidden = true;
    el.prechat.hidden = false;
    showError(el.prechatError, message);
  }

  function connect(p) {
    profile = p;
    setLanguage(p.language);
    el.prechat.hidden = true;
    el.conversation.hidden = false;
    setStatus(t("connecting"));
    // auth is a function so that every reconnection sends the visitor id the server gave us.
    socket = io("/customer", {
      auth: function (cb) { cb(authPayload()); }
    });
    socket.on("connect", function () { showError(el.error, ""); });
    socket.on("session", function (data) {
      if (!data || typeof data !== "object") return;
      profile.visitor_id = data.visitor_id;
      save(profile);
      seen = new Set();
      el.messages.replaceChildren();
      (Array.isArray(data.messages) ? data.messages : []).forEach(render);
      if (!data.contact_id) setStatus("");
    });
    socket.on("message", render);
    socket.on("status", showStatus);
    socket.on("error", function (e) {
      showError(el.error, e && e.code === "message_too_large" ? t("tooLarge") : (e && e.message) || t("failed"));
    });
    socket.on("disconnect", function () { setStatus(t("disconnected")); });
    socket.on("connect_error", function (err) {
      if (socket && socket.active) return; // a network problem: the client retries by itself
      var reason = (err && err.message) || "";
      if (reason.indexOf("visitor_id") === 0 && profile.visitor_id) {
        delete profile.visitor_id; // a stale id: start afresh
        save(profile);
        socket.connect();
        return;
      }
      backToForm(reason);
    });
  }

  function sendMessage() {
    var text = el.text.value;
    if (!text.trim() || !socket) return;
    if (utf8Length(text) > maxBytes) {
      showError(el.error, t("tooLarge"));
      return;
    }
    el.send.disabled = true;
    socket.timeout(10000).emit("message", { text: text }, function (err, ack) {
      el.send.disabled = false;
      if (err || !ack) {
        showError(el.error, t("failed"));
      } else if (!ack.ok) {
        if (String(ack.error || "").indexOf("message too large") !== 0) showError(el.error, ack.error || t("failed"));
      } else {
        showError(el.error, "");
        el.text.value = "";
        el.text.focus();
      }
    });
  }

  el.language.addEventListener("change", function () { setLanguage(el.language.value); });

  el.prechat.addEventListener("submit", function (event) {
    event.preventDefault();
    var name = el.name.value.trim();
    if (!name) {
      showError(el.prechatError, t("nameRequired"));
      el.name.focus();
      return;
    }
    showError(el.prechatError, "");
    var previous = load() || {};
    connect({
      name: name,
      email: el.email.value.trim(),
      language: el.language.value,
      topic: el.topic.value,
      visitor_id: previous.visitor_id
    });
  });

  el.composer.addEventListener("submit", function (event) {
    event.preventDefault();
    sendMessage();
  });

  el.text.addEventListener("keydown", function (event) {
    // Enter sends, Shift+Enter is a new line; never send mid-composition (Korean, Chinese, Japanese IMEs).
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      sendMessage();
    }
  });

  var browser = (navigator.language || "en").slice(0, 2).toLowerCase();
  var saved = load();
  el.language.value = saved && STRINGS[saved.language] ? saved.language : STRINGS[browser] ? browser : "en";
  setLanguage(el.language.value);
  if (!tenant) {
    showError(el.prechatError, t("noTenant"));
    el.prechat.querySelector("button").disabled = true;
  } else if (saved && saved.visitor_id && saved.language && saved.name) {
    connect(saved);
  } else if (saved) {
    el.name.value = saved.name || "";
    el.email.value = saved.email || "";
  }
})();
