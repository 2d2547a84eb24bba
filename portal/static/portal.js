// The portal's only script: it makes pages nicer, and every page works without it.
// - times: shown in the reader's own zone (the UTC instant stays on hover);
// - By User: search as you type (the form's GET works without it);
// - users boxes (By User's add form, By Product's assign form): the team's members whose
//   name or email begins with the line being typed, in a listbox to pick from; the one
//   picked is written as "Full Name <email>" (without script, the box is typed in);
// - long product lists (a member's products, By User's add form, team defaults): a box
//   that narrows the boxes shown to the products whose name or id holds what is typed;
// - usage: the stacked chart, drawn by the vendored Chart.js from the page's JSON;
// - the focus at load on what a form's answer says (a refusal above the form, else what
//   was done), unless a control has it already (autofocus: the first refused control).
"use strict";

// A screen reader starts where the focus is: on the page's refusal (base.html's form
// error, error.html's message), else on the line saying what a form did (the flash). A
// refused control (autofocus, _macros.html) keeps it; so does a page moved from already.
function focusTheAnswer() {
  if (document.querySelector("[autofocus]")) return;
  const active = document.activeElement;
  if (active && active !== document.body) return;
  const said = document.querySelector("main > p.error[role=alert]")
    || document.querySelector("main > p.flash");
  if (!said) return;
  said.tabIndex = -1;
  said.focus();
}

function localTimes(root) {
  const format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
    timeZoneName: "short",
  });
  for (const el of root.querySelectorAll("time[datetime]")) {
    const t = new Date(el.getAttribute("datetime"));
    if (!Number.isNaN(t.getTime())) el.textContent = format.format(t);
  }
}

function searchAsYouType() {
  const input = document.getElementById("q");
  const rows = document.getElementById("user-rows");
  if (!input || !rows || !input.dataset.rows) return;
  const status = document.getElementById("q-status");
  let timer = null;
  let asked = 0;
  // While a search is under way (a server slow to answer may take a minute), the status
  // line says so and the rows are marked busy; the latest search's answer clears both.
  function settled() {
    rows.removeAttribute("aria-busy");
    if (status) status.textContent = "";
  }
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const query = input.value.trim();
      const mine = ++asked;
      rows.setAttribute("aria-busy", "true");
      if (status) {
        status.textContent = query
          ? "Searching for \u201c" + query + "\u201d\u2026"
          : "Loading the team's members\u2026";
      }
      let html;
      try {
        const answer = await fetch(input.dataset.rows + "?q=" + encodeURIComponent(query), {
          credentials: "same-origin", headers: { accept: "text/html" },
        });
        if (answer.redirected) {  // the session is over: the rows' address sent us to sign in
          window.location.assign(answer.url);
          return;
        }
        // Rows come marked, a refusal's (403, 503...) too; anything else (a proxy's error
        // page, the portal's own for a failure) is not put in the table.
        if (mine !== asked) return;
        if (answer.headers.get("X-Tessera-Rows") !== "1") throw new Error(String(answer.status));
        html = await answer.text();
      } catch {
        // Offline, or an answer that is not rows: the table still shows the last list, so
        // say that it is not this search's, and that the button still works.
        if (mine === asked) {
          settled();
          if (status) {
            status.textContent = "The search for \u201c" + query + "\u201d could not be made "
              + "(the portal did not answer); the list below is the one before. "
              + "Press Search to try again.";
          }
        }
        return;
      }
      if (mine !== asked) return;
      settled();
      rows.innerHTML = html;
      localTimes(rows);
      const url = new URL(window.location.href);
      if (query) url.searchParams.set("q", query); else url.searchParams.delete("q");
      url.searchParams.delete("page");
      window.history.replaceState(null, "", url);
      rows.dataset.query = query;
    }, 150);
  });
}

// The users boxes' suggestions: the box (a textbox) owns a listbox of the members found
// for its current line (aria-controls, aria-activedescendant); Down and Up choose one,
// Enter or a click picks it, Escape closes the list; a status line says what was found.
function memberSuggestions() {
  for (const box of document.querySelectorAll("textarea[data-suggest]")) suggesting(box);
}

