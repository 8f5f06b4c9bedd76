// /docs: Swagger UI over this server's OpenAPI description (templates/docs.html; kept out of the
// page for its CSP). No validator badge (it would call validator.swagger.io), no external links.
(function () {
  var el = document.getElementById("swagger-ui");
  if (!el || typeof SwaggerUIBundle !== "function") return;
  el.textContent = "";
  window.ui = SwaggerUIBundle({
    url: el.dataset.openapi,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl]
  });
})();
