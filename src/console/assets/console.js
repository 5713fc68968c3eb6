// sfcdc console: live refresh. Pages work without it; with it, a page marked data-live swaps in
// the fresh #live region every few seconds, keeping the URL (and so its filters), the scroll
// position and anything being typed. Embedded in the binary; no framework, no network but the
// page's own URL.
(function () {
  "use strict";
  var every = Number(document.body.getAttribute("data-live") || 0);
  var status = document.getElementById("live-status");
  function say(text) { if (status) { status.textContent = text; } }
  if (!every) { return; }
  var busy = false;
  function editing(region) {
    var a = document.activeElement;
    return a && region.contains(a) && /^(INPUT|SELECT|TEXTAREA)$/.test(a.tagName);
  }
  function tick() {
    var region = document.getElementById("live");
    if (!region || busy || document.hidden || editing(region)) { return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store",
                                 headers: { "X-Sfcdc-Refresh": "1" } })
      .then(function (r) {
        if (!r.ok || r.redirected) { throw new Error("status " + r.status); }
        return r.text();
      })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("live");
        var now = document.getElementById("live");
        if (fresh && now && !editing(now)) {
          now.replaceWith(document.importNode(fresh, true));
        }
        say("live, updated " + new Date().toLocaleTimeString());
      })
      .catch(function () { say("live updates paused (reload to log in again)"); })
      .then(function () { busy = false; });
  }
  say("live, every " + every + " s");
  window.setInterval(tick, every * 1000);
})();
