// The training job page: polls the job's progress JSON and redraws its figures and curves
// (held-out loss, held-out accuracy, ε spent by step) until the job finishes.
(function () {
  "use strict";
  var script = document.currentScript;
  var url = script.dataset.progressUrl;
  var pollMs = parseInt(script.dataset.pollMs, 10) || 2000;
  var finishedAtLoad = script.dataset.finished === "true";
  var job = JSON.parse(document.getElementById("job-data").textContent);

  function lineChart(id, label, color, yOptions) {
    var canvas = document.getElementById(id);
    if (typeof Chart === "undefined" || !canvas) { return null; }
    return new Chart(canvas, {
      type: "line",
      data: { labels: [], datasets: [{ label: label, data: [], borderColor: color, backgroundColor: color,
                                       pointRadius: 2, tension: 0.1 }] },
      options: { animation: false, responsive: true, maintainAspectRatio: false,
                 scales: { x: { title: { display: true, text: "step" } }, y: yOptions || {} } }
    });
  }

  var charts = {
    loss: lineChart("chart-loss", "held-out loss", "#b45309"),
    accuracy: lineChart("chart-accuracy", "held-out accuracy", "#047857", { min: 0, max: 1 }),
    epsilon: lineChart("chart-epsilon", "ε spent", "#1d4ed8", { min: 0 })
  };

  function setText(testid, value) {
    var node = document.querySelector('[data-testid="' + testid + '"]');
    if (node) { node.textContent = value; }
  }

  function fixed(value, digits) {
    return value === null || value === undefined ? "–" : Number(value).toFixed(digits).replace(/\.?0+$/, "") || "0";
  }

  function draw(data) {
    var steps = data.history.map(function (row) { return row.step; });
    [["loss", "test_loss"], ["accuracy", "test_accuracy"], ["epsilon", "epsilon"]].forEach(function (pair) {
      var chart = charts[pair[0]];
      if (!chart) { return; }
      chart.data.labels = steps;
      chart.data.datasets[0].data = data.history.map(function (row) { return row[pair[1]]; });
      chart.update();
    });
    setText("status", data.status);
    setText("steps", data.progress.steps_done);
    setText("epochs", data.progress.epochs_done);
    setText("epsilon-spent", fixed(data.progress.epsilon_spent, 6));
    setText("epsilon-charged", fixed(data.epsilon_charged, 6));
    setText("epsilon-refunded", fixed(data.epsilon_refunded, 6));
    setText("device", data.device || "–");
    var bar = document.getElementById("step-progress");
    if (bar) { bar.value = data.progress.steps_done; }
    var rows = document.getElementById("history-rows");
    if (rows) {
      rows.innerHTML = "";
      data.history.forEach(function (row) {
        var tr = document.createElement("tr");
        var th = document.createElement("th");
        th.scope = "row";
        th.textContent = row.step;
        tr.appendChild(th);
        [row.epsilon, row.test_loss, row.test_accuracy].forEach(function (value) {
          var td = document.createElement("td");
          td.className = "num";
          td.textContent = Number(value).toFixed(4);
          tr.appendChild(td);
        });
        rows.appendChild(tr);
      });
    }
    var log = document.getElementById("job-log");
    if (log) {
      log.innerHTML = "";
      data.log.forEach(function (line) {
        var li = document.createElement("li");
        li.textContent = line;
        log.appendChild(li);
      });
    }
  }

  function poll() {
    fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : Promise.reject(response.status); })
      .then(function (data) {
        draw(data);
        if (data.finished) {
          if (!finishedAtLoad) { window.location.replace(window.location.pathname); }
          return;
        }
        window.setTimeout(poll, pollMs);
      })
      .catch(function () { window.setTimeout(poll, pollMs * 2); });
  }

  draw(job);
  if (!finishedAtLoad) { window.setTimeout(poll, pollMs); }
}());
