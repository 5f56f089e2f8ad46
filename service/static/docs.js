// Swagger UI over this server's own /openapi.json; "Try it out" sends requests to this origin.
// validatorUrl null: no badge fetched from swagger.io, so the page works offline.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  displayRequestDuration: true,
  defaultModelsExpandDepth: 1,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
