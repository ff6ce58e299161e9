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

  // Whiskers: a line from ci_low to ci_high across each bar (or line point), with caps. Points of
  // several line series on one day are spread a little sideways so their whiskers do not overlap.
  var whiskers = {
    id: "whiskers",
    afterDatasetsDraw: function (chart) {
      var ctx = chart.ctx, horizontal = chart.options.indexAxis === "y";
      var value = horizontal ? chart.scales.x : chart.scales.y;
      chart.data.datasets.forEach(function (dataset, d) {
        if (!dataset.ciLow || !chart.isDatasetVisible(d)) { return; }
        chart.getDatasetMeta(d).data.forEach(function (element, i) {
          if (dataset.ciLow[i] === null || dataset.ciLow[i] === undefined) { return; }
          var low = value.getPixelForValue(dataset.ciLow[i]), high = value.getPixelForValue(dataset.ciHigh[i]);
          var size = horizontal ? element.height : element.width;
          var cap = size ? Math.max(2, Math.min(8, size * 0.25)) : 4;
          var across = horizontal ? element.y : element.x + (dataset.spread || 0);
          ctx.save();
          var area = chart.chartArea;
          ctx.beginPath();
          ctx.rect(area.left, area.top, area.right - area.left, area.bottom - area.top);
          ctx.clip();
          ctx.strokeStyle = dataset.whiskerColor || "#1b1f24";
          ctx.lineWidth = 1.5;
          ctx.beginPath();
          if (horizontal) {
            ctx.moveTo(low, across); ctx.lineTo(high, across);
            ctx.moveTo(low, across - cap); ctx.lineTo(low, across + cap);
            ctx.moveTo(high, across - cap); ctx.lineTo(high, across + cap);
          } else {
            ctx.moveTo(across, low); ctx.lineTo(across, high);
            ctx.moveTo(across - cap, low); ctx.lineTo(across + cap, low);
            ctx.moveTo(across - cap, high); ctx.lineTo(across + cap, high);
          }
          ctx.stroke();
          ctx.restore();
        });
      });
    }
  };
  var narrow = window.matchMedia("(max-width: 40rem)").matches;

  function barConfig() {
    var datasets = seriesLabels().map(function (label, s) {
      var cell = data.cells.filter(function (c) { return c.label === label; })[0];
      return { label: label, data: cell.unbiased, ciLow: cell.ci_low, ciHigh: cell.ci_high,
               backgroundColor: color(s, 0.75), borderColor: color(s), borderWidth: 1 };
    });
    if (narrow) {  // a phone: horizontal bars, one row per value, as tall as they need
      canvas.parentNode.style.height = Math.max(288, data.values.length * datasets.length * 14 + 110) + "px";
    }
    return { type: "bar", data: { labels: data.values, datasets: datasets }, plugins: [whiskers],
             indexAxis: narrow ? "y" : "x" };
  }

  // Few series: confidence bands. More: whiskers at each point, or the bands would cover each other.
  function lineDatasets(valueIndex) {
    var datasets = [], labels = seriesLabels(), banded = data.marks === "bands";
    labels.forEach(function (label, s) {
      var byDay = {};
      data.cells.forEach(function (c) { if (c.label === label) { byDay[c.day] = c; } });
      function column(key) {
        return data.days.map(function (day) { return byDay[day] ? byDay[day][key][valueIndex] : null; });
      }
      var line = { label: label, data: column("unbiased"), borderColor: color(s), backgroundColor: color(s),
                   borderWidth: 2, pointRadius: 3, fill: false, tension: 0 };
      if (banded) {
        var band = { pointRadius: 0, borderWidth: 0, band: true, spanGaps: false };
        datasets.push(Object.assign({ label: label + " low", data: column("ci_low"), fill: false,
                                      borderColor: "transparent" }, band));
        datasets.push(Object.assign({ label: label + " high", data: column("ci_high"), fill: "-1",
                                      backgroundColor: color(s, 0.2), borderColor: "transparent" }, band));
      } else {
        Object.assign(line, { ciLow: column("ci_low"), ciHigh: column("ci_high"), whiskerColor: color(s),
                              spread: (s - (labels.length - 1) / 2) * 5 });
      }
      datasets.push(line);
    });
    return datasets;
  }

  function lineConfig() {
    return { type: "line", data: { labels: data.days, datasets: lineDatasets(0) }, plugins: [whiskers] };
  }

  function scales(horizontal) {
    // the axis spans every interval of the answer, whichever value is shown, so whiskers stay inside
    var low = 0, high = 0;
    data.cells.forEach(function (cell) {
      low = Math.min(low, Math.min.apply(null, cell.ci_low), Math.min.apply(null, cell.unbiased));
      high = Math.max(high, Math.max.apply(null, cell.ci_high), Math.max.apply(null, cell.unbiased));
    });
    var count = { title: { display: true, text: "estimated count" }, suggestedMin: low, suggestedMax: high };
    var category = { title: { display: true, text: data.kind === "line" ? "day (UTC)" : "value" } };
    return horizontal ? { x: count, y: category } : { x: category, y: count };
  }

  var config = data.kind === "line" ? lineConfig() : barConfig();
  config.options = {
    indexAxis: config.indexAxis || "x",
    responsive: true,
    maintainAspectRatio: false,
    animation: false,
    interaction: { mode: "nearest", intersect: false },
    scales: scales(config.indexAxis === "y"),
    plugins: {
      legend: { position: narrow ? "bottom" : "top", labels: { boxWidth: narrow ? 12 : 40, filter: function (item, chartData) { return !chartData.datasets[item.datasetIndex].band; } } },
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
