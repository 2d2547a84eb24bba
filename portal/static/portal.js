// The portal's only script: it makes pages nicer, and every page works without it.
// - times: shown in the reader's own zone (the UTC instant stays on hover);
// - By User: search as you type (the form's GET works without it);
// - usage: the stacked chart, drawn by the vendored Chart.js from the page's JSON.
"use strict";

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
  let timer = null;
  let asked = 0;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const query = input.value.trim();
      const mine = ++asked;
      const answer = await fetch(input.dataset.rows + "?q=" + encodeURIComponent(query), {
        credentials: "same-origin", headers: { accept: "text/html" },
      });
      if (answer.redirected) {  // the session is over: the rows' address sent us to sign in
        window.location.assign(answer.url);
        return;
      }
      // Rows come marked, a refusal's (403, 503...) too; anything else (a proxy's error
      // page, the portal's own for a failure) is not put in the table.
      if (mine !== asked || answer.headers.get("X-Tessera-Rows") !== "1") return;
      rows.innerHTML = await answer.text();
      localTimes(rows);
      const url = new URL(window.location.href);
      if (query) url.searchParams.set("q", query); else url.searchParams.delete("q");
      url.searchParams.delete("page");
      window.history.replaceState(null, "", url);
      rows.dataset.query = query;
    }, 150);
  });
}

const COLORS = ["#2f6fdf", "#e07b24", "#2e9e5b", "#b4407a", "#7a5bd0", "#c9a227", "#1f9bb3", "#8a8a8a"];

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
  localTimes(document);
  searchAsYouType();
  usageChart();
});
