// Live updates for the Waymark dashboard: the server sends HTML fragments, each one element
// with an id; the element with that id is replaced (a new Release's section is added). Without
// JavaScript the page still works: it is rendered whole, with a link to refresh it.
"use strict";
(function () {
  var status = document.getElementById("live-status");
  var releases = document.getElementById("releases");

  function say(text) {
    if (status) { status.textContent = text; }
  }

  function parse(html) {
    var template = document.createElement("template");
    template.innerHTML = html;
    return template.content.firstElementChild;
  }

  function place(element) {
    var old = document.getElementById(element.id);
    if (old) {
      // Keep open details (timeline, post-mortem) open across updates.
      old.querySelectorAll("details[open]").forEach(function (open) {
        var index = Array.prototype.indexOf.call(old.querySelectorAll("details"), open);
        var twin = element.querySelectorAll("details")[index];
        if (twin) { twin.open = true; }
      });
      // Keep the keyboard where it was: focus the same link or summary in the new copy.
      var focusable = "a, summary, [tabindex]";
      var focused = Array.prototype.indexOf.call(old.querySelectorAll(focusable), document.activeElement);
      old.replaceWith(element);
      var again = element.querySelectorAll(focusable)[focused];
      if (focused >= 0 && again) { again.focus(); }
    } else if (releases && element.classList.contains("release")) {
      var empty = document.getElementById("no-releases");
      if (empty) { empty.remove(); }
      releases.appendChild(element);
    }
  }

  var source = new EventSource("/events");
  source.addEventListener("fragment", function (event) {
    var element = parse(event.data);
    if (!element || !element.id) { return; }
    var before = document.getElementById(element.id);
    var changed = !before || before.outerHTML !== element.outerHTML;
    place(element);
    if (changed && element.dataset.summary) { say("Updated: " + element.dataset.summary); }
  });
  source.addEventListener("remove", function (event) {
    var gone = document.getElementById(event.data);
    if (gone) {
      gone.remove();
      say("Removed: " + event.data.replace(/^release-/, ""));
    }
  });
  source.addEventListener("sections", function (event) {
    // Drop the sections of Releases deleted while the page was not listening.
    var kept = event.data.split(" ");
    document.querySelectorAll("section.release").forEach(function (section) {
      if (kept.indexOf(section.id) < 0) { section.remove(); }
    });
  });
  source.onerror = function () {
    say("Live updates lost; reconnecting. Refresh the page to be sure.");
  };
})();
