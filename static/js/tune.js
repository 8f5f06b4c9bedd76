// ffnlens, the tuning page: sliders move thresholds along their grids and weights along their stops;
// the figures come back from /tune/figures, a lookup on the server (no search). No inline script:
// the page's CSP allows our files only.
//
// - Each slider writes its value into the thresholds / weights fields (the form the page submits
//   without JavaScript too) and its label, then asks for the figures: a throttle with a trailing
//   call (at most one request per THROTTLE_MS while a slider moves, the last position always
//   sent), a newer request aborting older ones, an older answer never replacing a newer one.
// - Typing in a field or the prompt asks after a short pause; the blend asks at once.
// - The address bar follows the figures on screen (replaceState: a drag is not a history of
//   entries; the Show button and the fit links make entries).
(function () {
  "use strict";
  var form = document.getElementById("tune");
  var target = document.getElementById("tune-figures");
  if (!form || !target || !window.fetch || !window.AbortController) return;
  var THROTTLE_MS = 100, TYPE_MS = 300;
  var endpoint = form.dataset.figures;
  var thr = document.getElementById("t-thresholds"), wts = document.getElementById("t-weights");
  var seq = 0, shown = 0, ctl = null, last = -Infinity, trailing = null, typing = null;

  function values(field) { return field.value.split(",").map(function (s) { return s.trim(); }); }

  function fmt(x) { return String(Number(x.toPrecision(6))); }

  function fromSlider(el) {
    var b = Number(el.closest("fieldset").dataset.block);
    var list = JSON.parse(el.classList.contains("thr") ? el.dataset.levels : el.dataset.stops);
    var v = fmt(list[Number(el.value)]);
    var field = el.classList.contains("thr") ? thr : wts;
    var vals = values(field);
    vals[b] = v;
    field.value = vals.join(",");
    el.parentNode.querySelector("output").textContent = v;
  }

  function ask() {
    last = performance.now();
    trailing = null;
    var my = ++seq;
    if (ctl) ctl.abort();
    ctl = new AbortController();
    var qs = new URLSearchParams(new FormData(form)).toString();
    target.classList.add("stale");
    fetch(endpoint + "?" + qs, {signal: ctl.signal, headers: {"Accept": "text/html"}})
      .then(function (r) { return r.text(); })
      .then(function (html) {
        if (my < shown) return;
        shown = my;
        target.innerHTML = html;
        if (my === seq) target.classList.remove("stale");
        var figs = target.querySelector(".tune-figs");
        if (figs && figs.dataset.permalink) history.replaceState(null, "", figs.dataset.permalink);
      })
      .catch(function () { /* aborted by a newer request */ });
  }

  function soon() {
    var wait = THROTTLE_MS - (performance.now() - last);
    if (wait <= 0) { ask(); return; }
    if (!trailing) trailing = setTimeout(ask, wait);
  }

  form.addEventListener("input", function (e) {
    var el = e.target;
    if (el.type === "range") { fromSlider(el); soon(); return; }
    clearTimeout(typing);
    typing = setTimeout(ask, TYPE_MS);
  });
  form.addEventListener("change", function (e) {
    if (e.target.type === "range" || e.target.tagName === "SELECT") ask();
  });
})();
