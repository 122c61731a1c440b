// The dashboard's live feed: the merchant's event stream (SSE, same origin, cookie auth) shown
// newest first; a paid session or intent refreshes the revenue section. No dependencies.
(function () {
  "use strict";
  var main = document.getElementById("dashboard");
  if (!main || main.getAttribute("data-feed") !== "on" || !window.EventSource) { return; }
  var list = document.getElementById("feed");
  var state = document.getElementById("feed-state");
  var MAX_ITEMS = 50;
  var TYPES = ["session.created", "session.paid", "session.otp_verified", "parcel.delivered",
    "payment_intent.created", "payment_intent.succeeded", "payment_intent.failed",
    "payment_intent.expired", "payment_intent.cancelled", "refund.succeeded", "refund.failed"];

  // Sessions carry {amount: 2599, currency}; intents and refunds {amount: {value, currency}}.
  function money(d) {
    var value = d.amount, currency = d.currency;
    if (d.amount && typeof d.amount === "object") { value = d.amount.value; currency = d.amount.currency; }
    if (typeof value !== "number" || !currency) { return ""; }
    try {
      var fmt = new Intl.NumberFormat("en", { style: "currency", currency: currency });
      return fmt.format(value / Math.pow(10, fmt.resolvedOptions().maximumFractionDigits));
    } catch (e) { return value + " " + currency; }
  }

  function refreshRevenue() {
    fetch("/dashboard/revenue", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var old = document.getElementById("revenue");
        var box = document.createElement("div");
        box.innerHTML = html;
        var fresh = box.querySelector("#revenue");
        if (old && fresh) { old.replaceWith(fresh); }
      })
      .catch(function () { /* the next paid event refreshes again */ });
  }

  function add(ev) {
    var msg;
    try { msg = JSON.parse(ev.data); } catch (e) { return; }
    var d = msg.data || {};
    var li = document.createElement("li");
    li.setAttribute("data-type", msg.type);
    var ref = d.ipay_reference_display || d.ipay_reference_18 || d.id || "";
    li.textContent = (msg.created || "") + " · " + msg.type + " · " + money(d) + " · " + ref;
    list.insertBefore(li, list.firstChild);
    while (list.children.length > MAX_ITEMS) { list.removeChild(list.lastChild); }
    if (msg.type === "session.paid" || msg.type === "payment_intent.succeeded") { refreshRevenue(); }
  }

  var es = new EventSource("/dashboard/feed");
  es.onopen = function () { state.textContent = "Live"; };
  es.onerror = function () { state.textContent = "Reconnecting…"; };
  TYPES.forEach(function (t) { es.addEventListener(t, add); });
  es.addEventListener("message", add);
})();
