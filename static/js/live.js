// ffnlens, the main page while you type (no inline script: the page's CSP allows our files only).
//
// - Requests: a throttle with a trailing call, at most one request per THROTTLE_MS while typing
//   (not a debounce: answers keep coming while the keys do), and one request out at a time (a
//   second only when the first has been out STALL_MS; never more than MAX_INFLIGHT, a new one
//   aborting the oldest): the answer landing sends the newest prompt at once. An answer aborts
//   every older request still out, and an answer older than the one on screen is dropped
//   (requests carry a sequence number). Enter (or the Show button, or a settings change) sends at
//   once, aborting the older requests.
// - Answers are morphed into #results (idiomorph, from npm, in static/vendor), so focus, scroll and
//   open panels survive; #results carries data-prompt, the prompt its answer is for, and is
//   dimmed (.stale) while the box holds a newer prompt than that.
// - History: the first answer after a committed entry pushes a new entry, later ones replace it;
//   the entry is committed after a pause of PAUSE_MS, on Enter or on a settings change. So there is
//   one entry per pause, never two identical ones in a row, and an error never touches history.
//   Back and forward restore the prompt, the settings and the results (from a small cache, else
//   asked again).
// - Mistakes: the prompt and the settings are checked here with the server's rules (vocabulary,
//   context length, thresholds in [-1, 1], weights >= 0, k >= 1, one value per block); a mistake
//   (or the server's 4xx) keeps the last good results on screen, dimmed, the message under the box
//   and the offending characters marked in the prompt (a backdrop behind the textarea).
// - The live region (#announce) says a short summary after the answer settles, not the page.
(function () {
  "use strict";
  var form = document.getElementById("query");
  var results = document.getElementById("results");
  if (!form || !results || !window.fetch || !window.AbortController || !window.URLSearchParams) return;
  var box = document.getElementById("prompt");
  var backdrop = form.querySelector(".backdrop");
  var problem = document.getElementById("problem");
  var counter = document.getElementById("counter");
  var announce = document.getElementById("announce");
  var endpoint = form.dataset.results || "results";

  var THROTTLE_MS = 100, PAUSE_MS = 1000, MAX_INFLIGHT = 2, STALL_MS = 1000, CACHE_SIZE = 40, ANNOUNCE_MS = 700;
  var DEFAULTS = {mode: "threshold", blend: "raw", store: "pool", k: "200", show: "10"};

  var seq = 0;                 // the newest request's number
  var shownSeq = 0;            // the number of the answer on screen
  var inflight = [];           // [{seq, ctl}], oldest first
  var lastSent = -Infinity;    // performance.now() of the last request
  var trailing = null;         // the throttle's trailing call
  var want = null;             // {qs, commit}: what the next request asks
  var shownQs = null;          // the query the answer on screen is for
  var committed = true;        // the current history entry is final: the next answer pushes
  var pauseDue = false;        // a pause has passed: commit once the answer is up to date
  var pauseTimer = null, announceTimer = null, retryTimer = null;
  var cache = new Map();       // query string -> fragment HTML (good answers only)
  var vocab = form.dataset.vocab || "";
  var context = parseInt(form.dataset.context, 10) || 0;
  var nLayer = parseInt(form.dataset.nLayer, 10) || 0;
  var poolSize = parseInt(form.dataset.poolSize, 10) || 0;

  // ---- the query -------------------------------------------------------------------------------
  function query() {
    var usp = new URLSearchParams();
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || el.disabled) return;
      if ((el.type === "radio" || el.type === "checkbox") && !el.checked) return;
      if (el.tagName === "BUTTON") return;
      usp.append(el.name, el.value);
    });
    return usp;
  }

  function restoreForm(usp) {
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || el.tagName === "BUTTON") return;
      var v = usp.has(el.name) ? usp.get(el.name) : (DEFAULTS[el.name] || "");
      if (el.type === "radio") el.checked = el.value === v;
      else if (el.type === "checkbox") el.checked = ["1", "true", "on", "yes"].indexOf(v.toLowerCase()) >= 0;
      else el.value = v;
    });
    modeChanged();
  }

  function modeChanged() {
    var topk = form.querySelector('input[name="mode"][value="topk"]');
    var th = form.elements.namedItem("thresholds");
    if (th && topk) th.disabled = topk.checked;  // disabled: left out of requests and permalinks
  }

  // ---- checks (the server's rules) ---------------------------------------------------------------
  function shown(ch) {
    return ch === "\n" ? "\u23ce (new line)" : ch === "\t" ? "\\t" : ch === " " ? "space" : "\u201c" + ch + "\u201d";
  }

  function checkPrompt(text) {
    var bad = [], unknown = [];
    if (vocab) {
      for (var i = 0; i < text.length; i++) {
        if (vocab.indexOf(text[i]) < 0) {
          bad.push(i);
          if (unknown.indexOf(text[i]) < 0) unknown.push(text[i]);
        }
      }
    }
    if (unknown.length) {
      return {message: "the prompt has characters not in the model's vocabulary: " +
              unknown.map(shown).join(", ") + " (marked in the box)", bad: bad};
    }
    if (context && text.length > context) {
      for (var j = context; j < text.length; j++) bad.push(j);
      return {message: "the prompt has " + text.length + " characters; this model reads at most " +
              context + " (the extra ones are marked)", bad: bad};
    }
    if (!text.length) return {message: "the prompt is empty: type at least one character", bad: [], empty: true};
    return null;
  }

  function numbers(text, name, rule) {
    var items = text.replace(/ /g, "").split(",").filter(function (x) { return x !== ""; });
    var vals = [];
    for (var i = 0; i < items.length; i++) {
      var v = Number(items[i]);
      if (!/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(items[i]) || !isFinite(v)) {
        return name + " must be comma-separated numbers, e.g. 0.99,0.99,0.98,0.98,0.98,0.9";
      }
      vals.push(v);
    }
    if (nLayer && vals.length !== nLayer) {
      return name + " need one value per block: " + nLayer + " values, got " + vals.length;
    }
    return rule(vals);
  }

  function checkSettings() {
    var out = {};
    var topk = form.querySelector('input[name="mode"][value="topk"]');
    var k = form.elements.namedItem("k");
    if (topk && topk.checked && k) {
      var kv = k.value.trim();
      if (kv !== "" && !/^[+-]?\d+$/.test(kv)) out.k = "k must be a whole number";
      else if (kv !== "" && (+kv < 1 || (poolSize && +kv > poolSize))) {
        out.k = "k must be between 1 and the pool size" + (poolSize ? " (" + poolSize.toLocaleString("en") + ")" : "");
      }
    }
    var th = form.elements.namedItem("thresholds");
    if (th && !th.disabled && th.value.trim() && th.value.trim() !== "reference") {
      var m = numbers(th.value, "thresholds", function (vals) {
        return vals.every(function (v) { return v >= -1 && v <= 1; }) ? null :
          "thresholds are cosine similarities: each must lie in [-1, 1]";
      });
      if (m) out.thresholds = m;
    }
    var w = form.elements.namedItem("weights");
    if (w && w.value.trim()) {
      var mw = numbers(w.value, "weights", function (vals) {
        return vals.every(function (v) { return v >= 0; }) ? null : "weights must be zero or positive";
      });
      if (mw) out.weights = mw;
    }
    ["k", "thresholds", "weights"].forEach(function (name) {
      var el = form.elements.namedItem(name), msg = document.getElementById(name + "-msg");
      if (el) el.setAttribute("aria-invalid", out[name] ? "true" : "false");
      if (msg) { msg.textContent = out[name] || ""; msg.hidden = !out[name]; }
    });
    var msgs = Object.keys(out).map(function (k) { return out[k]; });
    return msgs.length ? msgs.join("; ") : null;
  }

  // ---- the box: counter and marks ------------------------------------------------------------------
  function drawBox(bad) {
    var text = box.value;
    if (counter) {
      counter.textContent = context ? text.length + " / " + context : text.length + " characters";
      counter.classList.toggle("over", !!context && text.length > context);
      counter.title = context ? "characters typed / the most this model reads" : "characters typed";
    }
    if (!backdrop) return;
    while (backdrop.firstChild) backdrop.removeChild(backdrop.firstChild);
    if (bad && bad.length) {
      var set = {}, run = "";
      bad.forEach(function (i) { set[i] = true; });
      for (var i = 0; i < text.length; i++) {
        if (set[i]) {
          if (run) backdrop.appendChild(document.createTextNode(run));
          run = "";
          var m = document.createElement("mark");
          m.textContent = text[i] === "\n" ? " \n" : text[i];
          backdrop.appendChild(m);
        } else run += text[i];
      }
      backdrop.appendChild(document.createTextNode(run + "\n"));
      backdrop.scrollTop = box.scrollTop;
    }
    box.setAttribute("aria-invalid", bad && bad.length ? "true" : "false");
  }

  // The box grows with its text (up to about ten lines), so that nothing typed or marked is hidden.
  function grow() {
    box.style.height = "auto";
    var max = parseFloat(getComputedStyle(box).lineHeight) * 10 || 400;
    box.style.height = Math.min(box.scrollHeight + 4, max) + "px";
  }

  function say(text) {
    if (!announce) return;
    clearTimeout(announceTimer);
    announceTimer = setTimeout(function () { announce.textContent = text; }, ANNOUNCE_MS);
  }

  function hasGood() { return !!results.querySelector(".answer"); }

  function showProblem(message) {
    if (hasGood()) {
      problem.textContent = message;
      problem.hidden = false;
    } else {  // nothing to keep: the message stands where the results will be
      problem.hidden = true;
      var p = document.createElement("p");
      p.className = "error";
      p.setAttribute("role", "alert");
      p.textContent = message;
      var old = results.querySelector(".error");
      if (!old || old.textContent !== message) {
        while (results.firstChild) results.removeChild(results.firstChild);
        results.appendChild(p);
      }
      results.dataset.prompt = "";
      shownQs = null;
    }
    results.classList.add("stale");
    say(message);
  }

  function clearProblem() {
    problem.hidden = true;
    problem.textContent = "";
  }

  function dim() {
    var on = query().toString() !== shownQs;
    results.classList.toggle("stale", on);
    results.setAttribute("aria-busy", on && inflight.length ? "true" : "false");
  }

  // ---- requests --------------------------------------------------------------------------------------
  function abortOlder(s) {
    inflight = inflight.filter(function (r) {
      if (r.seq < s) { r.ctl.abort(); return false; }
      return true;
    });
  }

  function cancelAll() {
    clearTimeout(trailing); trailing = null;
    clearTimeout(retryTimer);
    want = null;
    seq++;
    abortOlder(seq + 1);
  }

  function schedule(qs, now) {
    want = {qs: qs, commit: !!now || !!(want && want.commit && want.qs === qs)};
    if (cache.has(qs)) {  // seen before (Backspace, history): paint it at once
      var s = ++seq;
      abortOlder(s);
      land(s, qs, want.commit, 200, cache.get(qs), null);
      want = null;
      return;
    }
    if (now) {
      clearTimeout(trailing); trailing = null;
      send(true);
    } else {
      pump();
    }
  }

  // Send what is wanted when the throttle allows and no request is out (or the one out is stalled):
  // the server computes a request even when the page aborts it, so piling requests up only queues
  // them behind each other. An answer landing sends the newest prompt at once.
  function pump() {
    if (!want) return;
    var now = performance.now();
    var busy = inflight.filter(function (r) { return now - r.started < STALL_MS; });
    var wait = busy.length ? busy[0].started + STALL_MS - now : lastSent + THROTTLE_MS - now;
    clearTimeout(trailing);
    trailing = null;
    if (wait > 0) {
      trailing = setTimeout(function () { trailing = null; pump(); }, wait);
      return;
    }
    send(false);
  }

  function send(urgent) {
    var w = want;
    want = null;
    var s = ++seq;
    lastSent = performance.now();
    if (urgent) abortOlder(s);
    while (inflight.length >= MAX_INFLIGHT) inflight.shift().ctl.abort();
    var ctl = new AbortController();
    var entry = {seq: s, ctl: ctl, started: lastSent, qs: w.qs, commit: w.commit};
    inflight.push(entry);
    results.setAttribute("aria-busy", "true");
    var status = 0, headers = null;
    fetch(endpoint + "?" + w.qs, {signal: ctl.signal, credentials: "same-origin",
                                  headers: {"Accept": "text/html"}})
      .then(function (resp) { status = resp.status; headers = resp.headers; return resp.text(); })
      .then(function (text) { land(s, w.qs, entry.commit, status, text, headers); },
            function (err) {
              if (err && err.name === "AbortError") return;
              if (s === seq) showProblem("the server did not answer (" + (err && err.message || err) + "); try again");
            })
      .then(function () {
        inflight = inflight.filter(function (r) { return r.seq !== s; });
        if (!inflight.length) results.setAttribute("aria-busy", "false");
        pump();
      });
  }

  function learnFrom(message) {
    var m = /reads at most (\d+)/.exec(message);
    if (m && !context) context = parseInt(m[1], 10);
    // The server's message quotes the vocabulary as Python writes a string.
    var v = /the vocabulary is (['"])([\s\S]*)\1\s*$/.exec(message);
    if (v && !vocab) {
      vocab = v[2].replace(/\\(x[0-9a-f]{2}|u[0-9a-f]{4}|.)/gi, function (_, e) {
        if (e === "n") return "\n";
        if (e === "t") return "\t";
        if (e === "r") return "\r";
        if (e[0] === "x" || e[0] === "u") return String.fromCharCode(parseInt(e.slice(1), 16));
        return e;
      });
    }
  }

  function morph(html) {
    if (window.Idiomorph) {
      window.Idiomorph.morph(results, html, {morphStyle: "innerHTML", callbacks: {
        beforeAttributeUpdated: function (name, el) { return !(name === "open" && el.tagName === "DETAILS"); }
      }});
    } else {
      results.innerHTML = html;
    }
  }

  function land(s, qs, commit, status, text, headers) {
    if (s < shownSeq) return;  // older than the answer on screen: never replaces it
    if (status === 200) {
      abortOlder(s);
      shownSeq = s;
      cache.delete(qs);
      cache.set(qs, text);
      if (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value);
      morph(text);
      var a = results.querySelector(".answer");
      shownQs = qs;
      results.dataset.prompt = a ? a.dataset.prompt : "";
      if (a && a.dataset.vocab && !vocab) vocab = a.dataset.vocab;
      var current = qs === query().toString();
      if (current) {
        clearProblem();
        drawBox(null);
        if (a) {
          say(a.dataset.summary);
          document.title = a.dataset.prompt.replace(/\n/g, "\u23ce") + " \u00b7 ffnlens";
          writeHistory(a.dataset.permalink, qs, commit || pauseDue);
        }
      }
      dim();
      return;
    }
    if (s !== seq || qs !== query().toString()) return;  // a newer request will decide
    var msg;
    if (status === 503) {  // the server's reason (a full gate, a shard restarting), then a retry
      var after = parseFloat(headers && headers.get("Retry-After")) || 1;
      msg = serverMessage(text, "the server is busy") + " (retrying in " + after + " s)";
      clearTimeout(retryTimer);
      retryTimer = setTimeout(function () { if (s === seq) schedule(qs, commit); }, after * 1000);
    } else if (status >= 400 && status < 500) {
      msg = serverMessage(text, "the server refused this query (" + status + ")");
      learnFrom(msg);
    } else {
      msg = "the server could not answer (" + status + "); try again";
    }
    var c = checkPrompt(box.value);
    drawBox(c && c.bad);
    showProblem(msg);
  }

  // The message of an answer's error paragraph (templates/_results.html), else ``fallback``.
  function serverMessage(text, fallback) {
    var t = document.createElement("template");
    t.innerHTML = text || "";
    var e = t.content.querySelector(".error");
    return e ? e.textContent.trim() : fallback;
  }

  function writeHistory(url, qs, commitNow) {
    if (!url) return;
    var here = location.pathname + location.search;
    var state = {ffnlens: 1, qs: qs};
    if (committed && url !== here) {
      history.pushState(state, "", url);
      committed = false;
    } else {
      history.replaceState(state, "", url);
    }
    if (commitNow) { committed = true; pauseDue = false; }
  }

  // ---- what the user does -------------------------------------------------------------------------
  function edited(now) {
    var c = checkPrompt(box.value);
    drawBox(c && c.bad);
    var s = checkSettings();
    if (c || s) {
      cancelAll();
      showProblem(c ? c.message : s);
      return;
    }
    clearProblem();
    var qs = query().toString();
    if (qs === shownQs && !inflight.length) {
      cancelAll();
      dim();
      if (now) writeHistory(location.pathname + location.search, qs, true);
      return;
    }
    dim();
    var out = inflight[inflight.length - 1];
    if (out && out.qs === qs && out.seq === seq) {  // already asked (a change, then a submit)
      out.commit = out.commit || !!now;
      want = null;
      clearTimeout(trailing); trailing = null;
      return;
    }
    schedule(qs, now);
  }

  box.addEventListener("input", function () {
    grow();
    pauseDue = false;
    clearTimeout(pauseTimer);
    pauseTimer = setTimeout(function () {
      pauseDue = true;
      if (shownQs === query().toString()) { committed = true; pauseDue = false; }
    }, PAUSE_MS);
    edited(false);
  });
  box.addEventListener("scroll", function () { if (backdrop) backdrop.scrollTop = box.scrollTop; });
  box.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      edited(true);
    }
  });
  form.addEventListener("input", function (ev) {
    if (ev.target !== box && (ev.target.type === "text" || ev.target.type === "number")) checkSettings();
  });
  form.addEventListener("change", function (ev) {
    if (ev.target === box) return;  // leaving the box is not a new query
    if (ev.target.name === "mode") modeChanged();
    edited(true);
  });
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    edited(true);
  });

  window.addEventListener("popstate", function () {
    cancelAll();
    clearTimeout(pauseTimer);
    committed = true;
    pauseDue = false;
    var usp = new URLSearchParams(location.search);
    restoreForm(usp);
    grow();
    clearProblem();
    checkSettings();
    var c = checkPrompt(box.value);
    drawBox(c && c.bad);
    if (!box.value) {
      shownQs = null;
      results.dataset.prompt = "";
      if (cache.has("")) morph(cache.get(""));
      else while (results.firstChild) results.removeChild(results.firstChild);
      results.classList.remove("stale");
      return;
    }
    var qs = query().toString();
    if (cache.has(qs)) {
      var s = ++seq;
      land(s, qs, true, 200, cache.get(qs), null);
    } else {
      want = {qs: qs, commit: true};
      dim();
      send(true);
    }
  });

  // ---- the page as loaded ------------------------------------------------------------------------------
  modeChanged();
  var first = results.querySelector(".answer");
  var initialQs = query().toString();
  if (first) {
    shownQs = initialQs;
    cache.set(initialQs, results.innerHTML);
    if (!vocab) vocab = first.dataset.vocab || "";
  } else if (!box.value) {
    cache.set("", results.innerHTML);  // the introduction, for going back to the empty page
  } else {
    var e0 = results.querySelector(".error");
    if (e0) learnFrom(e0.textContent.trim());
  }
  history.replaceState({ffnlens: 1, qs: initialQs}, "", location.href);
  if (box.value) grow();
  var c0 = box.value ? checkPrompt(box.value) : null;
  drawBox(c0 && c0.bad);
  checkSettings();
})();
