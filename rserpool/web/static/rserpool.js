/*
 * rserpool: makes the handlespace page live.  The server renders every
 * view as plain HTML (the page works without this script); here the view
 * listens to the registrar's server-sent events and swaps in a fresh copy
 * of its #live part (?fragment=1) when the handlespace changes, at most
 * once a second, and filters as one types.
 */
(function () {
  "use strict";
  var live = document.getElementById("live");
  var status = document.getElementById("live-status");
  var form = document.getElementById("filter");
  if (!live || !window.fetch) { return; }
  var busy = false, again = false, last = 0, timer = null;

  function say(text, cls, title) {
    if (!status) { return; }
    status.textContent = text;
    status.className = "status " + (cls || "");
    status.title = title || "";
  }

  function fragmentURL() {
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    return url.toString();
  }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    last = Date.now();
    fetch(fragmentURL(), { cache: "no-store", credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) { live.innerHTML = html; })
      .catch(function () { say("update failed", "lost"); })
      .then(function () {
        busy = false;
        if (again) { again = false; soon(); }
      });
  }

  // At most one refresh a second, however many changes come.
  function soon() {
    if (timer !== null) { return; }
    var wait = Math.max(0, 1000 - (Date.now() - last));
    timer = window.setTimeout(function () { timer = null; refresh(); }, wait);
  }

  if (window.EventSource) {
    var source = new EventSource("events");
    source.addEventListener("hello", function () { say("live", "live", "updates itself"); });
    source.addEventListener("change", soon);
    source.onerror = function () { say("reconnecting", "lost", "lost the registrar; retrying"); };
  }

  if (form) {
    var input = form.querySelector("input[name=q]");
    var typing = null;
    var apply = function () {
      var url = new URL(window.location.href);
      if (input.value) { url.searchParams.set("q", input.value); } else { url.searchParams.delete("q"); }
      url.searchParams.delete("page");
      window.history.replaceState(null, "", url.toString());
      refresh();
    };
    input.addEventListener("input", function () {
      if (typing !== null) { window.clearTimeout(typing); }
      typing = window.setTimeout(function () { typing = null; apply(); }, 200);
    });
    form.addEventListener("submit", function (event) { event.preventDefault(); apply(); });
  }
})();
