// The corpus page: selecting text in the stretch makes the "use as prompt" link use the selection
// (at most the model's context; the prompt's settings kept from the link).
(function () {
  var link = document.querySelector("a.useprompt");
  var text = document.querySelector("pre.corpus");
  if (!link || !text) return;
  var label = link.querySelector("code");
  var original = label ? label.textContent : "";
  var limit = parseInt(link.dataset.limit, 10) || 64;
  function visible(s) { return s.replace(/ /g, "\u2423").replace(/\n/g, "\u23ce"); }
  document.addEventListener("selectionchange", function () {
    var sel = window.getSelection();
    var s = sel && sel.rangeCount ? sel.toString() : "";
    var inside = s && text.contains(sel.anchorNode) && text.contains(sel.focusNode);
    var url = new URL(link.dataset.base, window.location.href);
    if (inside) {
      s = s.slice(-limit);
      url.searchParams.set("prompt", s);
      if (label) label.textContent = visible(s);
    } else if (label) {
      label.textContent = original;
    }
    link.href = url.pathname + url.search;
  });
})();
