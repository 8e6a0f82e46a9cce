// The dashboard's charts: the data is the page's json_script element (#dashboard-data), drawn with the vendored
// Chart.js (portal/vendor/chart.umd.min.js, loaded before this file). Each canvas has the same figures in a table
// under it, for screen readers and for a browser without JavaScript.
(function () {
  const source = document.getElementById("dashboard-data");
  if (!source || typeof Chart === "undefined") return;
  const data = JSON.parse(source.textContent);
  const colors = { blue: "#0b5cad", red: "#b42318", green: "#1a7f37", orange: "#d97706", purple: "#7c3aed" };
  const days = data.by_day.map((day) => day.date.slice(5));  // MM-DD
  const common = { responsive: true, maintainAspectRatio: false, animation: false, interaction: { mode: "index", intersect: false } };

  function series(label, rows, field, color, extra) {
    return Object.assign({ label, data: rows.map((row) => row[field]), borderColor: color, backgroundColor: color, tension: 0.2 }, extra);
  }

  function draw(id, config) {
    const canvas = document.getElementById(id);
    if (canvas) canvas.chart = new Chart(canvas, config);
  }

  draw("chart-requests", {
    type: "line",
    data: { labels: days, datasets: [
      series("Requests", data.by_day, "requests", colors.blue),
      series("Errors", data.by_day, "errors", colors.red),
      series("Cached hits", data.by_day, "cached", colors.green),
    ] },
    options: Object.assign({ scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } }, common),
  });
  draw("chart-volume", {
    type: "bar",
    data: { labels: days, datasets: [
      series("Characters", data.by_day, "characters", colors.blue, { yAxisID: "y" }),
      series("Audio minutes", data.by_day, "audio_minutes", colors.orange, { type: "line", yAxisID: "minutes" }),
    ] },
    options: Object.assign({ scales: {
      y: { beginAtZero: true, title: { display: true, text: "characters" } },
      minutes: { beginAtZero: true, position: "right", grid: { drawOnChartArea: false }, title: { display: true, text: "minutes" } },
    } }, common),
  });
  draw("chart-ttfa", {
    type: "line",
    data: { labels: days, datasets: [series("Avg. time to first audio (ms)", data.by_day, "ttfa_avg_ms", colors.purple, { spanGaps: true })] },
    options: Object.assign({ scales: { y: { beginAtZero: true } } }, common),
  });
  const horizontal = (rows, labelField, id) => draw(id, {
    type: "bar",
    data: { labels: rows.map((row) => row[labelField]), datasets: [
      series("Requests", rows, "requests", colors.blue),
      series("Errors", rows, "errors", colors.red),
      series("Cached hits", rows, "cached", colors.green),
    ] },
    options: Object.assign({ indexAxis: "y", scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } }, common),
  });
  horizontal(data.by_voice, "voice_id", "chart-voices");
  horizontal(data.by_key, "api_key", "chart-keys");
  document.documentElement.dataset.chartsReady = "true";  // for the browser test: every chart was drawn
})();
