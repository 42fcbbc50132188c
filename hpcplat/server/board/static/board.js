/* hpcplat board: draws the charts of the run and compare pages with uPlot (vendored, MIT).
   Data comes from `series?run=ID&metric=NAME`, downsampled on the server (LTTB, <= 2000 points).
   Every URL is relative, so the board works under any path prefix. No inline scripts (CSP). */
(function () {
  "use strict";
  var board = (window.hpcplatBoard = { charts: [], pending: 0, ready: false, errors: [] });
  var COLORS = ["#2f7de1", "#d64545", "#3aa655", "#e0a800", "#8a4fd8", "#1fa3a3", "#e56b1f", "#555"];

  function fetchSeries(run, metric) {
    var url = "series?" + new URLSearchParams({ run: run, metric: metric }).toString();
    return fetch(url, { credentials: "same-origin" }).then(function (r) {
      if (!r.ok) throw new Error(url + ": HTTP " + r.status);
      return r.json();
    });
  }

  function done() {
    board.pending -= 1;
    if (board.pending <= 0) board.ready = true;
  }

  function fail(err) {
    board.errors.push(String(err));
    done();
  }

  function width(el) {
    return Math.max(320, Math.min(el.parentElement.clientWidth - 20, 1300));
  }

  function runCharts(root) {
    var run = root.dataset.run;
    var figures = root.querySelectorAll("figure.chart");
    board.pending += figures.length;
    figures.forEach(function (fig) {
      var metric = fig.dataset.metric;
      fetchSeries(run, metric).then(function (s) {
        var opts = {
          width: figures.length > 1 ? 440 : width(fig), height: 240,
          scales: { x: { time: false } },
          series: [{ label: "step" }, { label: metric, stroke: COLORS[0], width: 1.5 }],
          axes: [{}, { size: 60 }],
        };
        var plot = new uPlot(opts, [s.steps, s.values], fig);
        board.charts.push({ metric: metric, plot: plot, total: s.total });
        if (root.dataset.live === "1") {
          setInterval(function () {
            fetchSeries(run, metric).then(function (n) { plot.setData([n.steps, n.values]); });
          }, 5000);
        }
        done();
      }).catch(fail);
    });
    if (!figures.length) board.ready = true;
  }

  function smooth(values, alpha) {
    if (!alpha) return values;
    var out = [], last = null;
    for (var i = 0; i < values.length; i++) {
      var v = values[i];
      if (v == null) { out.push(null); continue; }
      last = last == null ? v : alpha * last + (1 - alpha) * v;
      out.push(last);
    }
    return out;
  }

  /* One x axis for all runs: the union of their steps; a run without a step gets null. */
  function align(list) {
    var steps = {};
    list.forEach(function (s) { s.steps.forEach(function (x) { steps[x] = true; }); });
    var xs = Object.keys(steps).map(Number).sort(function (a, b) { return a - b; });
    var index = {};
    xs.forEach(function (x, i) { index[x] = i; });
    var ys = list.map(function (s) {
      var y = new Array(xs.length).fill(null);
      s.steps.forEach(function (x, i) { y[index[x]] = s.values[i]; });
      return y;
    });
    return [xs].concat(ys);
  }

  function compareChart(fig) {
    var runs = fig.dataset.runs.split(","), names = fig.dataset.names.split("\u001f");
    var metric = fig.dataset.metric, plot = null, raw = null;
    var logBox = document.getElementById("logscale"), smoothBox = document.getElementById("smooth");
    function draw() {
      if (plot) plot.destroy();
      var alpha = parseFloat(smoothBox.value) || 0;
      var dataset = [raw[0]].concat(raw.slice(1).map(function (y) { return smooth(y, alpha); }));
      var series = [{ label: "step" }].concat(runs.map(function (r, i) {
        return { label: (names[i] || r.slice(0, 8)) + " " + r.slice(0, 8), stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true };
      }));
      plot = new uPlot({
        width: width(fig), height: 380,
        scales: { x: { time: false }, y: { distr: logBox.checked ? 3 : 1 } },
        series: series, axes: [{}, { size: 60 }],
      }, dataset, fig);
      board.charts = [{ metric: metric, plot: plot, runs: runs.length }];
    }
    board.pending += 1;
    Promise.all(runs.map(function (r) { return fetchSeries(r, metric); })).then(function (list) {
      raw = align(list);
      draw();
      logBox.addEventListener("change", draw);
      smoothBox.addEventListener("input", draw);
      done();
    }).catch(fail);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var charts = document.getElementById("charts");
    if (charts) runCharts(charts);
    var fig = document.getElementById("compare-chart");
    if (fig) compareChart(fig);
    if (!charts && !fig) board.ready = true;
    var select = document.getElementById("metric-select");
    if (select) select.addEventListener("change", function () { select.form.submit(); });
    var only = document.getElementById("only-diff");
    if (only) only.addEventListener("change", function () {
      document.querySelector("table.compare").classList.toggle("only-diff", only.checked);
    });
  });
})();