function suggesting(box) {
  const list = document.getElementById(box.id + "-suggestions");
  const status = document.getElementById(box.id + "-found");
  const hint = document.getElementById(box.id + "-hint");
  if (!list || !status) return;
  box.setAttribute("aria-autocomplete", "list");
  box.setAttribute("aria-controls", list.id);
  if (hint) {
    hint.hidden = false;
    const described = (box.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
    box.setAttribute("aria-describedby", [hint.id, status.id, ...described].join(" "));
  }
  let timer = null;
  let asked = 0;
  let found = [];
  let active = -1;

  function currentLine() {
    const at = box.selectionStart;
    const start = at > 0 ? box.value.lastIndexOf("\n", at - 1) + 1 : 0;
    const next = box.value.indexOf("\n", at);
    const end = next < 0 ? box.value.length : next;
    return { start, end, text: box.value.slice(start, end) };
  }

  function close() {
    found = [];
    active = -1;
    list.hidden = true;
    list.replaceChildren();
    box.removeAttribute("aria-activedescendant");
  }

  function choose(n) {
    active = n;
    [...list.children].forEach((option, i) => option.setAttribute("aria-selected", String(i === n)));
    const option = list.children[n];
    if (!option) {
      box.removeAttribute("aria-activedescendant");
      return;
    }
    box.setAttribute("aria-activedescendant", option.id);
    option.scrollIntoView({ block: "nearest" });
  }

  function pick(n) {
    const user = found[n];
    if (!user) return;
    const line = currentLine();
    box.value = box.value.slice(0, line.start) + user.line + box.value.slice(line.end);
    const caret = line.start + user.line.length;
    box.setSelectionRange(caret, caret);
    close();
    status.textContent = "Picked " + (user.name || user.email) + ": " + user.line;
    box.focus();
  }

  function show(users, query) {
    close();
    found = users;
    if (!users.length) {
      status.textContent = "No member's name or email starts with \u201c" + query + "\u201d.";
      return;
    }
    users.forEach((user, n) => {
      const option = document.createElement("li");
      option.id = list.id + "-" + n;
      option.setAttribute("role", "option");
      option.setAttribute("aria-selected", "false");
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = user.name || user.email;
      const email = document.createElement("span");
      email.className = "muted";
      email.textContent = user.email;
      option.append(name, " ", email);
      option.addEventListener("mousedown", (event) => {
        event.preventDefault();  // the box keeps the focus
        pick(n);
      });
      list.append(option);
    });
    list.hidden = false;
    const count = users.length === 1 ? "1 member matches" : users.length + " members match";
    status.textContent = count + ": Down and Up to choose, Enter to pick, Escape to close.";
  }

  box.addEventListener("input", () => {
    clearTimeout(timer);
    const query = currentLine().text.trim();
    // Too short (two characters: an emoji is two UTF-16 units of .length), or written
    // out already.
    if ([...query].length < 2 || /[<>]/.test(query)) {
      asked++;
      close();
      return;
    }
    timer = setTimeout(async () => {
      const mine = ++asked;
      let body;
      try {
        const answer = await fetch(box.dataset.suggest + "?q=" + encodeURIComponent(query), {
          credentials: "same-origin", headers: { accept: "application/json" },
        });
        if (answer.redirected) {  // the session is over: the address sent us to sign in
          window.location.assign(answer.url);
          return;
        }
        if (mine !== asked) return;
        const kind = answer.headers.get("content-type") || "";
        if (!kind.startsWith("application/json")) throw new Error(String(answer.status));
        body = await answer.json();  // throws on a proxy's page labelled JSON
      } catch {
        // Offline, or an answer that is not the portal's JSON: the list shown is another
        // line's, so it is closed (Enter keeps the line typed), and the status says so.
        if (mine === asked) {
          close();
          status.textContent = "Suggestions are unavailable (the portal did not answer): "
            + "type the line in full, as Full Name <email>.";
        }
        return;
      }
      if (mine !== asked || document.activeElement !== box) return;
      if (body.error) {
        close();
        status.textContent = body.error;
        return;
      }
      show(body.users || [], query);
    }, 150);
  });

  box.addEventListener("keydown", (event) => {
    if (list.hidden || !found.length) return;
    if (event.key === "ArrowDown") {
      event.preventDefault();
      choose((active + 1) % found.length);
    } else if (event.key === "ArrowUp") {
      event.preventDefault();
      choose(active <= 0 ? found.length - 1 : active - 1);
    } else if (event.key === "Enter" && active >= 0) {
      event.preventDefault();
      pick(active);
    } else if (event.key === "Escape") {
      event.preventDefault();
      close();
      status.textContent = "";
    }
  });
  box.addEventListener("click", () => { asked++; close(); });  // the caret went elsewhere
  box.addEventListener("blur", () => { asked++; close(); });
}

const COLORS = ["#2f6fdf", "#e07b24", "#2e9e5b", "#b4407a", "#7a5bd0", "#c9a227", "#1f9bb3", "#8a8a8a"];

// Past this many product boxes, a list gets a filter above it.
const FILTER_FROM = 10;

// Case and accents aside: "revit" finds "Révit".
function folded(text) {
  return text.normalize("NFD").replace(/\p{M}/gu, "").toLowerCase();
}

// A product list's boxes are hidden, never unticked, by its filter: a form sent while the
// filter hides a ticked box still sends it, and the status line says how many it hides.
function productFilters() {
  let n = 0;
  for (const set of document.querySelectorAll("fieldset.choices")) {
    const labels = [...set.querySelectorAll("label")].filter(
      (label) => label.querySelector("input[name=product_ids]"),
    );
    if (labels.length <= FILTER_FROM) continue;
    const texts = labels.map(
      (label) => folded(label.textContent + " " + label.querySelector("input").value),
    );
    const id = "product-filter-" + ++n;
    const line = document.createElement("p");
    line.className = "filter";
    const name = document.createElement("label");
    name.htmlFor = id;
    name.textContent = "Filter products";
    const box = document.createElement("input");
    box.type = "search";
    box.id = id;
    box.autocomplete = "off";
    const status = document.createElement("span");
    status.id = id + "-status";
    status.className = "muted";
    status.setAttribute("aria-live", "polite");
    box.setAttribute("aria-describedby", status.id);
    line.append(name, " ", box, " ", status);
    labels[0].before(line);
    // Enter in the filter would send the form with what the filter happens to show.
    box.addEventListener("keydown", (event) => {
      if (event.key === "Enter") event.preventDefault();
    });
    box.addEventListener("input", () => {
      const query = folded(box.value.trim());
      let shown = 0;
      let tickedHidden = 0;
      labels.forEach((label, i) => {
        label.hidden = Boolean(query) && !texts[i].includes(query);
        if (!label.hidden) shown++;
        else if (label.querySelector("input").checked) tickedHidden++;
      });
      let said = query ? shown + " of " + labels.length + " products shown" : "";
      if (tickedHidden) said += "; " + tickedHidden + " ticked, hidden by the filter, stay ticked";
      status.textContent = said;
    });
  }
}

function usageChart() {
  const data = document.getElementById("usage-data");
  const canvas = document.getElementById("usage-chart");
  if (!data || !canvas || typeof window.Chart === "undefined") return;
  const chart = JSON.parse(data.textContent);
  chart.datasets.forEach((set, n) => { set.backgroundColor = COLORS[n % COLORS.length]; });
  window.tesseraUsageChart = new window.Chart(canvas, {
    type: "bar",
    data: chart,
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      scales: {
        x: { stacked: true },
        y: { stacked: true, beginAtZero: true, title: { display: true, text: "tokens" } },
      },
      plugins: { legend: { position: "bottom" } },
    },
  });
}

document.addEventListener("DOMContentLoaded", () => {
  focusTheAnswer();
  localTimes(document);
  searchAsYouType();
  memberSuggestions();
  productFilters();
  usageChart();
});
