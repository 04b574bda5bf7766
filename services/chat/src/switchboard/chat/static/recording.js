/* Switchboard call-recording player, shared by the inbox's case panel and the QA review screen:
   a recording's waveform (the server's peaks, customer above, agent below) on a canvas,
   play/pause, seeking by clicking the waveform (←/→ move 5 s when it has focus), the time played
   and the duration. The <audio> element fetches the recording itself, by byte ranges, with the
   ticket in the URL that GET api/agent/recording/player gives. It fetches nothing before the
   user plays (preload "none"; the duration and waveform come with the ticket): the playback is
   audited on the case when the audio is first asked for, so a player shown is no playback.
   All text is set with textContent.

   SBRecording.player(contactId, { token: function () { return bearerToken; },
                                  when: function (ms) { return localisedTime; } })
     -> { node, relabel(contact), stop() } */
(function () {
  "use strict";
  var t = function (key, vars) { return window.SBI18n.t(key, vars); };

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

  function clock(seconds) {
    var s = Math.max(0, Math.floor(seconds || 0));
    var m = Math.floor(s / 60);
    return m + ":" + (s % 60 < 10 ? "0" : "") + (s % 60);
  }

  // A recording's player: its waveform (the server's peaks, customer above, agent below) on a
  // canvas, play/pause, seeking by clicking the waveform, the time played and the duration. The
  // <audio> element fetches the recording itself, by byte ranges, with the URL's ticket.
  function recordingPlayer(contactId, opts) {
    var fmtTime = opts.when || function (ms) { return ms ? new Date(ms).toLocaleString(window.SBI18n.current()) : ""; };
    // Nothing fetched until played: the first request of the audio is the audited playback.
    var audio = el("audio", { preload: "none", "data-testid": "rec-audio" });
    var play = el("button", { type: "button", cls: "rec-play", "data-testid": "rec-play", "data-state": "paused", disabled: "" });
    var time = el("span", { cls: "rec-time", "data-testid": "rec-time", text: "0:00 / 0:00" });
    var title = el("span", { cls: "rec-title" });
    var when = el("div", { cls: "rec-when muted" });
    var canvas = el("canvas", { "data-testid": "waveform", tabindex: "0", role: "slider", "aria-valuemin": "0", "aria-valuenow": "0" });
    var labels = {
      customer: el("span", { cls: "rec-label customer", "data-testid": "rec-channel", "data-channel": "customer" }),
      agent: el("span", { cls: "rec-label agent", "data-testid": "rec-channel", "data-channel": "agent" }),
    };
    var problemText = el("p", { cls: "rec-error", role: "alert", "data-testid": "rec-error", hidden: "" });
    var node = el("div", { cls: "recording", "data-testid": "recording", "data-contact-id": contactId },
      el("div", { cls: "rec-head" }, title, play, time),
      when,
      el("div", { cls: "rec-wave" }, canvas, labels.customer, labels.agent),
      problemText, audio);
    var info = null;
    var contact = null;
    var retried = false;
    var frame = 0;

    function duration() {
      if (info && info.duration) return info.duration;
      return isFinite(audio.duration) ? audio.duration : 0;
    }

    function relabel(k) {
      contact = k || contact;
      title.textContent = t("recording");
      when.textContent = contact && contact.created_at ? fmtTime(contact.created_at) : "";
      labels.customer.textContent = t("recCustomer");
      labels.agent.textContent = t("recAgent");
      canvas.setAttribute("aria-label", t("recSeek"));
      update();
    }

    function update() {
      var playing = !audio.paused && !audio.ended;
      play.textContent = playing ? t("recPause") : t("recPlay");
      play.setAttribute("data-state", playing ? "playing" : "paused");
      time.textContent = clock(audio.currentTime) + " / " + clock(duration());
      time.setAttribute("data-current", String(audio.currentTime || 0));
      canvas.setAttribute("aria-valuemax", String(Math.round(duration())));
      canvas.setAttribute("aria-valuenow", String(Math.round(audio.currentTime || 0)));
      draw();
    }

    function draw() {
      var w = canvas.clientWidth || 280;
      var h = canvas.clientHeight || 100;
      var ratio = window.devicePixelRatio || 1;
      if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
        canvas.width = Math.round(w * ratio);
        canvas.height = Math.round(h * ratio);
      }
      var g = canvas.getContext("2d");
      g.setTransform(ratio, 0, 0, ratio, 0, 0);
      g.clearRect(0, 0, w, h);
      if (!info || !info.peaks.length) return;
      var played = duration() ? audio.currentTime / duration() : 0;
      var rowH = h / info.peaks.length;
      var bars = 0;
      info.peaks.forEach(function (peaks, row) {
        var mid = rowH * row + rowH / 2 + 6;  // below the channel's label
        var half = rowH / 2 - 8;
        var step = w / Math.max(1, peaks.length);
        peaks.forEach(function (p, i) {
          var x = i * step;
          var bar = p > 0 ? Math.max(1, p * half) : 0.5;  // silence: a thin line
          if (p > 0) bars += 1;
          g.fillStyle = x / w <= played ? "#2357d8" : row === 0 ? "#8a96a8" : "#a9b4c4";
          g.fillRect(x, mid - bar, Math.max(1, step - 0.5), bar * 2);
        });
      });
      g.fillStyle = "#c62828";
      g.fillRect(Math.min(w - 2, played * w), 0, 2, h);
      canvas.setAttribute("data-bars", String(bars));
    }

    function animate() {
      cancelAnimationFrame(frame);
      if (!audio.paused && !audio.ended) frame = requestAnimationFrame(function () { update(); animate(); });
    }

    function seekTo(seconds) {
      var d = duration();
      if (!d) return;
      audio.currentTime = Math.max(0, Math.min(d, seconds));
      update();
    }

    function fail(reason) {
      problemText.hidden = false;
      problemText.textContent = t("recUnavailable", { reason: reason });
    }

    function load(resume) {
      return fetch("api/agent/recording/player?contact_id=" + encodeURIComponent(contactId), {
        headers: { authorization: "Bearer " + opts.token() },
      }).then(function (r) {
        return r.json().then(function (body) { return { ok: r.ok, body: body }; });
      }).then(function (res) {
        if (!res.ok) { fail(res.body.error || ""); return; }
        info = res.body;
        problemText.hidden = true;
        audio.src = info.url;
        if (resume) audio.currentTime = resume;
        play.disabled = false;
        canvas.setAttribute("data-duration", String(info.duration));
        update();
      }).catch(function (e) { fail(String(e)); });
    }

    play.addEventListener("click", function () {
      if (audio.paused || audio.ended) {
        var started = audio.play();
        if (started && started.catch) started.catch(function (e) { fail(String(e)); });
      } else audio.pause();
    });
    canvas.addEventListener("click", function (ev) {
      var rect = canvas.getBoundingClientRect();
      seekTo((ev.clientX - rect.left) / rect.width * duration());
    });
    canvas.addEventListener("keydown", function (ev) {
      if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
        ev.preventDefault();
        ev.stopPropagation();
        seekTo(audio.currentTime + (ev.key === "ArrowRight" ? 5 : -5));
      }
    });
    ["play", "pause", "ended", "timeupdate", "seeked", "loadedmetadata"].forEach(function (name) {
      audio.addEventListener(name, function () { update(); animate(); });
    });
    audio.addEventListener("error", function () {
      // The URL's ticket expired (a player left open for long): ask for a new one, once.
      if (!retried && info) { retried = true; load(audio.currentTime); return; }
      fail(t("err_Internal"));
    });
    window.addEventListener("resize", draw);
    load(0);

    return {
      node: node,
      relabel: relabel,
      stop: function () { audio.pause(); cancelAnimationFrame(frame); window.removeEventListener("resize", draw); },
    };
  }

  window.SBRecording = { player: recordingPlayer, clock: clock };
})();
