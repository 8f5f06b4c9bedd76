// ffnlens: the little the pages need beyond htmx (kept out of the HTML for a strict CSP).
document.addEventListener("click", function (ev) {
  var btn = ev.target.closest("button.copy");
  if (!btn) return;
  var url = new URL(btn.dataset.copy, window.location.href).href;
  var done = function () { btn.textContent = "copied"; setTimeout(function () { btn.textContent = "copy link"; }, 1500); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(url).then(done, function () { window.prompt("Copy this link", url); });
  } else {
    window.prompt("Copy this link", url);
  }
});
// The whole-vocabulary chart: pointing at, tapping or arrowing through a column shows that
// character's two probabilities under the chart (works on answers morphed in later too).
(function () {
  function columns(svg) { return svg.querySelectorAll("g[data-label]"); }
  function show(svg, g) {
    var fig = svg.closest("figure");
    var out = fig && fig.querySelector(".readout");
    Array.prototype.forEach.call(columns(svg), function (x) { x.classList.toggle("on", x === g); });
    if (out) {
      out.textContent = g.dataset.label + "   model " + g.dataset.model + " \u00b7 approximation " + g.dataset.approx;
    }
  }
  function pick(ev) {
    var g = ev.target.closest && ev.target.closest("svg.vocab g[data-label]");
    if (g) show(g.ownerSVGElement, g);
  }
  document.addEventListener("pointermove", pick);
  document.addEventListener("click", pick);
  document.addEventListener("keydown", function (ev) {
    var svg = ev.target.closest && ev.target.closest("svg.vocab");
    if (!svg) return;
    var cols = columns(svg), n = cols.length;
    if (!n) return;
    var i = Array.prototype.findIndex.call(cols, function (x) { return x.classList.contains("on"); });
    if (ev.key === "ArrowRight" || ev.key === "ArrowDown") i = Math.min(n - 1, i + 1);
    else if (ev.key === "ArrowLeft" || ev.key === "ArrowUp") i = i < 0 ? 0 : Math.max(0, i - 1);
    else if (ev.key === "Home") i = 0;
    else if (ev.key === "End") i = n - 1;
    else return;
    ev.preventDefault();
    show(svg, cols[i]);
  });
})();
