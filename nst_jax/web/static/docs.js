// The API docs (/docs): Swagger UI's files from the fastapi-offline package, served by this site, so
// that the page works offline and under the site's Content-Security-Policy (no inline script).
"use strict";
window.addEventListener("load", () => {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
