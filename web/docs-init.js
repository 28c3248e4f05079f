// Starts the API reference viewer on /docs (served by the binary, like the viewer's own files).
// validatorUrl: null keeps Swagger UI from sending the document to an online validator.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    docExpansion: "list",
    defaultModelsExpandDepth: 1,
    displayRequestDuration: true,
    showExtensions: true,
    showCommonExtensions: true,
  });
});
