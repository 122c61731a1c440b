// The pay page's live update: polls the consumer API and shows paid, delivered, failed or
// expired without a reload. No dependencies; served from this origin (CSP: script-src 'self').
(function () {
  "use strict";
  var main = document.getElementById("pay");
  if (!main) { return; }
  var token = main.getAttribute("data-token");
  var lang = main.getAttribute("data-lang");
  var status = main.getAttribute("data-status");
  var expires = Date.parse(main.getAttribute("data-expires") || "");
  var INTERVAL_MS = 2000;
  var MAX_POLLS = 1800; // one hour at most, then the consumer reloads by hand
  var polls = 0;

  function show(id, on) {
    var el = document.getElementById(id);
    if (el) { el.hidden = !on; }
  }

  function notice(kind) {
    var el = document.getElementById("notice");
    el.textContent = el.getAttribute("data-" + kind);
    el.hidden = false;
  }

  function apply(view) {
    var was = status;
    status = view.status;
    main.setAttribute("data-status", status);
    if (status === "PAID") {
      document.getElementById("otp").textContent = view.otp || "";
      show("choose", false); show("pending", false); show("notice", false);
      show("paid", true);
    } else if (status === "RELEASED") {
      show("choose", false); show("pending", false); show("paid", false);
      show("delivered", true);
    } else if (status === "CREATED" && was === "PAYMENT_PENDING") {
      // The payment failed or expired: offer the channels again.
      var why = !isNaN(expires) && Date.now() >= expires ? "expired" : "failed";
      window.location.replace("/pay/" + token + "?lang=" + lang + "&notice=" + why);
    } else if (status === "PAYMENT_PENDING" && !isNaN(expires) && Date.now() >= expires) {
      notice("expired");
    }
  }

  function poll() {
    polls += 1;
    if (status === "RELEASED" || polls > MAX_POLLS) { return; }
    fetch("/api/session/" + encodeURIComponent(token), { headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (view) { if (view) { apply(view); } })
      .catch(function () { /* offline for a moment: the next poll retries */ })
      .then(function () { window.setTimeout(poll, INTERVAL_MS); });
  }

  window.setTimeout(poll, INTERVAL_MS);
})();
