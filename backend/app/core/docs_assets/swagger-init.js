// Swagger UI start-up, served as a file so that the docs page needs no inline script (CSP script-src 'self').
// The page passes its settings in data- attributes of the #swagger-ui element.
(function () {
  "use strict";
  function start() {
    var element = document.getElementById("swagger-ui");
    window.ui = SwaggerUIBundle({
      url: element.dataset.openapiUrl,
      dom_id: "#swagger-ui",
      layout: "BaseLayout",
      deepLinking: true,
      showExtensions: true,
      showCommonExtensions: true,
      persistAuthorization: false,
      validatorUrl: null,
      oauth2RedirectUrl: window.location.origin + element.dataset.oauth2RedirectUrl,
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
    });
  }
  if (document.readyState !== "loading") {
    start();
  } else {
    document.addEventListener("DOMContentLoaded", start);
  }
})();
