// Starts swagger-ui on the gateway's merged document. The page is GET /api/docs, so
// "openapi.json" is GET /api/openapi.json. validatorUrl: null: no badge fetched from the
// public validator (the page talks to the gateway only).
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: new URL("openapi.json", document.baseURI).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
  });
});
