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
// Enter runs the query now; Shift+Enter types a newline into the prompt.
document.addEventListener("keydown", function (ev) {
  if (ev.target.id === "prompt" && ev.key === "Enter" && !ev.shiftKey) {
    ev.preventDefault();
    if (window.htmx) { htmx.trigger(ev.target.form, "submit"); } else { ev.target.form.submit(); }
  }
});
