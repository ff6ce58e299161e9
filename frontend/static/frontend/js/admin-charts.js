// The admins' budget charts (Chart.js, vendored): data comes from json_script elements in the page.
// Every chart has the same figures in a table next to it, for screen readers and print.
(function () {
  "use strict";
  var PALETTE = ["#0b5cad", "#b35c00", "#1a7f37", "#8250df", "#b42318", "#0a7c86", "#6e7781", "#9a6700"];
  var reduced = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;

  function read(id) {
    var element = document.getElementById(id);
    return element ? JSON.parse(element.textContent) : null;
  }

  // Ticks show a day as MM-DD (the tables beside the charts keep the full date).
  function shortDay(value) {
    var label = this.getLabelForValue(value);
    return /^\d{4}-\d{2}-\d{2}$/.test(label) ? label.slice(5) : label;
  }

  function capLine(labels, cap, label) {
    return {type: "line", label: label, data: labels.map(function () { return cap; }), borderColor: "#b42318",
            borderDash: [6, 4], pointRadius: 0, borderWidth: 2, fill: false};
  }

  function draw(canvasId, datasets, labels, stacked) {
    var canvas = document.getElementById(canvasId);
    if (!canvas || typeof Chart === "undefined") { return; }
    new Chart(canvas, {
      type: "bar",
      data: {labels: labels, datasets: datasets},
      options: {
        responsive: true, maintainAspectRatio: false, animation: reduced ? false : undefined,
        scales: {x: {stacked: stacked, ticks: {maxRotation: 60, autoSkip: true, callback: shortDay}},
                 y: {stacked: stacked, beginAtZero: true, title: {display: true, text: "ε"}}},
        plugins: {legend: {position: "bottom"}}
      }
    });
  }

  var usage = read("usage-data");
  if (usage) {
    var datasets = usage.series.map(function (series, i) {
      return {label: series.label, data: series.data, backgroundColor: PALETTE[i % PALETTE.length], stack: "spent"};
    });
    if (usage.cap !== undefined) { datasets.push(capLine(usage.labels, usage.cap, "daily budget now")); }
    draw("usage-chart", datasets, usage.labels, true);
  }

  var partition = read("partition-data");
  if (partition) {
    draw("partition-chart", [
      {label: "ε released", data: partition.spent, backgroundColor: PALETTE[0]},
      capLine(partition.labels, partition.cap, "lifetime cap")
    ], partition.labels, false);
  }
}());
