// tmcaldav's web interface: the little that needs script. Everything works without it
// except the live updates and the selection shortcuts.
"use strict";

// Escape hides an open tooltip until the pointer or focus leaves (WCAG 1.4.13).
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  for (const cell of document.querySelectorAll("td.cal")) {
    if (cell.matches(":hover, :focus-within")) cell.classList.add("tip-off");
  }
});
for (const type of ["mouseleave", "focusout"]) {
  document.addEventListener(type, (event) => {
    const cell = event.target instanceof Element ? event.target.closest("td.cal") : null;
    if (cell) cell.classList.remove("tip-off");
  }, true);
}

// Selection shortcuts: "All enrolled", "Waitlisted", "None".
document.addEventListener("click", (event) => {
  const button = event.target instanceof Element ? event.target.closest("[data-select]") : null;
  if (button) {
    const want = button.getAttribute("data-select");
    for (const row of document.querySelectorAll("#students tr[data-email]")) {
      const box = row.querySelector("input[type=checkbox][name=email]");
      if (box) box.checked = want !== "none" && row.getAttribute("data-status") === want;
    }
  }
  const mark = event.target instanceof Element ? event.target.closest("[data-mark]") : null;
  if (mark) {
    const value = mark.getAttribute("data-mark");
    for (const radio of document.querySelectorAll(`form.attendance input[type=radio][value="${value}"]`)) {
      radio.checked = true;
    }
  }
});

// The live session page: the server says "this session changed" (Server-Sent Events);
// the page fetches itself again and swaps in what changed, keeping ticks and focus.
(function live() {
  const main = document.querySelector("main[data-live]");
  if (!main || !window.EventSource) return;
  const status = document.getElementById("live-status");
  let change = main.getAttribute("data-change") || "0";
  let source = null;
  let busy = false;
  let again = false;

  function say(text, offline) {
    if (!status) return;
    status.textContent = text;
    status.classList.toggle("offline", Boolean(offline));
  }

  function swapRows(fresh) {
    const tbody = document.getElementById("students");
    const newBody = fresh.getElementById("students");
    if (!tbody || !newBody) return;
    const old = new Map();
    for (const row of tbody.querySelectorAll("tr[data-email]")) old.set(row.dataset.email, row);
    const ticked = new Set();
    for (const box of tbody.querySelectorAll("input[name=email]:checked")) ticked.add(box.value);
    const typed = new Map();
    for (const input of tbody.querySelectorAll(".add-note input")) {
      if (input.value) typed.set(input.getAttribute("form"), input.value);
    }
    const active = document.activeElement;
    const activeRow = active && active.closest ? active.closest("tr[data-email]") : null;
    const activeKey = activeRow ? [activeRow.dataset.email, active.className, active.getAttribute("form")] : null;
    const rows = [];
    for (const row of newBody.querySelectorAll("tr[data-email]")) {
      const mine = old.get(row.dataset.email);
      rows.push(mine && mine.outerHTML === row.outerHTML ? mine : document.importNode(row, true));
    }
    tbody.replaceChildren(...rows);
    for (const box of tbody.querySelectorAll("input[name=email]")) box.checked = ticked.has(box.value);
    for (const input of tbody.querySelectorAll(".add-note input")) {
      const value = typed.get(input.getAttribute("form"));
      if (value) input.value = value;
    }
    if (activeKey && !tbody.contains(active)) {
      for (const row of tbody.querySelectorAll("tr[data-email]")) {
        if (row.dataset.email !== activeKey[0]) continue;
        const same = Array.from(row.querySelectorAll("a, input, button")).find(
          (el) => el.className === activeKey[1] && el.getAttribute("form") === activeKey[2]);
        if (same) same.focus();
      }
    }
  }

  function swap(id, fresh) {
    const mine = document.getElementById(id);
    const theirs = fresh.getElementById(id);
    if (mine && theirs && mine.outerHTML !== theirs.outerHTML) mine.replaceWith(document.importNode(theirs, true));
  }

  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const response = await fetch(window.location.pathname, {
        credentials: "same-origin", headers: { "Accept": "text/html" }, cache: "no-store",
      });
      if (!response.ok) throw new Error(String(response.status));
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      const freshMain = fresh.querySelector("main[data-live]");
      if (!freshMain) return;
      swap("summary", fresh);
      swap("roster-head", fresh);
      swapRows(fresh);
      swap("note-forms", fresh);
      swap("suggestions", fresh);
      change = freshMain.getAttribute("data-change") || change;
      main.setAttribute("data-change", change);
      say("Live: updated " + new Date().toLocaleTimeString() + ".");
    } catch (error) {
      say("Could not refresh the page (" + error.message + "); retrying.", true);
      again = true;
    } finally {
      busy = false;
      if (again) { again = false; setTimeout(refresh, 500); }
    }
  }

  function connect() {
    const url = main.getAttribute("data-live") + "?after=" + encodeURIComponent(change);
    source = new EventSource(url);
    source.addEventListener("change", (event) => {
      change = event.lastEventId || change;
      refresh();
    });
    source.addEventListener("open", () => say("Live: answers appear as they arrive."));
    source.addEventListener("error", () => {
      say("Reconnecting…", true);
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (a 401 after the login expired, say): start afresh soon.
        setTimeout(connect, 3000);
      }
    });
  }
  connect();
})();
