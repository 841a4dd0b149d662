// Times arrive as <time datetime="...Z" title="... UTC">: show them in the browser's zone, keep UTC on hover.
(function () {
  "use strict";
  var pad = function (n) { return String(n).padStart(2, "0"); };
  function localize(root) {
    root.querySelectorAll("time[datetime]:not([data-local])").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d)) { return; }
      el.textContent = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
        pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
      el.setAttribute("data-local", "");
    });
    // Filter forms with local date fields say which zone those were typed in (minutes behind UTC).
    root.querySelectorAll("form[data-tz-offset] input[name=tz]").forEach(function (el) {
      el.value = String(new Date().getTimezoneOffset());
    });
  }
  // A namespace or group picker shows its choice at once (the page allows no inline script).
  document.addEventListener("change", function (event) {
    var select = event.target;
    if (!(select instanceof HTMLSelectElement) || !select.hasAttribute("data-autosubmit")) { return; }
    var reset = select.getAttribute("data-resets");
    if (reset && select.form.elements[reset]) { select.form.elements[reset].value = ""; }
    select.form.requestSubmit();
  });
  document.addEventListener("DOMContentLoaded", function () { localize(document); });
  document.addEventListener("htmx:load", function (event) { localize(event.target); });
  // A swapped-in log keeps its view pinned to the newest line while the reader is at the bottom.
  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    var log = document.getElementById("log-lines");
    if (log) { log.dataset.pinned = String(log.scrollHeight - log.scrollTop - log.clientHeight < 24); }
  });
  document.addEventListener("htmx:oobAfterSwap", function () {
    var log = document.getElementById("log-lines");
    if (log && log.dataset.pinned !== "false") { log.scrollTop = log.scrollHeight; }
  });
})();
