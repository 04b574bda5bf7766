/* Switchboard knowledge-base authoring. Agents write drafts (title, text, language, category,
   tags), attach files and propose a draft for review; reviewers (supervisors, admins) publish it
   or send it back to draft with a comment, and retire published articles. Every save is a new
   version; the history lists them all. A resolved case becomes a draft from its reference, or
   from the inbox's case panel (kb#case=<case id>). Every call is POST api/kb/<action> with the
   signed-in user's token: the case service decides what each role may do. The page keeps its own
   strings in Korean, Chinese, Japanese and English; all data is set with textContent. */
(function () {
  "use strict";
  var STRINGS = {
    ko: {
      title: "지식 베이스", tenant: "테넌트", agentId: "상담원 ID", password: "비밀번호", uiLanguage: "언어",
      signIn: "로그인", signOut: "로그아웃", wrongLogin: "상담원 ID 또는 비밀번호가 틀렸습니다.",
      oidcSignIn: "{name} 계정으로 로그인", oidc_unavailable: "지금은 회사 계정으로 로그인할 수 없습니다. 비밀번호로 로그인하거나 잠시 후 다시 시도하세요.", oidc_expired: "회사 계정 로그인 시간이 초과되었거나 이미 사용되었습니다. 다시 로그인하세요.", oidc_refused: "회사 계정 로그인이 승인되지 않았습니다. 다시 로그인하세요.", oidc_unknown: "이 회사 계정은 이 테넌트의 상담원으로 등록되어 있지 않습니다. 관리자에게 등록을 요청하세요.", oidc_disabled: "상담원 계정이 비활성화되었습니다. 관리자에게 문의하세요.",
      newArticle: "새 문서", fromCase: "케이스로 초안 만들기", caseRef: "케이스 번호 (C-…)",
      state: "상태", any: "전체", language: "언어", category: "분류", noArticles: "문서가 없습니다.",
      s_draft: "초안", s_review: "검토 중", s_published: "게시됨", s_retired: "보관됨",
      articleTitle: "제목", tags: "태그 (쉼표로 구분)", body: "본문", save: "초안 저장",
      propose: "검토 요청", reviewComment: "검토 의견 (반려 시 필수)", publish: "게시",
      sendBack: "초안으로 반려", retire: "보관", attachments: "첨부 파일", upload: "첨부",
      history: "버전 기록", version: "버전 {n}", saved: "저장했습니다 (버전 {n}).",
      proposed: "검토를 요청했습니다.", published: "게시했습니다.", sentBack: "초안으로 반려했습니다.",
      retired: "보관했습니다.", attached: "파일을 첨부했습니다.", returned: "반려 의견 ({who}): {text}",
      fromCaseNote: "케이스 {ref}에서 만든 초안", download: "받기", open: "열기", by: "{who}",
      needComment: "반려하려면 검토 의견을 적어 주세요.", noFile: "첨부할 파일을 고르세요.",
      role_agent: "상담원", role_team_lead: "팀장", role_supervisor: "슈퍼바이저", role_qa: "품질 평가자", role_admin: "관리자"
    },
    zh: {
      title: "知识库", tenant: "租户", agentId: "坐席 ID", password: "密码", uiLanguage: "语言",
      signIn: "登录", signOut: "退出", wrongLogin: "坐席 ID 或密码错误。",
      oidcSignIn: "使用 {name} 账号登录", oidc_unavailable: "目前无法使用公司账号登录。请使用密码登录或稍后再试。", oidc_expired: "公司账号登录已超时或已被使用。请重新登录。", oidc_refused: "公司账号登录未被接受。请重新登录。", oidc_unknown: "该公司账号不是本租户的坐席。请联系管理员添加。", oidc_disabled: "您的坐席账号已停用。请联系管理员。",
      newArticle: "新文章", fromCase: "从工单生成草稿", caseRef: "工单编号 (C-…)",
      state: "状态", any: "全部", language: "语言", category: "分类", noArticles: "没有文章。",
      s_draft: "草稿", s_review: "审核中", s_published: "已发布", s_retired: "已停用",
      articleTitle: "标题", tags: "标签（逗号分隔）", body: "正文", save: "保存草稿",
      propose: "提交审核", reviewComment: "审核意见（退回时必填）", publish: "发布",
      sendBack: "退回草稿", retire: "停用", attachments: "附件", upload: "上传附件",
      history: "版本历史", version: "第 {n} 版", saved: "已保存第 {n} 版。",
      proposed: "已提交审核。", published: "已发布。", sentBack: "已退回草稿。",
      retired: "已停用。", attached: "已添加附件。", returned: "退回意见（{who}）：{text}",
      fromCaseNote: "由工单 {ref} 生成的草稿", download: "下载", open: "打开", by: "{who}",
      needComment: "退回时请填写审核意见。", noFile: "请选择要上传的文件。",
      role_agent: "坐席", role_team_lead: "组长", role_supervisor: "主管", role_qa: "质检员", role_admin: "管理员"
    },
    ja: {
      title: "ナレッジベース", tenant: "テナント", agentId: "オペレーター ID", password: "パスワード", uiLanguage: "言語",
      signIn: "ログイン", signOut: "ログアウト", wrongLogin: "オペレーター ID またはパスワードが違います。",
      oidcSignIn: "{name} のアカウントでログイン", oidc_unavailable: "現在、会社アカウントでログインできません。パスワードでログインするか、しばらくしてからお試しください。", oidc_expired: "会社アカウントのログインが時間切れか、すでに使用されています。もう一度ログインしてください。", oidc_refused: "会社アカウントのログインが受け付けられませんでした。もう一度ログインしてください。", oidc_unknown: "この会社アカウントはこのテナントのオペレーターではありません。管理者に追加を依頼してください。", oidc_disabled: "オペレーターアカウントは無効になっています。管理者にお問い合わせください。",
      newArticle: "新しい記事", fromCase: "ケースから下書き", caseRef: "ケース番号 (C-…)",
      state: "状態", any: "すべて", language: "言語", category: "カテゴリ", noArticles: "記事がありません。",
      s_draft: "下書き", s_review: "レビュー中", s_published: "公開中", s_retired: "公開終了",
      articleTitle: "タイトル", tags: "タグ（カンマ区切り）", body: "本文", save: "下書きを保存",
      propose: "レビューを依頼", reviewComment: "レビューコメント（差し戻しには必須）", publish: "公開",
      sendBack: "下書きに差し戻す", retire: "公開終了", attachments: "添付ファイル", upload: "添付",
      history: "版の履歴", version: "第 {n} 版", saved: "第 {n} 版を保存しました。",
      proposed: "レビューを依頼しました。", published: "公開しました。", sentBack: "下書きに差し戻しました。",
      retired: "公開を終了しました。", attached: "ファイルを添付しました。", returned: "差し戻しコメント（{who}）：{text}",
      fromCaseNote: "ケース {ref} から作成した下書き", download: "ダウンロード", open: "開く", by: "{who}",
      needComment: "差し戻すにはレビューコメントを書いてください。", noFile: "添付するファイルを選んでください。",
      role_agent: "オペレーター", role_team_lead: "チームリーダー", role_supervisor: "スーパーバイザー", role_qa: "品質評価者", role_admin: "管理者"
    },
    en: {
      title: "Knowledge base", tenant: "Tenant", agentId: "Agent ID", password: "Password", uiLanguage: "Language",
      signIn: "Sign in", signOut: "Sign out", wrongLogin: "Wrong agent ID or password.",
      oidcSignIn: "Sign in with {name}", oidc_unavailable: "Signing in with your company account is not available now. Sign in with your password or try again later.", oidc_expired: "The company sign-in took too long or was already used. Please sign in again.", oidc_refused: "Your company's sign-in was not accepted. Please sign in again.", oidc_unknown: "Your company account is not an agent of this tenant. Ask your administrator to add you.", oidc_disabled: "Your agent account is disabled. Ask your administrator.",
      newArticle: "New article", fromCase: "Draft from case", caseRef: "Case reference (C-…)",
      state: "State", any: "Any", language: "Language", category: "Category", noArticles: "No articles.",
      s_draft: "Draft", s_review: "In review", s_published: "Published", s_retired: "Retired",
      articleTitle: "Title", tags: "Tags (comma-separated)", body: "Text", save: "Save draft",
      propose: "Propose for review", reviewComment: "Reviewer's comment (required to send back)", publish: "Publish",
      sendBack: "Send back to draft", retire: "Retire", attachments: "Attachments", upload: "Attach",
      history: "Version history", version: "Version {n}", saved: "Version {n} saved.",
      proposed: "Proposed for review.", published: "Published.", sentBack: "Sent back to draft.",
      retired: "Retired.", attached: "File attached.", returned: "Sent back by {who}: {text}",
      fromCaseNote: "Drafted from case {ref}", download: "Download", open: "Open", by: "{who}",
      needComment: "Write a comment to send the draft back.", noFile: "Choose a file to attach.",
      role_agent: "Agent", role_team_lead: "Team lead", role_supervisor: "Supervisor", role_qa: "QA evaluator", role_admin: "Admin"
    }
  };
  var LANGS = ["ko", "zh", "ja", "en"];
  var REVIEWERS = ["supervisor", "admin"];
  var KEY = "sb-kb";
  var $ = function (id) { return document.getElementById(id); };
  var state = { token: null, agent: null, articles: [], current: null, lang: pick() };

  function pick(preferred) {
    var stored = null;
    try { stored = localStorage.getItem("sb-ui-lang"); } catch (e) { stored = null; }
    var candidates = [preferred, stored, (navigator.language || "en").slice(0, 2)];
    for (var i = 0; i < candidates.length; i++) if (candidates[i] && LANGS.indexOf(candidates[i]) >= 0) return candidates[i];
    return "en";
  }
  function t(key, vars) {
    var s = STRINGS[state.lang][key] || STRINGS.en[key] || key;
    Object.keys(vars || {}).forEach(function (k) { s = s.split("{" + k + "}").join(String(vars[k])); });
    return s;
  }
  function setLang(lang) {
    state.lang = pick(lang);
    try { localStorage.setItem("sb-ui-lang", state.lang); } catch (e) { /* private mode */ }
    document.documentElement.lang = state.lang;
    document.querySelectorAll("[data-t]").forEach(function (n) { n.textContent = t(n.getAttribute("data-t")); });
    document.querySelectorAll("[data-tp]").forEach(function (n) { n.setAttribute("placeholder", t(n.getAttribute("data-tp"))); });
    document.querySelectorAll("select.kb-lang").forEach(function (s) { s.value = state.lang; });
    if (state.agent) { result(""); $("me").textContent = state.agent.name + " · " + t("role_" + state.agent.role); renderList(); show(state.current, true); }
  }
  document.querySelectorAll("select.kb-lang").forEach(function (s) {
    s.addEventListener("change", function () { setLang(s.value); });
  });

  var el = window.SBPage.el;
  var clear = window.SBPage.clear;
  function when(ms) {
    if (!ms) return "";
    var locale = { ko: "ko-KR", zh: "zh-CN", ja: "ja-JP", en: "en-GB" }[state.lang];
    return new Date(ms).toLocaleString(locale, { dateStyle: "short", timeStyle: "short" });
  }
  function error(msg) { $("kb-error").textContent = msg || ""; $("kb-error").hidden = !msg; }
  function result(msg) { $("ed-result").textContent = msg || ""; }
  function failed(err) { error(err && err.message ? err.message : String(err)); }
  function reviewer() { return state.agent && REVIEWERS.indexOf(state.agent.role) >= 0; }
  function stateTag(s) { return el("span", { cls: "state", "data-state": s, "data-testid": "state", text: t("s_" + s) }); }

  var api = window.SBPage.api("api/kb/", KEY, function () { return state.token; });

  // ---- sign-in ----------------------------------------------------------------------------------

  window.SBPage.signIn({ key: KEY, t: t, done: function (token, agent) {
    state.token = token; state.agent = agent;
    start();
  } });
  $("sign-out").addEventListener("click", function () {
    sessionStorage.removeItem(KEY); sessionStorage.removeItem("sb-inbox"); location.reload();
  });

  function start() {
    $("login").hidden = true;
    $("app").hidden = false;
    setLang(state.lang);
    var m = /^#case=(.+)$/.exec(location.hash);
    if (m) {
      history.replaceState(null, "", location.pathname);
      draftFromCase({ case_id: decodeURIComponent(m[1]) });
    } else {
      show(null);
    }
    load();
  }

  // ---- the list -----------------------------------------------------------------------------------

  ["f-state", "f-language", "f-category"].forEach(function (id) { $(id).addEventListener("change", load); });

  var loads = 0;
  function load() {
    var mine = ++loads;  // only the latest answer is shown when filters change quickly
    return api("list", { state: $("f-state").value, language: $("f-language").value, category: $("f-category").value })
      .then(function (data) {
        if (mine !== loads) return;
        state.articles = data.articles;
        var sel = $("f-category"), chosen = sel.value;
        while (sel.options.length > 1) sel.remove(1);
        clear($("categories"));
        data.categories.forEach(function (c) {
          sel.appendChild(el("option", { value: c, text: c }));
          $("categories").appendChild(el("option", { value: c }));
        });
        sel.value = chosen;
        renderList();
      }).catch(failed);
  }

  function renderList() {
    var list = $("articles");
    clear(list);
    state.articles.forEach(function (a) {
      var li = el("li", { "data-testid": "kb-article", "data-article-id": a.article_id, "data-state": a.state },
        el("strong", { text: a.title }),
        el("span", null, stateTag(a.state), el("span", { cls: "muted", text: " " + [a.language, a.category, t("version", { n: a.version })].filter(Boolean).join(" · ") })));
      if (state.current && state.current.article_id === a.article_id) li.classList.add("current");
      li.addEventListener("click", function () { open(a.article_id, a.version); });
      list.appendChild(li);
    });
    $("articles-empty").hidden = state.articles.length > 0;
  }

  function open(articleId, version) {
    error(""); result("");
    return api("get", { article_id: articleId, version: version || 0 }).then(function (a) {
      // The latest version is the one to work on.
      if (a.version !== a.latest_version) return api("get", { article_id: articleId, version: a.latest_version });
      return a;
    }).then(function (a) { show(a); }).catch(failed);
  }

  // ---- the editor ---------------------------------------------------------------------------------

  $("new").addEventListener("click", function () { error(""); result(""); show(null); $("ed-title").focus(); });

  function show(a, keepFields) {
    state.current = a;
    $("ed-heading").textContent = a ? a.title : t("newArticle");
    $("ed-state").hidden = !a;
    if (a) { $("ed-state").textContent = t("s_" + a.state); $("ed-state").setAttribute("data-state", a.state); }
    $("ed-version").textContent = a ? t("version", { n: a.version }) : "";
    $("ed-source").hidden = !(a && a.source_case_id);
    $("ed-source").textContent = a && a.source_case_id ? t("fromCaseNote", { ref: a.source_case_reference || a.source_case_id }) : "";
    $("ed-comment").hidden = !(a && a.review_comment);
    $("ed-comment").textContent = a && a.review_comment ? t("returned", { who: a.state_changed_by, text: a.review_comment }) : "";
    if (!keepFields) {
      $("ed-title").value = a ? a.title : "";
      $("ed-body").value = a ? a.body : "";
      $("ed-language").value = a && a.language ? a.language.slice(0, 2) : (state.agent.ui_language || state.lang);
      $("ed-category").value = a ? a.category : "";
      $("ed-tags").value = a ? a.tags.join(", ") : "";
      $("review-comment").value = "";
    }
    $("propose").hidden = !(a && a.state === "draft");
    $("review").hidden = !(a && a.state === "review" && reviewer());
    $("retire").hidden = !(a && a.state === "published" && reviewer());
    $("ed-more").hidden = !a;
    if (a) { renderFiles(a); loadVersions(a); }
    document.querySelectorAll("#articles li").forEach(function (li) {
      li.classList.toggle("current", !!a && li.getAttribute("data-article-id") === a.article_id);
    });
  }

  function fields() {
    return {
      title: $("ed-title").value, body: $("ed-body").value, language: $("ed-language").value,
      category: $("ed-category").value.trim(), tags: $("ed-tags").value,
    };
  }

  $("save").addEventListener("click", function () {
    error("");
    var a = state.current, body = fields();
    var done = a ? (body.article_id = a.article_id, api("update", body)) : api("create", body);
    done.then(function (saved) { show(saved); result(t("saved", { n: saved.version })); return load(); }).catch(failed);
  });

  function move(to, comment, message) {
    var a = state.current;
    error("");
    return api("state", { article_id: a.article_id, version: a.version, state: to, comment: comment || "" })
      .then(function (moved) { show(moved); result(t(message)); return load(); }).catch(failed);
  }
  $("propose").addEventListener("click", function () { move("review", "", "proposed"); });
  $("publish").addEventListener("click", function () { move("published", "", "published"); });
  $("retire").addEventListener("click", function () { move("retired", "", "retired"); });
  $("send-back").addEventListener("click", function () {
    var comment = $("review-comment").value.trim();
    if (!comment) { error(t("needComment")); $("review-comment").focus(); return; }
    move("draft", comment, "sentBack");
  });

  // ---- a draft from a resolved case ------------------------------------------------------------

  function draftFromCase(which) {
    error(""); result("");
    which.language = state.agent.ui_language || state.lang;
    return api("from_case", which).then(function (a) {
      show(a); result(t("saved", { n: a.version })); return load();
    }).catch(failed);
  }
  $("from-case").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var ref = $("case-ref").value.trim();
    if (ref) draftFromCase({ reference: ref });
  });

  // ---- attachments ----------------------------------------------------------------------------------

  function renderFiles(a) {
    var list = $("files");
    clear(list);
    a.attachments.forEach(function (f) {
      var link = el("a", { href: "#", "data-testid": "kb-file-link", text: f.filename });
      link.addEventListener("click", function (ev) { ev.preventDefault(); download(a, f); });
      list.appendChild(el("li", { "data-testid": "kb-file-item" }, link,
        el("span", { cls: "muted", text: " " + Math.max(1, Math.round(f.size_bytes / 1024)) + " KB · " + f.added_by })));
    });
  }

  function download(a, f) {
    api("attachment", { article_id: a.article_id, attachment_id: f.attachment_id }).then(function (res) {
      var bin = atob(res.data), bytes = new Uint8Array(bin.length);
      for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      // Offered as a download, never shown in this page's origin.
      var url = URL.createObjectURL(new Blob([bytes], { type: "application/octet-stream" }));
      var link = el("a", { href: url, download: res.attachment.filename });
      document.body.appendChild(link); link.click(); link.remove();
      setTimeout(function () { URL.revokeObjectURL(url); }, 10000);
    }).catch(failed);
  }

  $("upload").addEventListener("click", function () {
    var file = $("file").files[0], a = state.current;
    if (!file) { error(t("noFile")); return; }
    error("");
    var reader = new FileReader();
    reader.onload = function () {
      var data = String(reader.result).split(",", 2)[1] || "";
      api("attach", { article_id: a.article_id, filename: file.name, content_type: file.type, data: data })
        .then(function (updated) {
          state.current.attachments = updated.attachments;
          renderFiles(state.current); $("file").value = ""; result(t("attached"));
        }).catch(failed);
    };
    reader.readAsDataURL(file);
  });

  // ---- versions -------------------------------------------------------------------------------------

  var versionLoads = 0;
  function loadVersions(a) {
    var mine = ++versionLoads;  // an earlier answer may arrive after a later one
    api("versions", { article_id: a.article_id }).then(function (res) {
      if (mine !== versionLoads) return;
      var list = $("versions");
      clear(list);
      res.versions.forEach(function (v) {
        var view = el("button", { type: "button", "data-testid": "kb-version-open", text: t("open") });
        view.addEventListener("click", function () {
          $("ed-title").value = v.title; $("ed-body").value = v.body; $("ed-category").value = v.category;
          $("ed-tags").value = v.tags.join(", ");
        });
        list.appendChild(el("li", { "data-testid": "kb-version", "data-version": v.version, "data-state": v.state },
          el("strong", { text: t("version", { n: v.version }) }), stateTag(v.state),
          el("span", { cls: "muted", text: v.author + " · " + when(v.created_at) }),
          v.review_comment ? el("span", { cls: "note", "data-testid": "kb-version-comment", text: v.review_comment }) : null,
          view));
      });
    }).catch(failed);
  }

  // ---- resume: this tab's session, or the inbox's (opened from it) -----------------------------------

  setLang(state.lang);
  var prior = null;
  try { prior = JSON.parse(sessionStorage.getItem(KEY) || sessionStorage.getItem("sb-inbox") || "null"); } catch (e) { prior = null; }
  if (prior && prior.token && prior.agent) {
    state.token = prior.token; state.agent = prior.agent;
    state.lang = pick(prior.agent.ui_language);
    start();
  }
})();
