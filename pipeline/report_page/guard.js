(function () {
  "use strict";
  // Script errors, rejected promises and blocked loads end up in <html data-errors> for tests.
  var root = document.documentElement, errors = [];
  function note(text) {
    errors.push(String(text).slice(0, 500));
    root.setAttribute("data-errors", JSON.stringify(errors));
  }
  root.setAttribute("data-errors", "[]");
  window.addEventListener("error", function (e) {
    if (e.target && e.target !== window && e.target.tagName) {
      if (e.target.tagName !== "AUDIO" && e.target.tagName !== "SOURCE") note("failed to load " + e.target.tagName);
      return;
    }
    note((e.message || "error") + (e.lineno ? " at line " + e.lineno : ""));
  }, true);
  window.addEventListener("unhandledrejection", function (e) {
    note("unhandled rejection: " + (e.reason && e.reason.message ? e.reason.message : e.reason));
  });
  document.addEventListener("securitypolicyviolation", function (e) {
    note("blocked by the page's policy: " + e.violatedDirective + " " + e.blockedURI);
  });
})();
