// The chart of a query's answer (Chart.js 4, vendored): bars per value with confidence whiskers for
// one day or a window's total; lines over days with confidence bands for a query grouped by day.
// One series per region when grouped by region. The figures come from the page (json_script);
// the table under the chart holds the same ones for screen readers and print.
"use strict";
(function () {
  var source = document.getElementById("answer-data");
  var canvas = document.getElementById("answer-chart");
  if (!source || !canvas || typeof Chart === "undefined") { return; }
  var data = JSON.parse(source.textContent);
  // Okabe-Ito: distinguishable with the common colour-vision deficiencies.
  var PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#B8A200"];

  function color(i, alpha) {
    var hex = PALETTE[i % PALETTE.length];
    if (alpha === undefined) { return hex; }
    var n = parseInt(hex.slice(1), 16);
    return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + alpha + ")";
  }

  function seriesLabels() {
    var seen = [];
    data.cells.forEach(function (cell) { if (seen.indexOf(cell.label) < 0) { seen.push(cell.label); } });
    return seen;
  }

  // Whiskers: a vertical line from ci_low to ci_high over each bar, with caps.
  var whiskers = {
    id: "whiskers",
    afterDatasetsDraw: function (chart) {
      var ctx = chart.ctx, y = chart.scales.y;
      chart.data.datasets.forEach(function (dataset, d) {
        if (!dataset.ciLow || !chart.isDatasetVisible(d)) { return; }
        chart.getDatasetMeta(d).data.forEach(function (bar, i) {
          var low = y.getPixelForValue(dataset.ciLow[i]), high = y.getPixelForValue(dataset.ciHigh[i]);
          var cap = Math.max(2, Math.min(8, bar.width * 0.25));
          ctx.save();
          ctx.strokeStyle = "#1b1f24";
          ctx.lineWidth = 1.5;
          ctx.beginPath();
          ctx.moveTo(bar.x, low); ctx.lineTo(bar.x, high);
          ctx.moveTo(bar.x - cap, low); ctx.lineTo(bar.x + cap, low);
          ctx.moveTo(bar.x - cap, high); ctx.lineTo(bar.x + cap, high);
          ctx.stroke();
          ctx.restore();
        });
      });
    }
  };

  function barConfig() {
    var datasets = seriesLabels().map(function (label, s) {
      var cell = data.cells.filter(function (c) { return c.label === label; })[0];
      return { label: label, data: cell.unbiased, ciLow: cell.ci_low, ciHigh: cell.ci_high,
               backgroundColor: color(s, 0.75), borderColor: color(s), borderWidth: 1 };
    });
    return { type: "bar", data: { labels: data.values, datasets: datasets }, plugins: [whiskers] };
  }

  function lineDatasets(valueIndex) {
    var datasets = [];
    seriesLabels().forEach(function (label, s) {
      var byDay = {};
      data.cells.forEach(function (c) { if (c.label === label) { byDay[c.day] = c; } });
      function column(key) {
        return data.days.map(function (day) { return byDay[day] ? byDay[day][key][valueIndex] : null; });
      }
      var band = { pointRadius: 0, borderWidth: 0, band: true, spanGaps: false };
      datasets.push(Object.assign({ label: label + " low", data: column("ci_low"), fill: false,
                                    borderColor: "transparent" }, band));
      datasets.push(Object.assign({ label: label + " high", data: column("ci_high"), fill: "-1",
                                    backgroundColor: color(s, 0.18), borderColor: "transparent" }, band));
      datasets.push({ label: label, data: column("unbiased"), borderColor: color(s), backgroundColor: color(s),
                      borderWidth: 2, pointRadius: 3, fill: false, tension: 0 });
    });
    return datasets;
  }

  function lineConfig() {
    return { type: "line", data: { labels: data.days, datasets: lineDatasets(0) } };
  }

  var config = data.kind === "line" ? lineConfig() : barConfig();
  config.options = {
    responsive: true,
    maintainAspectRatio: false,
    animation: false,
    interaction: { mode: "nearest", intersect: false },
    scales: {
      y: { title: { display: true, text: "estimated count" }, beginAtZero: true },
      x: { title: { display: true, text: data.kind === "line" ? "day (UTC)" : "value" } }
    },
    plugins: {
      legend: { labels: { filter: function (item, chartData) { return !chartData.datasets[item.datasetIndex].band; } } },
      tooltip: {
        filter: function (item) { return !item.dataset.band; },
        callbacks: {
          afterLabel: function (item) {
            var ds = item.dataset, i = item.dataIndex, low, high;
            if (ds.ciLow) { low = ds.ciLow[i]; high = ds.ciHigh[i]; } else {
              var all = item.chart.data.datasets, at = item.datasetIndex;
              low = all[at - 2].data[i]; high = all[at - 1].data[i];
            }
            return "interval " + low + " to " + high + " (" + data.confidence + ")";
          }
        }
      }
    }
  };
  var chart = new Chart(canvas, config);
  window.answerChart = chart;
  canvas.setAttribute("data-rendered", "true");

  var picker = document.getElementById("chart-value");
  if (picker) {
    picker.addEventListener("change", function () {
      chart.data.datasets = lineDatasets(parseInt(picker.value, 10));
      chart.update();
    });
  }
})();
