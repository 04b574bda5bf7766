/* Switchboard customer portal: sign-in by a one-time emailed link, the customer's own requests
   with their conversation and a reply box, the service catalogue's request forms, new requests
   with suggested articles, and the public knowledge base with "was this helpful" votes. Strings
   in Korean, Chinese, English and Japanese; every text is set with textContent. */
(function () {
  "use strict";

  var STRINGS = {
    ko: {
      code_title: "또는 문의 번호로 로그인", reference: "문의 번호 (예: C-7K3M9Q)", send_code: "이메일로 코드 받기",
      code_sent: "등록된 문의라면 그 문의의 이메일 주소로 6자리 코드를 보냈습니다. 코드는 10분 동안 한 번만 쓸 수 있습니다.",
      code: "코드", sign_in: "로그인", bad_reference: "문의 번호를 입력하세요 (예: C-7K3M9Q).",
      code_invalid: "코드가 틀렸거나 만료되었거나 이미 사용되었습니다. 새 코드를 받으세요.",
      catalogue_title: "서비스 요청", choose: "선택하세요", cancel: "취소",
      form_invalid: "표시된 항목을 확인하세요.", field_required: "필수 항목입니다.",
      field_choice: "목록에서 선택하세요.", field_date: "날짜를 YYYY-MM-DD 형식으로 입력하세요.",
      field_too_long: "{max}자 이하로 입력하세요.", field_format: "형식이 올바르지 않습니다.",
      field_unknown: "이 양식에 없는 항목입니다.",
      title: "고객 센터", sign_out: "로그아웃", signin_title: "로그인하고 문의 내역 보기",
      email: "이메일", send_link: "로그인 링크 받기",
      link_sent: "등록된 주소라면 로그인 링크를 보냈습니다. 링크는 15분 동안 한 번만 쓸 수 있습니다.",
      my_cases: "내 문의", no_cases: "아직 문의가 없습니다.", reply: "답장", send: "보내기",
      reply_sent: "보냈습니다. 담당자가 여기와 이메일로 답해 드립니다.",
      new_request: "새 문의", subject: "제목", message: "내용",
      suggested: "이 문서가 도움이 될 수 있습니다:", submit_request: "문의 보내기",
      request_sent: "감사합니다. 문의가 접수되었습니다.", kb_title: "도움말",
      kb_placeholder: "도움말 검색", search: "검색", kb_none: "맞는 문서가 없습니다.",
      helpful: "도움이 되었나요?", yes: "예", no: "아니요", thanks: "의견 감사합니다.",
      you: "나", agent: "상담원", signed_in_as: "{email}(으)로 로그인됨",
      link_invalid: "이 링크는 만료되었거나 이미 사용되었습니다. 새 링크를 요청하세요.",
      rate_limited: "요청이 너무 많습니다. 잠시 후 다시 시도하세요.",
      failed: "처리하지 못했습니다. 다시 시도하세요.", bad_email: "올바른 이메일 주소를 입력하세요.",
      status_new: "접수", status_assigned: "배정됨", status_in_progress: "처리 중",
      status_pending_customer: "고객 답변 대기", status_resolved: "해결됨", status_closed: "종료",
      status_pending_review: "검토 중", status_pending_confirmation: "확인 대기"
    },
    zh: {
      code_title: "或使用工单号登录", reference: "工单号（例如 C-7K3M9Q）", send_code: "通过邮件发送验证码",
      code_sent: "如果该工单存在，6 位验证码已发送到其邮箱。验证码 10 分钟内有效，只能使用一次。",
      code: "验证码", sign_in: "登录", bad_reference: "请输入工单号（例如 C-7K3M9Q）。",
      code_invalid: "验证码错误、已过期或已使用。请重新获取。",
      catalogue_title: "服务申请", choose: "请选择", cancel: "取消",
      form_invalid: "请检查标出的字段。", field_required: "此项为必填项。",
      field_choice: "请从列表中选择。", field_date: "请按 YYYY-MM-DD 格式输入日期。",
      field_too_long: "请不要超过 {max} 个字符。", field_format: "格式不正确。",
      field_unknown: "此表单没有该字段。",
      title: "帮助中心", sign_out: "退出", signin_title: "登录查看您的请求",
      email: "电子邮件", send_link: "发送登录链接",
      link_sent: "如果该地址已登记，登录链接已发出。链接 15 分钟内有效，只能使用一次。",
      my_cases: "我的请求", no_cases: "您还没有请求。", reply: "回复", send: "发送",
      reply_sent: "已发送。客服会在这里和通过邮件答复您。",
      new_request: "新请求", subject: "主题", message: "内容",
      suggested: "这些文章也许能解答您的问题：", submit_request: "提交请求",
      request_sent: "谢谢，您的请求已提交。", kb_title: "知识库",
      kb_placeholder: "搜索文章", search: "搜索", kb_none: "没有匹配的文章。",
      helpful: "这篇文章有帮助吗？", yes: "有", no: "没有", thanks: "感谢您的反馈。",
      you: "我", agent: "客服", signed_in_as: "已登录：{email}",
      link_invalid: "此链接已过期或已使用，请重新获取。",
      rate_limited: "请求过于频繁，请稍后再试。",
      failed: "未能完成，请重试。", bad_email: "请输入有效的电子邮件地址。",
      status_new: "新建", status_assigned: "已分配", status_in_progress: "处理中",
      status_pending_customer: "等待您的答复", status_resolved: "已解决", status_closed: "已关闭",
      status_pending_review: "审核中", status_pending_confirmation: "等待确认"
    },
    en: {
      code_title: "Or sign in with your request number", reference: "Request number (e.g. C-7K3M9Q)",
      send_code: "Email me a code",
      code_sent: "If this request is known to us, a 6-digit code is on its way to its email address. It works once, within 10 minutes.",
      code: "Code", sign_in: "Sign in", bad_reference: "Enter the request number, e.g. C-7K3M9Q.",
      code_invalid: "This code is wrong, has expired or was used already. Ask for a new one.",
      catalogue_title: "Request a service", choose: "Choose…", cancel: "Cancel",
      form_invalid: "Check the marked fields.", field_required: "This field is required.",
      field_choice: "Choose one of the listed answers.", field_date: "Enter a date as YYYY-MM-DD.",
      field_too_long: "Use at most {max} characters.", field_format: "This is not in the expected form.",
      field_unknown: "This form has no such field.",
      title: "Help centre", sign_out: "Sign out", signin_title: "Sign in to see your requests",
      email: "Email", send_link: "Email me a sign-in link",
      link_sent: "If this address is known to us, a sign-in link is on its way. It works once, within 15 minutes.",
      my_cases: "My requests", no_cases: "You have no requests yet.", reply: "Reply", send: "Send",
      reply_sent: "Sent. Our team will answer here and by email.",
      new_request: "New request", subject: "Subject", message: "Message",
      suggested: "These articles may answer your question:", submit_request: "Send request",
      request_sent: "Thank you. Your request is with our team.", kb_title: "Knowledge base",
      kb_placeholder: "Search articles", search: "Search", kb_none: "No article matches.",
      helpful: "Was this helpful?", yes: "Yes", no: "No", thanks: "Thank you for your feedback.",
      you: "You", agent: "Agent", signed_in_as: "Signed in as {email}",
      link_invalid: "This link has expired or was used already. Ask for a new one.",
      rate_limited: "Too many requests: please wait a moment.",
      failed: "That did not work. Please try again.", bad_email: "Enter a valid email address.",
      status_new: "New", status_assigned: "Assigned", status_in_progress: "In progress",
      status_pending_customer: "Waiting for you", status_resolved: "Resolved", status_closed: "Closed",
      status_pending_review: "Under review", status_pending_confirmation: "Awaiting confirmation"
    },
    ja: {
      code_title: "またはお問い合わせ番号でログイン", reference: "お問い合わせ番号（例: C-7K3M9Q）", send_code: "コードをメールで受け取る",
      code_sent: "お問い合わせが登録されていれば、そのメールアドレスに6桁のコードを送りました。コードは10分間、一度だけ有効です。",
      code: "コード", sign_in: "ログイン", bad_reference: "お問い合わせ番号を入力してください（例: C-7K3M9Q）。",
      code_invalid: "コードが違うか、期限切れか、使用済みです。新しいコードを受け取ってください。",
      catalogue_title: "サービスの申請", choose: "選択してください", cancel: "キャンセル",
      form_invalid: "印の付いた項目をご確認ください。", field_required: "必須項目です。",
      field_choice: "一覧から選択してください。", field_date: "日付を YYYY-MM-DD の形式で入力してください。",
      field_too_long: "{max}文字以内で入力してください。", field_format: "形式が正しくありません。",
      field_unknown: "このフォームにない項目です。",
      title: "ヘルプセンター", sign_out: "ログアウト", signin_title: "ログインしてお問い合わせを見る",
      email: "メールアドレス", send_link: "ログインリンクを送る",
      link_sent: "登録済みのアドレスであれば、ログインリンクを送信しました。リンクは15分間、一度だけ有効です。",
      my_cases: "お問い合わせ", no_cases: "お問い合わせはまだありません。", reply: "返信", send: "送信",
      reply_sent: "送信しました。担当者がこことメールでお答えします。",
      new_request: "新しいお問い合わせ", subject: "件名", message: "内容",
      suggested: "こちらの記事がお役に立つかもしれません：", submit_request: "送信する",
      request_sent: "ありがとうございます。お問い合わせを受け付けました。", kb_title: "ナレッジベース",
      kb_placeholder: "記事を検索", search: "検索", kb_none: "該当する記事はありません。",
      helpful: "この記事は役に立ちましたか？", yes: "はい", no: "いいえ", thanks: "ご意見ありがとうございます。",
      you: "あなた", agent: "担当者", signed_in_as: "{email} でログイン中",
      link_invalid: "このリンクは期限切れか、すでに使用されています。新しいリンクをご請求ください。",
      rate_limited: "リクエストが多すぎます。しばらくしてからお試しください。",
      failed: "処理できませんでした。もう一度お試しください。", bad_email: "正しいメールアドレスを入力してください。",
      status_new: "受付", status_assigned: "担当者決定", status_in_progress: "対応中",
      status_pending_customer: "お客様の返信待ち", status_resolved: "解決済み", status_closed: "完了",
      status_pending_review: "確認中", status_pending_confirmation: "確認待ち"
    }
  };
  var LANGS = ["ko", "zh", "en", "ja"];
  var params = new URLSearchParams(location.search);
  var tenant = params.get("tenant") || document.body.getAttribute("data-tenant") || "demo";
  var lang = pickLanguage();
  // In the chat widget's panel (widget.js, data-help-centre): a narrower, plainer page.
  if (params.get("embed") === "1") document.body.classList.add("embedded");
  var session = null;
  var currentCase = null;

  function $(id) { return document.getElementById(id); }

  function pickLanguage() {
    var stored = null;
    try { stored = localStorage.getItem("sb-portal-lang"); } catch (e) { stored = null; }
    var candidates = [params.get("lang"), stored, (navigator.language || "en").slice(0, 2)];
    for (var i = 0; i < candidates.length; i++) {
      if (candidates[i] && LANGS.indexOf(candidates[i]) >= 0) return candidates[i];
    }
    return "en";
  }

  function t(key, vars) {
    var s = STRINGS[lang][key] || STRINGS.en[key] || key;
    Object.keys(vars || {}).forEach(function (k) { s = s.split("{" + k + "}").join(vars[k]); });
    return s;
  }

  function applyLanguage() {
    document.documentElement.lang = lang;
    document.title = t("title");
    document.querySelectorAll("[data-i18n]").forEach(function (el) {
      el.textContent = t(el.getAttribute("data-i18n"));
    });
    document.querySelectorAll("[data-i18n-placeholder]").forEach(function (el) {
      el.setAttribute("placeholder", t(el.getAttribute("data-i18n-placeholder")));
    });
    $("ui-lang").value = lang;
    showWho();
  }

  function showError(key) {
    var el = $("error");
    el.textContent = t(key);
    el.hidden = false;
  }

  function clearError() { $("error").hidden = true; }

  function api(method, path, body) {
    var headers = { "content-type": "application/json" };
    if (session) headers.authorization = "Bearer " + session.session;
    return fetch("/api/portal/" + path, {
      method: method, headers: headers, body: body ? JSON.stringify(body) : undefined
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (!r.ok) {
          var err = new Error(data.error || r.statusText);
          err.status = r.status;
          err.data = data;
          throw err;
        }
        return data;
      });
    });
  }

  function failure(err) {
    if (err.status === 429) return showError("rate_limited");
    if (err.status === 401 && session) { signOut(); return showError("link_invalid"); }
    showError("failed");
  }

  function when(ms) {
    if (!ms) return "";
    var locale = { ko: "ko-KR", zh: "zh-CN", en: "en-GB", ja: "ja-JP" }[lang];
    return new Date(ms).toLocaleString(locale, { dateStyle: "medium", timeStyle: "short" });
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // ---- signing in --------------------------------------------------------------------------

  function showWho() {
    $("who").textContent = session ? t("signed_in_as", { email: session.email }) : "";
  }

  function signedIn() {
    var on = !!session;
    $("signin").hidden = on;
    $("cases").hidden = !on;
    $("new-request").hidden = !on;
    $("catalogue").hidden = !on;
    $("sign-out").hidden = !on;
    showWho();
    if (on) { loadCases(); loadCatalogue(); }
  }

  function signOut() {
    session = null;
    catalogue = [];
    closeForm();
    try { sessionStorage.removeItem("sb-portal-session"); } catch (e) { /* private mode */ }
    currentCase = null;
    $("case-detail").hidden = true;
    signedIn();
  }

  $("signin-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    clearError();
    var email = $("signin-email").value.trim();
    if (!/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email)) return showError("bad_email");
    api("POST", "link", { tenant: tenant, email: email, language: lang }).then(function () {
      $("signin-sent").hidden = false;
    }, failure);
  });

  $("sign-out").addEventListener("click", signOut);

  // Sign-in by a case's reference and a 6-digit code mailed to that case's customer.
  $("code-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    clearError();
    var reference = $("code-reference").value.trim();
    if (!/^[A-Za-z0-9-]{1,16}$/.test(reference)) return showError("bad_reference");
    api("POST", "code", { tenant: tenant, reference: reference, language: lang }).then(function () {
      $("code-sent").hidden = false;
      $("code-verify").hidden = false;
      $("code-digits").focus();
    }, failure);
  });

  $("code-verify").addEventListener("submit", function (ev) {
    ev.preventDefault();
    clearError();
    var body = { tenant: tenant, reference: $("code-reference").value.trim(), code: $("code-digits").value.trim() };
    api("POST", "code/session", body).then(function (data) {
      session = data;
      try { sessionStorage.setItem("sb-portal-session", JSON.stringify(data)); } catch (e) { /* ok */ }
      $("code-digits").value = "";
      signedIn();
    }, function (err) {
      if (err.status === 429) return showError("rate_limited");
      showError("code_invalid");
    });
  });

  function exchangeLink() {
    var match = /[#&]login=([^&]+)/.exec(location.hash);
    if (!match) return Promise.resolve();
    // The link is spent either way: take it out of the address bar and the history.
    history.replaceState(null, "", location.pathname + location.search);
    return api("POST", "session", { token: decodeURIComponent(match[1]) }).then(function (data) {
      session = data;
      try { sessionStorage.setItem("sb-portal-session", JSON.stringify(data)); } catch (e) { /* ok */ }
    }, function () { showError("link_invalid"); });
  }

  // ---- the customer's cases ----------------------------------------------------------------

  function statusLabel(node, status) {
    node.textContent = t("status_" + status);
    node.setAttribute("data-status", status);
  }

  function loadCases() {
    api("GET", "cases").then(function (data) {
      var list = $("case-list");
      list.textContent = "";
      $("no-cases").hidden = data.cases.length > 0;
      data.cases.forEach(function (c) {
        var li = el("li");
        li.setAttribute("data-testid", "case-item");
        li.setAttribute("data-case-id", c.case_id);
        var button = el("button");
        button.type = "button";
        button.appendChild(el("span", "subject", c.subject || c.reference));
        button.appendChild(el("span", "meta", c.reference + " · " + when(c.created_at)));
        var status = el("span", "status");
        statusLabel(status, c.status);
        button.appendChild(status);
        button.addEventListener("click", function () { openCase(c.case_id); });
        li.appendChild(button);
        list.appendChild(li);
      });
    }, failure);
  }

  function openCase(caseId) {
    clearError();
    return api("GET", "cases/" + encodeURIComponent(caseId)).then(function (c) {
      currentCase = c.case_id;
      $("case-detail").hidden = false;
      $("case-detail").setAttribute("data-case-id", c.case_id);
      $("case-subject").textContent = c.subject || c.reference;
      $("case-reference").textContent = c.reference;
      statusLabel($("case-status"), c.status);
      var list = $("case-messages");
      list.textContent = "";
      c.messages.forEach(function (m) {
        var li = el("li");
        li.setAttribute("data-testid", "case-msg");
        li.setAttribute("data-author", m.author);
        li.appendChild(el("span", "when", t(m.author === "agent" ? "agent" : "you") + " · " + when(m.at)));
        li.appendChild(el("span", "text", m.text));
        list.appendChild(li);
      });
    }, failure);
  }

  $("reply-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    clearError();
    var text = $("reply-text").value.trim();
    if (!text || !currentCase) return;
    api("POST", "cases/" + encodeURIComponent(currentCase) + "/reply", { text: text }).then(function () {
      $("reply-text").value = "";
      $("reply-sent").hidden = false;
    }, failure);
  });

  // ---- new requests, with suggested articles while typing ----------------------------------

  // A draft is one request being written: what its customer did with the suggestions is counted
  // (shown, an article opened, sent) for the deflection report.
  var draft = null;
  function newDraft() {
    var bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    draft = { id: "d" + Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join(""), shown: false };
  }
  newDraft();
  function seen(event, articleId) {
    if (!session) return;
    if (event === "shown") {
      if (draft.shown) return;
      draft.shown = true;
    }
    api("POST", "kb/seen", { draft_id: draft.id, event: event, article_id: articleId || "" })
      .catch(function () { /* a count, never in the customer's way */ });
  }

  var suggestTimer = null, suggestions = 0;
  function suggest() {
    clearTimeout(suggestTimer);
    var mine = ++suggestions;  // what is typed now: an answer to earlier text is not shown
    suggestTimer = setTimeout(function () {
      var text = ($("request-subject").value + "\n" + $("request-text").value).trim();
      if (text.length < 2) { $("suggestions").hidden = true; return; }
      api("GET", "kb/suggest?tenant=" + encodeURIComponent(tenant) + "&text=" + encodeURIComponent(text))
        .then(function (data) {
          if (mine !== suggestions) return;
          var list = $("suggestion-list");
          list.textContent = "";
          data.hits.forEach(function (h) { list.appendChild(article(h, "suggestion")); });
          $("suggestions").hidden = data.hits.length === 0;
          if (data.hits.length) seen("shown");
        }, function () { if (mine === suggestions) $("suggestions").hidden = true; });
    }, 300);
  }
  $("request-subject").addEventListener("input", suggest);
  $("request-text").addEventListener("input", suggest);

  $("request-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    clearError();
    var subject = $("request-subject").value.trim();
    var text = $("request-text").value.trim();
    if (!subject || !text) return;
    var sent = { subject: subject, text: text, language: lang };
    if (draft.shown) sent.draft_id = draft.id;
    api("POST", "requests", sent).then(function () {
      newDraft();
      $("request-subject").value = "";
      $("request-text").value = "";
      $("suggestions").hidden = true;
      $("request-sent").hidden = false;
      setTimeout(loadCases, 1500);
    }, failure);
  });

  // ---- the service catalogue: request forms of the tenant's case templates -----------------

  var catalogue = [];
  var currentForm = null;
  var PROBLEMS = [
    ["is required", "field_required"], ["is not one of", "field_choice"],
    ["is not a date", "field_date"], ["is longer than", "field_too_long"],
    ["is not in the expected form", "field_format"], ["is not a field", "field_unknown"],
    ["is one line", "field_format"]
  ];

  function local(texts) {
    return (texts && (texts[lang] || texts.en)) || "";
  }

  function loadCatalogue() {
    api("GET", "catalogue").then(function (data) {
      catalogue = data.items;
      showCatalogue();
    }, failure);
  }

  function showCatalogue() {
    var list = $("catalogue-list");
    list.textContent = "";
    $("catalogue").hidden = !session || catalogue.length === 0;
    catalogue.forEach(function (item) {
      var li = el("li");
      li.setAttribute("data-testid", "catalogue-item");
      li.setAttribute("data-template", item.template);
      var button = el("button");
      button.type = "button";
      button.appendChild(el("span", "name", local(item.name)));
      button.appendChild(el("span", "description", local(item.description)));
      button.addEventListener("click", function () { openForm(item, {}); });
      li.appendChild(button);
      list.appendChild(li);
    });
  }

  function formValues() {
    var values = {};
    if (!currentForm) return values;
    currentForm.fields.forEach(function (f) { values[f.name] = $("field-" + f.name).value; });
    return values;
  }

  function openForm(item, values) {
    currentForm = item;
    $("catalogue-sent").hidden = true;
    $("catalogue-invalid").hidden = true;
    $("catalogue-form").setAttribute("data-template", item.template);
    $("catalogue-name").textContent = local(item.name);
    $("catalogue-description").textContent = local(item.description);
    var box = $("catalogue-fields");
    box.textContent = "";
    item.fields.forEach(function (f) {
      var label = el("label");
      var caption = el("span", f.required ? "required" : "", local(f.label) || f.name);
      label.appendChild(caption);
      var input;
      if (f.kind === "multiline") {
        input = el("textarea");
        input.rows = 4;
      } else if (f.kind === "choice") {
        input = el("select");
        var none = el("option", "", t("choose"));
        none.value = "";
        input.appendChild(none);
        f.choices.forEach(function (c) {
          var option = el("option", "", local(c.label) || c.value);
          option.value = c.value;
          input.appendChild(option);
        });
      } else {
        input = el("input");
        input.type = f.kind === "date" ? "date" : "text";
      }
      input.id = "field-" + f.name;
      input.name = f.name;
      input.setAttribute("data-testid", "field-" + f.name);
      if (f.max_length && f.kind !== "choice" && f.kind !== "date") input.maxLength = f.max_length;
      if (f.required) input.required = true;
      input.value = values[f.name] || "";
      input.addEventListener("input", function () { fieldError(f.name, ""); });
      label.appendChild(input);
      var error = el("span", "field-error");
      error.id = "error-" + f.name;
      error.setAttribute("data-testid", "field-error-" + f.name);
      error.hidden = true;
      label.appendChild(error);
      box.appendChild(label);
    });
    $("catalogue-form").hidden = false;
    var first = box.querySelector("input, textarea, select");
    if (first) first.focus();
  }

  function closeForm() {
    currentForm = null;
    $("catalogue-form").hidden = true;
  }

  function fieldError(name, message) {
    var error = $("error-" + name);
    var input = $("field-" + name);
    if (!error || !input) return false;
    error.textContent = message;
    error.hidden = !message;
    if (message) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
    return true;
  }

  function validDate(value) {
    if (!/^\d{4}-\d{2}-\d{2}$/.test(value)) return false;
    var d = new Date(value + "T00:00:00Z");
    return !isNaN(d.getTime()) && d.toISOString().slice(0, 10) === value;
  }

  // The same checks as the case service's, so most mistakes are shown before anything is sent.
  function checkField(f, value) {
    if (!value) return f.required ? t("field_required") : "";
    if (f.kind === "choice") {
      var ok = f.choices.some(function (c) { return c.value === value; });
      return ok ? "" : t("field_choice");
    }
    if (f.kind === "date") return validDate(value) ? "" : t("field_date");
    if (f.max_length && value.length > f.max_length) return t("field_too_long", { max: f.max_length });
    if (f.pattern) {
      var re = null;
      try { re = new RegExp("^(?:" + f.pattern + ")$"); } catch (e) { re = null; }
      if (re && !re.test(value)) return t("field_format");
    }
    return "";
  }

  function serverProblem(problem) {
    for (var i = 0; i < PROBLEMS.length; i++) {
      if (problem.indexOf(PROBLEMS[i][0]) === 0) {
        var max = /(\d+) characters/.exec(problem);
        return t(PROBLEMS[i][1], { max: max ? max[1] : "" });
      }
    }
    return problem;
  }

  $("catalogue-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    clearError();
    if (!currentForm) return;
    var item = currentForm;
    var values = {};
    var wrong = 0;
    item.fields.forEach(function (f) {
      var value = $("field-" + f.name).value.trim();
      var problem = checkField(f, value);
      fieldError(f.name, problem);
      if (problem) wrong += 1;
      if (value) values[f.name] = value;
    });
    $("catalogue-invalid").hidden = wrong === 0;
    if (wrong) return;
    api("POST", "catalogue/" + encodeURIComponent(item.template), { fields: values, language: lang })
      .then(function () {
        closeForm();
        $("catalogue-sent").hidden = false;
        setTimeout(loadCases, 1500);
      }, function (err) {
        var data = err.data || {};
        if (err.status === 400 && data.field && fieldError(data.field, serverProblem(data.problem || ""))) {
          $("catalogue-invalid").hidden = false;
          return;
        }
        failure(err);
      });
  });

  $("catalogue-cancel").addEventListener("click", closeForm);

  // ---- the knowledge base ------------------------------------------------------------------

  function article(h, testid) {
    var li = el("li");
    li.setAttribute("data-testid", testid);
    li.setAttribute("data-article-id", h.article_id);
    li.setAttribute("lang", h.language);
    if (testid === "suggestion") {
      // A suggestion shows its title; opening it shows the article (and counts as opened).
      var open = el("button", "plain article-open", h.title);
      open.type = "button";
      open.setAttribute("data-testid", "suggestion-open");
      open.setAttribute("aria-expanded", "false");
      var text = el("p", "body", h.body);
      text.hidden = true;
      open.addEventListener("click", function () {
        text.hidden = !text.hidden;
        open.setAttribute("aria-expanded", String(!text.hidden));
        if (!text.hidden) seen("opened", h.article_id);
      });
      li.appendChild(el("h3")).appendChild(open);
      li.appendChild(text);
    } else {
      li.appendChild(el("h3", "", h.title));
      li.appendChild(el("p", "body", h.body));
    }
    var votes = el("div", "votes");
    votes.appendChild(el("span", "", t("helpful")));
    var yes = el("button", "plain", t("yes") + " (" + h.helpful + ")");
    yes.type = "button";
    yes.setAttribute("data-testid", "kb-helpful");
    var no = el("button", "plain", t("no") + " (" + h.not_helpful + ")");
    no.type = "button";
    no.setAttribute("data-testid", "kb-not-helpful");
    var thanks = el("span", "note", t("thanks"));
    thanks.hidden = true;
    thanks.setAttribute("data-testid", "kb-thanks");
    function vote(helpful) {
      api("POST", "kb/vote", { tenant: tenant, article_id: h.article_id, helpful: helpful }).then(function (v) {
        yes.textContent = t("yes") + " (" + v.helpful + ")";
        no.textContent = t("no") + " (" + v.not_helpful + ")";
        thanks.hidden = false;
      }, failure);
    }
    yes.addEventListener("click", function () { vote(true); });
    no.addEventListener("click", function () { vote(false); });
    votes.appendChild(yes);
    votes.appendChild(no);
    votes.appendChild(thanks);
    li.appendChild(votes);
    return li;
  }

  $("kb-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    clearError();
    var q = $("kb-query").value.trim();
    if (!q) return;
    api("GET", "kb/search?tenant=" + encodeURIComponent(tenant) + "&q=" + encodeURIComponent(q))
      .then(function (data) {
        var list = $("kb-hits");
        list.textContent = "";
        data.hits.forEach(function (h) { list.appendChild(article(h, "kb-hit")); });
        $("kb-none").hidden = data.hits.length > 0;
      }, failure);
  });

  $("ui-lang").addEventListener("change", function () {
    lang = $("ui-lang").value;
    try { localStorage.setItem("sb-portal-lang", lang); } catch (e) { /* private mode */ }
    applyLanguage();
    if (session) loadCases();
    if (currentCase) openCase(currentCase);
    showCatalogue();
    if (currentForm) openForm(currentForm, formValues());
  });

  applyLanguage();
  try { session = JSON.parse(sessionStorage.getItem("sb-portal-session") || "null"); } catch (e) { session = null; }
  if (session && session.expires_at * 1000 < Date.now()) session = null;
  exchangeLink().then(signedIn);
})();
