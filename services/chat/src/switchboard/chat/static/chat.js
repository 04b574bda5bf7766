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
      queuedWait: "You are number {n} in the queue (about {m} min).", typing: "{who} is typing…",
      delivered: "Delivered", read: "Read", attach: "Attach file", end: "End chat", rateAsk: "How did we do?",
      rateComment: "Anything to add? (optional)", rateThanks: "Thank you for your rating.",
      transcriptTo: "Email me the transcript", transcript: "Send transcript", transcriptSent: "The transcript is on its way.",
      offline: "No agent is available right now. Leave a message and we will answer by email.",
      closed: "We are closed right now. Leave a message and we will answer by email.",
      offlineText: "Your message", leaveMessage: "Leave a message", offlineSent: "Thank you. We will answer by email.",
      emailRequired: "Please enter your email address.", uploadFailed: "The file could not be sent: {reason}",
      throttled: "You are sending too fast. Please wait a moment.",
      offlineEmail: "Email", back: "Back",
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
      queuedWait: "대기 순서 {n}번째입니다 (약 {m}분).", typing: "{who} 입력 중…",
      delivered: "전달됨", read: "읽음", attach: "파일 첨부", end: "상담 종료", rateAsk: "상담은 만족스러우셨나요?",
      rateComment: "의견을 남겨 주세요 (선택)", rateThanks: "평가해 주셔서 감사합니다.",
      transcriptTo: "대화 내용을 이메일로 받기", transcript: "대화 내용 보내기", transcriptSent: "대화 내용을 보내 드렸습니다.",
      offline: "지금은 상담 가능한 상담원이 없습니다. 메시지를 남기시면 이메일로 답변드립니다.",
      closed: "지금은 상담 시간이 아닙니다. 메시지를 남기시면 이메일로 답변드립니다.",
      offlineText: "남기실 메시지", leaveMessage: "메시지 남기기", offlineSent: "감사합니다. 이메일로 답변드리겠습니다.",
      emailRequired: "이메일 주소를 입력해 주세요.", uploadFailed: "파일을 보내지 못했습니다: {reason}",
      throttled: "메시지를 너무 빨리 보내고 있습니다. 잠시 후 다시 시도해 주세요.",
      offlineEmail: "이메일", back: "돌아가기",
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
      queuedWait: "您当前排在第 {n} 位（约 {m} 分钟）。", typing: "{who} 正在输入…",
      delivered: "已送达", read: "已读", attach: "添加文件", end: "结束对话", rateAsk: "您对本次服务满意吗？",
      rateComment: "还有什么想说的？（可选）", rateThanks: "感谢您的评价。",
      transcriptTo: "通过邮件接收聊天记录", transcript: "发送聊天记录", transcriptSent: "聊天记录已发送。",
      offline: "目前没有可用的客服。请留言，我们会通过邮件回复您。",
      closed: "现在不是服务时间。请留言，我们会通过邮件回复您。",
      offlineText: "留言内容", leaveMessage: "留言", offlineSent: "谢谢，我们会通过邮件回复您。",
      emailRequired: "请输入您的电子邮箱。", uploadFailed: "文件发送失败：{reason}",
      throttled: "发送过于频繁，请稍候。",
      offlineEmail: "电子邮箱", back: "返回",
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
      queuedWait: "現在 {n} 番目です（約 {m} 分）。", typing: "{who} が入力中…",
      delivered: "配信済み", read: "既読", attach: "ファイルを添付", end: "チャットを終了", rateAsk: "対応はいかがでしたか？",
      rateComment: "ご意見（任意）", rateThanks: "ご評価ありがとうございます。",
      transcriptTo: "会話の記録をメールで受け取る", transcript: "記録を送信", transcriptSent: "会話の記録を送信しました。",
      offline: "現在対応できる担当者がいません。メッセージを残していただければメールでお返事します。",
      closed: "現在は営業時間外です。メッセージを残していただければメールでお返事します。",
      offlineText: "メッセージ", leaveMessage: "メッセージを残す", offlineSent: "ありがとうございます。メールでお返事します。",
      emailRequired: "メールアドレスを入力してください。", uploadFailed: "ファイルを送信できませんでした: {reason}",
      throttled: "送信が速すぎます。少しお待ちください。",
      offlineEmail: "メールアドレス", back: "戻る",
      you: "あなた", agent: "担当者", system: "お知らせ"
    }
  };

  var body = document.body;
  var params = new URLSearchParams(window.location.search);
  var tenant = (params.get("tenant") || body.dataset.tenant || "").trim();
  var maxBytes = parseInt(body.dataset.maxMessageBytes, 10) || 4000;
  var storageKey = "switchboard.chat." + tenant;
  var languageKey = "switchboard.chat.language";

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
    send: document.getElementById("send"),
    typing: document.getElementById("typing"),
    file: document.getElementById("file"),
    attach: document.getElementById("attach"),
    end: document.getElementById("end"),
    closing: document.getElementById("closing"),
    stars: document.getElementById("stars"),
    rateComment: document.getElementById("rate-comment"),
    rateDone: document.getElementById("rate-done"),
    transcriptPanel: document.getElementById("transcript-panel"),
    transcriptEmail: document.getElementById("transcript-email"),
    transcript: document.getElementById("transcript"),
    transcriptDone: document.getElementById("transcript-done"),
    offline: document.getElementById("offline"),
    offlineReason: document.getElementById("offline-reason"),
    offlineText: document.getElementById("offline-text"),
    offlineEmail: document.getElementById("offline-email"),
    offlineBack: document.getElementById("offline-back"),
    offlineError: document.getElementById("offline-error")
  };
  var lastSeq = 0;          // the highest history position seen: a resume asks for what follows
  var contactId = null;     // the open (or last) contact
  var endedId = null;       // the chat that ended, which the closing panel rates
  var outbox = [];          // messages not yet acknowledged: re-sent (same client_id) after a drop
  var mine = {};            // message_id -> its list item, for delivery receipts
  var positionTimer = null;
  var typingSent = 0;

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
    document.querySelectorAll("[data-i18n-label]").forEach(function (node) {
      node.setAttribute("aria-label", t(node.dataset.i18nLabel));
    });
    document.title = t("title");
  }

  // The language chosen is kept for the next visit (storage) and in the address (a reload,
  // a copied link).
  function rememberLanguage(code) {
    try {
      window.localStorage.setItem(languageKey, code);
    } catch (e) {
      // Private browsing may refuse storage; the address still carries it.
    }
    var url = new URL(window.location.href);
    if (url.searchParams.get("lang") !== code) {
      url.searchParams.set("lang", code);
      window.history.replaceState(window.history.state, "", url.toString());
    }
  }

  function storedLanguage() {
    try {
      return window.localStorage.getItem(languageKey) || "";
    } catch (e) {
      return "";
    }
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
    if (s.state === "queued" || s.state === "assigned") {
      if (endedId) resetClosing();
      el.end.hidden = false;
    }
    if (s.state === "queued") {
      if (s.estimated_wait_seconds != null) {
        setStatus(t("queuedWait", { n: s.position, m: Math.max(1, Math.round(s.estimated_wait_seconds / 60)) }));
      } else setStatus(t("queued", { n: s.position }));
      pollPosition();
    } else if (s.state === "assigned") {
      setStatus(s.agent_name ? t("assigned", { agent: s.agent_name }) : t("assignedAnon"));
    } else if (s.state === "ended") {
      setStatus(t("ended"));
      showClosing(s.contact_id || contactId);
    }
    if (s.state !== "queued" && positionTimer) {
      window.clearInterval(positionTimer);
      positionTimer = null;
    }
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
    if (!m || typeof m !== "object") return;
    if (typeof m.seq === "number" && m.seq > lastSeq) {
      lastSeq = m.seq;
      if (profile) { profile.lastSeq = lastSeq; save(profile); }
    }
    if (m.contact_id) contactId = m.contact_id;
    if (seen.has(m.message_id)) return;
    seen.add(m.message_id);
    if (m.author === "agent" && socket) {
      socket.emit("receipt", { message_id: m.message_id, state: document.hidden ? "delivered" : "read" });
      el.typing.hidden = true;
    }
    var author = m.author === "customer" || m.author === "agent" ? m.author : "system";
    var item = document.createElement("li");
    item.className = "message " + author;
    item.dataset.id = String(m.message_id);
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
    if (m.attachment && typeof m.attachment === "object" && /^\/files\//.test(String(m.attachment.url))) {
      var link = document.createElement("a");
      link.href = String(m.attachment.url);
      link.rel = "noopener";
      link.target = "_blank";
      link.textContent = String(m.attachment.filename || "file");
      if (/^image\/(png|jpeg|gif|webp)$/.test(String(m.attachment.content_type))) {
        var img = document.createElement("img");
        img.src = String(m.attachment.url);
        img.alt = String(m.attachment.filename || "");
        img.className = "attachment";
        link.replaceChildren(img);
      }
      item.appendChild(link);
    }
    if (author === "customer") {
      var receipt = document.createElement("div");
      receipt.className = "receipt";
      item.appendChild(receipt);
      mine[m.message_id] = receipt;
    }
    el.messages.appendChild(item);
    el.messages.scrollTop = el.messages.scrollHeight;
  }

  function authPayload() {
    var auth = { token: profile.token, name: profile.name, language: profile.language, since: lastSeq };
    if (profile.email) auth.email = profile.email;
    if (profile.topic) auth.topic = profile.topic;
    return auth;
  }

  // A signed visitor token (kept in localStorage) names this visitor across reloads.
  function fetchToken(p) {
    return fetch("/api/visitor-token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ tenant: tenant, token: p.token || null })
    }).then(function (r) {
      return r.json().then(function (data) {
        if (!r.ok) throw new Error(data.error || r.statusText);
        p.token = data.token;
        return p;
      });
    });
  }

  function flushOutbox() {
    outbox.forEach(function (item) { emitMessage(item); });
  }

  function emitMessage(item) {
    if (!socket || !socket.connected || item.inFlight) return;
    item.inFlight = true;
    socket.timeout(10000).emit("message", { text: item.text, client_id: item.client_id }, function (err, ack) {
      item.inFlight = false;
      if (err || !ack) return; // still in the outbox: re-sent on reconnect
      outbox = outbox.filter(function (o) { return o !== item; });
      if (!ack.ok) {
        var e = String(ack.error || "");
        if (e.indexOf("too many") === 0) showError(el.error, t("throttled"));
        else if (e.indexOf("message too large") !== 0) showError(el.error, e || t("failed"));
      } else {
        showError(el.error, "");
        if (endedId && ack.contact_id !== endedId) resetClosing();
        if (ack.contact_id !== endedId) el.end.hidden = false;
        contactId = ack.contact_id;
      }
    });
  }

  function showReceipt(r) {
    if (!r || r.by !== "agent") return;
    var node = mine[r.message_id];
    if (!node) return;
    // Read (or delivered) up to this one: mark every earlier message of ours too.
    Object.keys(mine).forEach(function (id) {
      if (mine[id].textContent !== t("read")) mine[id].textContent = r.state === "read" ? t("read") : t("delivered");
      if (id === r.message_id) return;
    });
    node.textContent = r.state === "read" ? t("read") : t("delivered");
  }

  // The place in the queue and its estimated wait: asked at once, then every 10 s.
  function pollPosition() {
    if (positionTimer) return;
    function ask() {
      if (!socket || !socket.connected) return;
      socket.emit("position", {}, function (ack) {
        if (endedId) return; // an answer overtaken by the end of the chat
        if (ack && ack.ok && ack.status) showStatus(ack.status);
      });
    }
    positionTimer = window.setInterval(ask, 10000);
    ask();
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
    lastSeq = p.lastSeq || 0;
    // A reload starts with an empty page: ask for the whole history once.
    if (!seen.size) lastSeq = 0;
    // auth is a function so that every reconnection sends the token and the last seq seen.
    socket = io("/customer", {
      auth: function (cb) { cb(authPayload()); }
    });
    socket.on("connect", function () { showError(el.error, ""); flushOutbox(); });
    socket.on("session", function (data) {
      if (!data || typeof data !== "object") return;
      profile.visitor_id = data.visitor_id;
      save(profile);
      if (data.contact_id) { contactId = data.contact_id; el.end.hidden = false; }
      // Only what was missed comes back (since lastSeq); render skips what we already show.
      (Array.isArray(data.messages) ? data.messages : []).forEach(render);
      if (data.receipts && data.receipts.read) showReceipt({ by: "agent", state: "read", message_id: data.receipts.read });
      if (!data.contact_id) setStatus("");
    });
    socket.on("message", render);
    socket.on("status", showStatus);
    socket.on("receipt", showReceipt);
    socket.on("typing", function (d) {
      if (!d || d.author !== "agent") return;
      el.typing.textContent = t("typing", { who: t("agent") });
      el.typing.hidden = !d.typing;
    });
    socket.on("error", function (e) {
      var code = e && e.code;
      showError(el.error, code === "message_too_large" ? t("tooLarge") : code === "rate_limited" ? t("throttled") : (e && e.message) || t("failed"));
    });
    socket.on("disconnect", function () { setStatus(t("disconnected")); });
    socket.on("connect_error", function (err) {
      if (socket && socket.active) return; // a network problem: the client retries by itself
      var reason = (err && err.message) || "";
      if (reason.indexOf("visitor token") === 0 && !profile.renewed) {
        profile.renewed = true; // an expired token: renew it (same visitor) and try again
        fetchToken(profile).then(function () { save(profile); socket.connect(); }, function (e) { backToForm(e.message); });
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
    var item = { text: text, client_id: "c" + Date.now().toString(36) + Math.random().toString(36).slice(2, 10) };
    outbox.push(item);
    el.text.value = "";
    el.text.focus();
    emitMessage(item);
  }

  // The closing panel: shown once a chat has ended, for that chat; a new chat starts it afresh.
  function showClosing(id) {
    if (id && id !== endedId) resetClosing();
    endedId = id || endedId;
    el.end.hidden = true;
    if (!endedId) return;
    el.closing.hidden = false;
    // A transcript goes only to the address of the pre-chat form (the server refuses others).
    var email = (profile && profile.email) || "";
    el.transcriptPanel.hidden = !email;
    el.transcriptEmail.value = email;
  }

  function resetClosing() {
    endedId = null;
    el.closing.hidden = true;
    el.stars.hidden = false;
    el.rateComment.hidden = false;
    el.rateComment.value = "";
    el.rateDone.hidden = true;
    el.transcriptDone.hidden = true;
  }

  function endChat() {
    el.end.disabled = true;
    if (!socket || !socket.connected) { el.end.disabled = false; showError(el.error, t("failed")); return; }
    socket.timeout(10000).emit("end", {}, function (err, ack) {
      el.end.disabled = false;
      if (err || !ack) { showError(el.error, t("failed")); return; }
      if (!ack.ok) { showError(el.error, String(ack.error || "") || t("failed")); return; }
      showError(el.error, "");
      if (positionTimer) { window.clearInterval(positionTimer); positionTimer = null; }
      setStatus(t("ended"));
      showClosing(ack.contact_id || null);
    });
  }

  function startOrOffline(p) {
    fetch("/api/availability?tenant=" + encodeURIComponent(tenant) + "&language=" + encodeURIComponent(p.language))
      .then(function (r) { return r.json(); })
      .catch(function () { return { available: true }; })
      .then(function (a) {
        if (a && a.available === false) {
          profile = p;
          el.prechat.hidden = true;
          el.offline.hidden = false;
          el.offlineReason.textContent = a.reason === "closed" ? t("closed") : t("offline");
          el.offlineEmail.value = p.email || "";
          showError(el.offlineError, "");
          (p.email ? el.offlineText : el.offlineEmail).focus();
        } else {
          fetchToken(p).then(function () { save(p); connect(p); }, function (e) { showError(el.prechatError, e.message); });
        }
      });
  }

  el.language.addEventListener("change", function () {
    setLanguage(el.language.value);
    rememberLanguage(lang);
  });

  el.offlineBack.addEventListener("click", function () {
    el.offline.hidden = true;
    el.prechat.hidden = false;
    showError(el.offlineError, "");
    el.name.focus();
  });

  el.prechat.addEventListener("submit", function (event) {
    event.preventDefault();
    var name = el.name.value.trim();
    if (!name) {
      showError(el.prechatError, t("nameRequired"));
      el.name.focus();
      return;
    }
    showError(el.prechatError, "");
    rememberLanguage(el.language.value);
    var previous = load() || {};
    startOrOffline({
      name: name,
      email: el.email.value.trim(),
      language: el.language.value,
      topic: el.topic.value,
      token: previous.token
    });
  });

  el.offline.addEventListener("submit", function (event) {
    event.preventDefault();
    var email = el.offlineEmail.value.trim();
    if (!email || !el.offlineEmail.checkValidity()) {
      showError(el.offlineError, t("emailRequired"));
      el.offlineEmail.focus();
      return;
    }
    profile.email = email;
    var text = el.offlineText.value;
    if (!text.trim()) { el.offlineText.focus(); return; }
    showError(el.offlineError, "");
    fetchToken(profile).then(function () {
      return fetch("/api/offline", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Authorization": "Bearer " + profile.token },
        body: JSON.stringify({ name: profile.name, email: profile.email, language: profile.language, topic: profile.topic, text: text })
      });
    }).then(function (r) {
      return r.json().then(function (d) {
        if (!r.ok) throw new Error(d.error || r.statusText);
        el.offline.replaceChildren();
        var done = document.createElement("p");
        done.className = "status";
        done.textContent = t("offlineSent");
        el.offline.appendChild(done);
      });
    }).catch(function (e) { showError(el.offlineError, e.message); });
  });

  el.text.addEventListener("input", function () {
    var now = Date.now();
    if (socket && socket.connected && now - typingSent > 2000) {
      typingSent = now;
      socket.emit("typing", { typing: true });
    }
  });

  el.file.addEventListener("change", function () {
    var file = el.file.files && el.file.files[0];
    if (!file || !profile) return;
    fetch("/api/upload?filename=" + encodeURIComponent(file.name), {
      method: "POST",
      headers: { "Content-Type": file.type || "application/octet-stream", "Authorization": "Bearer " + profile.token },
      body: file
    }).then(function (r) {
      return r.json().then(function (d) { if (!r.ok) throw new Error(d.error || r.statusText); });
    }).catch(function (e) { showError(el.error, t("uploadFailed", { reason: e.message })); });
    el.file.value = "";
  });

  el.end.addEventListener("click", endChat);
  el.attach.addEventListener("click", function () { el.file.click(); });

  el.stars.addEventListener("click", function (event) {
    var score = parseInt(event.target && event.target.dataset ? event.target.dataset.score : "", 10);
    if (!score || !socket || !endedId) return;
    socket.emit("rate", { contact_id: endedId, score: score, comment: el.rateComment.value }, function (ack) {
      if (ack && ack.ok) { el.stars.hidden = true; el.rateComment.hidden = true; el.rateDone.hidden = false; }
      else showError(el.error, (ack && ack.error) || t("failed"));
    });
  });

  el.transcript.addEventListener("click", function () {
    if (!socket || !endedId) return;
    socket.emit("transcript", { contact_id: endedId, email: el.transcriptEmail.value.trim() }, function (ack) {
      if (ack && ack.ok) el.transcriptDone.hidden = false;
      else showError(el.error, (ack && ack.error) || t("failed"));
    });
  });

  document.addEventListener("visibilitychange", function () {
    if (document.hidden || !socket) return;
    // Coming back to the page: what the agent wrote is now read.
    var last = null;
    el.messages.querySelectorAll("li.agent").forEach(function (li) { last = li; });
    if (last && last.dataset.id) socket.emit("receipt", { message_id: last.dataset.id, state: "read" });
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

  // The language: the resumed chat's, else the address's (?lang=), else the last one chosen,
  // else the embedding site's default (widget.js data-language), else the browser's.
  var saved = load();
  var candidates = [
    saved && saved.token && saved.name ? saved.language : "",
    params.get("lang") || "",
    storedLanguage(),
    params.get("default_lang") || "",
    navigator.language || ""
  ].map(function (c) { return String(c).slice(0, 2).toLowerCase(); });
  el.language.value = candidates.filter(function (c) { return STRINGS[c]; })[0] || "en";
  setLanguage(el.language.value);
  if (!tenant) {
    showError(el.prechatError, t("noTenant"));
    el.prechat.querySelector("button").disabled = true;
  } else if (saved && saved.token && saved.language && saved.name) {
    connect(saved); // a reload: resume with the stored visitor token
  } else if (saved) {
    el.name.value = saved.name || "";
    el.email.value = saved.email || "";
  }
})();
