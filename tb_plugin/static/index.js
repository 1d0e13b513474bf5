// The Spectrum tab: Hessian eigenvalues, spectral densities and loss-landscape
// probes written by tf_sharpness.summary, laid out the way TensorBoard's own
// dashboards compare runs: collapsible sections by kind, one card per tag (or
// per group of tags) with every selected run overlaid in its own colour, a
// regex tag filter and a run selector.  An ES module loaded by TensorBoard
// into the plugin iframe; every URL is relative to this module (BASE).

const BASE = new URL('./', import.meta.url);
const PLOT_CONFIG = {responsive: true, displaylogo: false};
const PLOT_HEIGHT = 300;
const DENSITY_FLOOR = 1e-12;  // densities are drawn on a log axis

// One colour per run, fixed by the run's place among all runs sorted by name,
// so deselecting a run does not recolour the others.
const RUN_COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e',
                    '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f'];
const ANGLE_DASHES = ['solid', 'dash', 'dashdot', 'longdash', 'longdashdot'];
const THRESHOLD_DASHES = ['dash', 'dot', 'dashdot', 'longdash'];
// The early-training phases of scripts/phase.py, coloured as its plots;
// any other label falls back to the grey/teal spares.
const PHASE_COLORS = {'sharpness reduction': '#1f77b4', 'sharpening': '#2ca02c',
                      'loss catapult': '#ff7f0e', 'divergence': '#d62728'};
const SPARE_PHASE_COLORS = ['#17becf', '#7f7f7f', '#bcbd22', '#e377c2'];
const RUN_SYMBOLS = ['circle', 'square', 'diamond', 'triangle-up', 'cross', 'x'];
const OVERLAP_SCALE = [[0, '#f7fbff'], [0.5, '#6baed6'], [1, '#08306b']];  // 1: same vector
const RIGHT_LEGEND = {orientation: 'v', x: 1.02, xanchor: 'left', y: 1, yanchor: 'top',
                      font: {size: 10}};

// The plugin's data route for each summary kind.
const ROUTES = {eigenvalues: 'eigenvalues', density: 'density', loss_slice: 'slices',
                step_analysis: 'step_analysis', surface: 'surface',
                phase_diagram: 'phase_diagram', rotation: 'rotation', blocks: 'blocks',
                sharpness: 'sharpness', directional: 'directional',
                lambda_interval: 'lambda_interval'};
// The optimizer's own directions (tf_sharpness.directional) in this order,
// any other direction after them by name.
const DIRECTION_ORDER = ['gradient', 'update', 'critical_update', 'batch'];
const DIRECTION_SYMBOLS = ['circle', 'square', 'diamond', 'triangle-up', 'cross', 'x'];

const state = {
  tags: {}, runs: [], selected: new Set(), logAxis: false, timer: null,
  filter: '', collapsed: new Set(), sliderSteps: {}, generation: 0,
};
let Plotly = null;

// ------------------------------------------------------------------ basics

async function getJson(path, params = {}) {
  const url = new URL(path, BASE);
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null) url.searchParams.set(k, v);
  }
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = new URL('vendor/plotly.min.js', BASE).href;
    script.onload = () => resolve(window.Plotly);
    script.onerror = () => reject(new Error('could not load plotly.min.js'));
    document.head.appendChild(script);
  });
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'style') node.style.cssText = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function plot(div, traces, layout) {
  return Plotly.react(div, traces, layout, PLOT_CONFIG);
}

// Plots drawn while hidden (a collapsed section, a filtered card) have the
// wrong size: resize them once they are shown.
function resizePlots(node) {
  for (const div of node.querySelectorAll('.js-plotly-plot')) {
    Plotly.Plots.resize(div).catch(() => {});  // still hidden: the next show resizes
  }
}

// ------------------------------------------------------------------ colours

function runColor(run) {
  return RUN_COLORS[Math.max(state.runs.indexOf(run), 0) % RUN_COLORS.length];
}

// k shades of a '#rrggbb' colour, from the colour itself to a pale tint.
function shades(color, k) {
  const rgb = [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16));
  return Array.from({length: k}, (_, i) => {
    const t = k > 1 ? 0.7 * i / (k - 1) : 0;
    return '#' + rgb.map((c) => Math.round(c + (255 - c) * t).toString(16).padStart(2, '0')).join('');
  });
}

// A '#rrggbb' colour as 'rgba(r, g, b, alpha)', for translucent fills.
function translucent(color, alpha) {
  const rgb = [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16));
  return `rgba(${rgb.join(', ')}, ${alpha})`;
}

function escapeHtml(text) {
  return String(text).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

// Text in a run's colour, for Plotly titles (which take a little HTML).
function colored(run, text = run) {
  return `<span style="color:${runColor(run)}">${escapeHtml(text)}</span>`;
}

// A trace name that says which run it is from only when a card holds several.
function traceName(run, name, runs) {
  return runs.length > 1 ? `${run} · ${name}` : name;
}

// ------------------------------------------------------------------ series

// A series is one run's points of one tag: {run, tag, kind, points, byStep}.
const direction = (s) => s.points[0].direction || '';
const isWalk = (s) => direction(s) === 'walk';

// The slices of one probe belong on one card: landscape/slice_e1 and
// landscape/slice_random both go under "landscape/slice".
function sliceGroup(s) {
  const d = direction(s);
  return d && s.tag.endsWith(`_${d}`) ? s.tag.slice(0, -d.length - 1) : s.tag;
}

// e1, e2, ..., e10 by number, then any other direction ("random") by name.
function compareDirections(a, b) {
  const ma = /^e(\d+)$/.exec(a);
  const mb = /^e(\d+)$/.exec(b);
  if (ma && mb) return Number(ma[1]) - Number(mb[1]);
  if (ma || mb) return ma ? -1 : 1;
  return a.localeCompare(b);
}

function unionSteps(series) {
  return [...new Set(series.flatMap((s) => s.points.map((p) => p.step)))].sort((a, b) => a - b);
}

// Every series of the selected runs, fetched in parallel; a series that
// fails to load is left out (with a warning) rather than blanking the page.
async function fetchSeries() {
  const jobs = [];
  for (const run of state.runs) {
    if (!state.selected.has(run)) continue;
    for (const [tag, kind] of Object.entries(state.tags[run] || {})) {
      if (!ROUTES[kind]) continue;
      jobs.push(getJson(ROUTES[kind], {run, tag}).then(
          (points) => ({run, tag, kind, points, byStep: new Map(points.map((p) => [p.step, p]))}),
          (e) => { console.warn(`Spectrum: ${run} / ${tag}: ${e.message}`); return null; }));
    }
  }
  return (await Promise.all(jobs)).filter((s) => s && s.points.length);
}

// ------------------------------------------------------------------ layout

// The layout every chart starts from: compact margins, the legend above.
function baseLayout(extra = {}) {
  return {
    height: PLOT_HEIGHT, margin: {l: 55, r: 15, t: 10, b: 45}, font: {size: 11},
    hovermode: 'closest',
    legend: {orientation: 'h', x: 0, xanchor: 'left', y: 1.02, yanchor: 'bottom',
             font: {size: 10}},
    ...extra,
  };
}

// Axis names of facet i in a one-row grid of small multiples: x, x2, x3, ...
function facet(i) {
  const n = i ? String(i + 1) : '';
  return {x: `x${n}`, y: `y${n}`, xaxis: `xaxis${n}`, yaxis: `yaxis${n}`};
}

// A layout of n side-by-side facets; axes(i) gives facet i's {x, y} axis
// settings; titles (HTML, optional) are written above the facets.
function facetLayout(n, axes, {titles = null, xgap = 0.15, ...extra} = {}) {
  const layout = baseLayout(extra);
  if (n > 1) layout.grid = {rows: 1, columns: n, pattern: 'independent', xgap};
  if (titles) {
    layout.margin = {...layout.margin, t: 26};
    layout.annotations = titles.map((text, i) => ({
        text, showarrow: false, xref: `${facet(i).x} domain`, yref: `${facet(i).y} domain`,
        x: 0.5, y: 1, xanchor: 'center', yanchor: 'bottom', font: {size: 12}}));
  }
  for (let i = 0; i < n; i++) {
    const {x = {}, y = {}} = axes(i);
    layout[facet(i).xaxis] = {automargin: true, ...x};
    layout[facet(i).yaxis] = {automargin: true, ...y};
  }
  return layout;
}

// Facet titles naming the runs, in their colours, where a card holds several.
function runTitles(here, group) {
  return group.runs.length > 1 ? here.map(({run}) => colored(run)) : null;
}

// ------------------------------------------------------------------ sections and cards

// A collapsible section holding a grid of cards; whether it is open survives
// refreshes.
function addSection(root, spec) {
  const grid = el('div', {class: 'grid'});
  const details = el('details', {class: 'section', 'data-section': spec.id},
                     el('summary', {}, spec.title, el('span', {class: 'count'})), grid);
  details.open = !state.collapsed.has(spec.id);
  details.addEventListener('toggle', () => {
    if (details.open) {
      state.collapsed.delete(spec.id);
      resizePlots(details);
    } else {
      state.collapsed.add(spec.id);
    }
  });
  root.append(details);
  return grid;
}

// A card titled by its tag (or group key); data-tags lists every member tag,
// for the tag filter.
function addCard(grid, spec, group) {
  const size = spec.size ? spec.size(group) : '';
  const tags = [...new Set(group.series.map((s) => s.tag))].sort();
  const node = el('div', {class: `card ${spec.id}-card ${size}`.trim(), 'data-tag': group.key,
                          'data-tags': JSON.stringify(tags)},
                  el('div', {class: 'card-title', title: tags.join('\n')}, group.key));
  grid.append(node);
  return node;
}

function addPlot(parent, kind) {
  const div = el('div', {class: `plot ${kind}-plot`});
  parent.append(div);
  return div;
}

// A slider over `steps` (ascending) that calls draw(step) and returns the
// first draw's promise.  A step the user chose (not the last) survives
// refreshes under `memo`; otherwise the slider follows the newest step.
function stepSlider(node, steps, memo, draw) {
  const label = el('span', {class: 'step-label'});
  const controls = el('div', {class: 'controls'});
  node.append(controls);
  if (steps.length < 2) {  // nothing to choose: just say which step it is
    label.textContent = `step ${steps[0]}`;
    controls.append(label);
    return draw(steps[0]);
  }
  let index = steps.indexOf(state.sliderSteps[memo]);
  if (index < 0) index = steps.length - 1;
  const slider = el('input', {type: 'range', min: 0, max: steps.length - 1, value: index,
                              class: 'step-slider', 'aria-label': 'step'});
  const update = () => {
    const i = Number(slider.value);
    label.textContent = `step ${steps[i]}`;
    state.sliderSteps[memo] = i === steps.length - 1 ? undefined : steps[i];
    return draw(steps[i]);
  };
  slider.addEventListener('input', update);
  controls.append(slider, label);
  return update();
}

// A plot redrawn at the step chosen on a slider over the union of the
// group's steps; render(div, here, group) gets the series that have a point
// at that step, each with that point as `p`.
function perStepPlot(node, kind, group, render, parent = node) {
  const div = addPlot(parent, kind);
  return stepSlider(node, unionSteps(group.series), `${kind}:${group.key}`, (step) => {
    const here = group.series.filter((s) => s.byStep.has(step))
                             .map((s) => ({...s, p: s.byStep.get(step)}));
    return render(div, here, group);
  });
}

// ------------------------------------------------------------------ eigenvalues

// A card's eigenvalue series with their stability thresholds, and under
// them (drawn first) the band of each run's full-data λ_max interval where
// the card has one (lambda_interval series, see intervalCard).
function drawEigenvalues(node, group) {
  const eigen = group.series.filter((s) => s.kind === 'eigenvalues');
  const bands = group.series.filter((s) => s.kind === 'lambda_interval').flatMap(intervalTraces);
  for (const s of eigen) {
    const note = hvpNote(s);
    if (note) node.append(note);
  }
  return curvatureChart(node, 'eigenvalues', [...bands, ...eigen.flatMap(eigenvalueTraces)],
                        eigen, 'eigenvalue', state.logAxis);
}

// A chart of curvatures over the steps (`traces`) with the stability
// thresholds of each of `series` as dashed lines in its run's colour: the
// eigenvalue and directional-curvature cards.
function curvatureChart(node, kind, traces, series, yTitle, log = false) {
  const div = addPlot(node, kind);
  return plot(div, [...traces, ...series.flatMap(thresholdTraces)], baseLayout({
      height: PLOT_HEIGHT + 60,  // room for the legend: k curves and thresholds per run
      xaxis: {title: {text: 'step'}},
      yaxis: {title: {text: yTitle}, type: log ? 'log' : 'linear'}}));
}

// The eigenvalue card an interval for the full-data λ_max belongs on:
// "hessian/lambda_max_interval" on "hessian/top_eigenvalues"; an interval
// under another tag gets a card of its own.
function intervalCard(s) {
  return s.tag.replace(/lambda_max_interval$/, 'top_eigenvalues');
}

// "90%", or "90/95%" where the confidence changed during the run.
function confidenceText(points) {
  const levels = [...new Set(points.map((p) => p.confidence).filter(Number.isFinite))]
      .map((c) => String(Math.round(c * 1000) / 10));
  return levels.length ? `${levels.join('/')}%` : '';
}

// One run's interval for the full-data λ_max as a band in its colour (the
// lower edge, then the upper edge filled down to it), and the 1/n
// bias-corrected λ_max as open markers where recorded.
function intervalTraces({run, tag, points}) {
  const color = runColor(run);
  const x = points.map((p) => p.step);
  const level = confidenceText(points);
  const name = `${run} full-data λ_max` + (level ? `, ${level} interval` : ' interval');
  const group = `${run} ${tag}`;
  const detail = points.map((p) => [p.lower, p.upper, p.plug_in, p.examples ?? '?']);
  const hover = `${run} full-data λ_max in [%{customdata[0]:.5g}, %{customdata[1]:.5g}]` +
      '<br>plug-in %{customdata[2]:.5g} from %{customdata[3]} examples<br>step %{x}' +
      '<extra></extra>';
  // Drawn first (beneath the lines) but listed after them in the legend.
  const edge = {x, mode: 'lines', legendgroup: group, legendrank: 1001,
                line: {color, width: 0.5}, customdata: detail, hovertemplate: hover};
  const traces = [
    {...edge, y: points.map((p) => p.lower ?? null), name: `${name} (lower)`, showlegend: false},
    {...edge, y: points.map((p) => p.upper ?? null), name, fill: 'tonexty',
     fillcolor: translucent(color, 0.18), meta: {band: 'lambda_interval', run}},
  ];
  const corrected = points.filter((p) => p.bias_corrected != null);
  if (corrected.length) {
    traces.push({
      x: corrected.map((p) => p.step), y: corrected.map((p) => p.bias_corrected),
      mode: 'markers', name: `${run} bias-corrected λ_max`, legendgroup: group,
      legendrank: 1002,
      line: {color}, marker: {color, size: 7, symbol: 'circle-open-dot'},
      hovertemplate: `${run} bias-corrected λ_max<br>step %{x}<br>%{y:.5g}<extra></extra>`});
  }
  return traces;
}

// λ1..λk of one run in shades of its colour (λ1 in the colour itself).
function eigenvalueTraces({run, tag, points}) {
  const k = Math.max(...points.map((p) => p.values.length));
  const colors = shades(runColor(run), k);
  const x = points.map((p) => p.step);
  // Error bars: the spread over Hessian subsets where measured, else the
  // Ritz residual ||Hv - λv||.
  const bars = points.some((p) => p.spread || p.residuals);
  return colors.map((color, i) => ({
    x, y: points.map((p) => p.values[i] ?? null), mode: 'lines+markers',
    name: `${run} λ${i + 1}`, line: {color, width: 1.5}, marker: {size: 5},
    error_y: bars ? {type: 'data', visible: true, thickness: 1, width: 2,
                     array: points.map((p) => (p.spread || p.residuals || [])[i] ?? 0)}
        : undefined,
    hovertemplate: `${run} ${tag} λ${i + 1}<br>step %{x}<br>%{y:.5g}<extra></extra>`,
  }));
}

// Stability thresholds as dashed lines in the run's colour: the payload's own
// "thresholds" ({label, value}) where it has them, else 2(1+β)/η from its
// learning rate and momentum.
function thresholdTraces({run, points}) {
  const lines = new Map();
  for (const p of points) {
    const list = Array.isArray(p.thresholds) ? p.thresholds
        : p.learning_rate ? [{label: '2(1+β)/η',
                              value: 2 * (1 + (p.momentum || 0)) / p.learning_rate}]
        : [];
    for (const {label, value} of list) {
      if (!Number.isFinite(value)) continue;
      if (!lines.has(label)) lines.set(label, {x: [], y: []});
      lines.get(label).x.push(p.step);
      lines.get(label).y.push(value);
    }
  }
  return [...lines].map(([label, {x, y}], j) => ({
    x, y, mode: 'lines', name: `${run} ${label}`,
    line: {color: runColor(run), dash: THRESHOLD_DASHES[j % THRESHOLD_DASHES.length], width: 1.5},
    hovertemplate: `${run} threshold ${label} = %{y:.5g}<br>step %{x}<extra></extra>`,
  }));
}

// How many Hessian-vector products the latest measurement took, and on what.
function hvpNote({run, points}) {
  const last = points[points.length - 1];
  if (last.num_matvecs == null) return null;
  const desc = Object.entries(last.info || {}).map(([a, b]) => `${a}: ${b}`).join(', ');
  const text = `${run}: ${last.num_matvecs} HVPs per measurement` +
      (desc ? ` — Hessian of: ${desc}` : '');
  return el('div', {class: 'note', title: text}, text);
}

function setLogAxis() {
  for (const div of document.querySelectorAll('#views .eigenvalues-plot')) {
    Plotly.relayout(div, {'yaxis.type': state.logAxis ? 'log' : 'linear'});
  }
}

// ------------------------------------------------------------------ directional curvature

// The curvature along the optimizer's own directions (the gradient, the
// update, the update's critical sharpness, ...), one line per direction in
// shades of the run's colour (a marker symbol per direction), with the
// optimizer's stability thresholds drawn as on the eigenvalue cards.
function drawDirectional(node, group) {
  const names = [...new Set(group.series.flatMap(
      (s) => s.points.flatMap((p) => Object.keys(p.values))))].sort(compareDirectionNames);
  const traces = group.series.flatMap((s) => directionalTraces(s, names));
  return curvatureChart(node, 'directional', traces, group.series, 'curvature');
}

function compareDirectionNames(a, b) {
  const rank = (d) => (DIRECTION_ORDER.includes(d) ? DIRECTION_ORDER.indexOf(d)
                                                   : DIRECTION_ORDER.length);
  return rank(a) - rank(b) || a.localeCompare(b);
}

// One trace per direction the run measured, each over the steps that have it.
function directionalTraces({run, tag, points}, names) {
  const colors = shades(runColor(run), names.length);
  return names.flatMap((d, i) => {
    const here = points.filter((p) => p.values[d] != null);
    if (!here.length) return [];
    return [{
      x: here.map((p) => p.step), y: here.map((p) => p.values[d]), mode: 'lines+markers',
      name: `${run} ${d}`, meta: {run, direction: d},
      line: {color: colors[i], width: 1.5},
      marker: {size: 6, symbol: DIRECTION_SYMBOLS[i % DIRECTION_SYMBOLS.length]},
      hovertemplate: `${run} ${tag} · ${d}<br>step %{x}<br>%{y:.5g}<extra></extra>`,
    }];
  });
}

// ------------------------------------------------------------------ rotation

// How the top-k subspace moved between consecutive measurements: principal
// angles (dash per angle) and the gradient's overlap with the top subspace
// for every run over the steps, and each run's overlap matrix
// |<e_i(t'), e_j(t)>| at the step chosen on the slider.
function drawRotation(node, group) {
  const row = el('div', {class: 'row'});
  node.append(row);
  const angles = addPlot(row, 'rotation');
  const traces = group.series.flatMap((s) => rotationTraces(s, group.runs));
  const drawn = plot(angles, traces, baseLayout({
      margin: {l: 55, r: 55, t: 10, b: 45},
      xaxis: {title: {text: 'step'}},
      yaxis: {title: {text: 'principal angle (degrees)'}, rangemode: 'tozero'},
      yaxis2: {title: {text: '‖P g‖ / ‖g‖'}, overlaying: 'y', side: 'right', range: [0, 1.05],
               tickmode: 'linear', tick0: 0, dtick: 0.25, showgrid: false}}));
  return Promise.all([drawn, perStepPlot(node, 'overlap', group, renderOverlaps, row)]);
}

function rotationTraces({run, points}, runs) {
  const x = points.map((p) => p.step);
  const color = runColor(run);
  const k = Math.max(...points.map((p) => (p.principal_angles || []).length));
  const traces = Array.from({length: k}, (_, i) => ({
    x, y: points.map((p) => (p.principal_angles?.[i] != null
                              ? p.principal_angles[i] * 180 / Math.PI : null)),
    mode: 'lines+markers', name: traceName(run, `angle ${i + 1}`, runs),
    line: {color, dash: ANGLE_DASHES[i % ANGLE_DASHES.length], width: 1.5}, marker: {size: 5},
    hovertemplate: `${run} principal angle ${i + 1}<br>step %{x}<br>%{y:.3g}°<extra></extra>`,
  }));
  if (points.some((p) => p.gradient_overlap != null)) {
    traces.push({x, y: points.map((p) => p.gradient_overlap), yaxis: 'y2',
                 mode: 'lines+markers', name: traceName(run, '‖P g‖ / ‖g‖', runs),
                 line: {color, dash: 'dot', width: 1.5},
                 marker: {size: 6, symbol: 'x'},
                 hovertemplate: `${run} gradient in top subspace<br>step %{x}<br>%{y:.3g}` +
                     '<extra></extra>'});
  }
  return traces;
}

function renderOverlaps(div, here, group) {
  const traces = here.map(({run, p}, i) => ({
    type: 'heatmap', z: p.overlaps, coloraxis: 'coloraxis', xaxis: facet(i).x, yaxis: facet(i).y,
    x: p.overlaps[0].map((_, j) => `e${j + 1}(t)`), y: p.overlaps.map((_, j) => `e${j + 1}(prev)`),
    hovertemplate: `${run}<br>%{y} · %{x}: %{z:.3f}<extra></extra>`,
  }));
  return plot(div, traces, facetLayout(here.length, () => ({y: {autorange: 'reversed'}}), {
      titles: runTitles(here, group), xgap: 0.3,
      coloraxis: {cmin: 0, cmax: 1, colorscale: OVERLAP_SCALE, colorbar: {thickness: 10, len: 0.9}}}));
}

// ------------------------------------------------------------------ per-layer curvature

// Two layer x step heatmaps per run: the largest eigenvalue of each layer's
// diagonal Hessian block, and the share of the top eigenvector e1 of the
// full Hessian in each layer (the shares of one step sum to 1).
function drawBlocks(node, group) {
  return Promise.all(group.series.map(({run, points}) => {
    const layers = [...new Set(points.flatMap((p) => p.blocks))];
    const steps = points.map((p) => p.step);
    const grid = (pick) => layers.map((name) => points.map((p) => {
      const i = p.blocks.indexOf(name);
      return i < 0 ? null : pick(p, i);
    }));
    // Layers' curvatures differ by decades: colour by log10, hover the value.
    const lam = grid((p, i) => p.top_eigenvalues[i][0]);
    const heatmap = (i, z, axis, what) => ({
      type: 'heatmap', x: steps, y: layers, z, coloraxis: axis, name: run,
      xaxis: facet(i).x, yaxis: facet(i).y,
      hovertemplate: `${run}<br>%{y}<br>step %{x}<br>${what}<extra></extra>`});
    const traces = [
      {...heatmap(0, lam.map((r) => r.map((v) => (v > 0 ? Math.log10(v) : null))),
                  'coloraxis', 'λ_max(H_ll) %{customdata:.4g}'), customdata: lam},
      heatmap(1, grid((p, i) => p.mass[i][0]), 'coloraxis2', 'share of e1 %{z:.3f}')];
    const who = group.runs.length > 1 ? `${colored(run)}: ` : '';
    return plot(addPlot(node, 'blocks'), traces, facetLayout(2, () => ({
        x: {title: {text: 'step'}}, y: {type: 'category', autorange: 'reversed'}}), {
        titles: [`${who}λ_max of each layer's Hessian block`, `${who}share of e1 in each layer`],
        xgap: 0.35,
        coloraxis: {colorscale: 'Viridis', colorbar: {
            thickness: 10, x: 0.44, len: 0.9, title: {text: 'log₁₀ λ', side: 'right'}}},
        coloraxis2: {cmin: 0, cmax: 1, colorscale: OVERLAP_SCALE,
                     colorbar: {thickness: 10, len: 0.9}}}));
  }));
}

// ------------------------------------------------------------------ sharpness measures

// One small chart per measure (their scales differ), every run overlaid, with
// ±1 standard error bars on Monte-Carlo estimates; worst-case values are
// ascent lower bounds.
function drawSharpness(node, group) {
  const measures = [...new Set(group.series.flatMap(
      (s) => s.points.flatMap((p) => Object.keys(p.values))))];
  const traces = measures.flatMap((m, i) => group.series.map(({run, points}) => {
    const here = points.filter((p) => p.values[m] != null);
    const errors = here.map((p) => (p.stderr || {})[m] ?? null);
    return {
      x: here.map((p) => p.step), y: here.map((p) => p.values[m]),
      error_y: errors.some((e) => e != null) ? {type: 'data', array: errors, visible: true,
                                                 thickness: 1} : undefined,
      mode: 'lines+markers', name: traceName(run, m, group.runs), showlegend: i === 0,
      legendgroup: run, line: {color: runColor(run), width: 1.5}, marker: {size: 5},
      xaxis: facet(i).x, yaxis: facet(i).y,
      hovertemplate: `${run} · ${m}<br>step %{x}<br>%{y:.4g}<extra></extra>`};
  }));
  return plot(addPlot(node, 'sharpness'), traces, facetLayout(measures.length, () => ({
      x: {title: {text: 'step'}}}), {titles: measures, xgap: 0.08}));
}

// ------------------------------------------------------------------ densities, slices, walks

function renderDensity(div, here) {
  const traces = here.map(({run, p}) => ({
    x: p.grid, y: p.density.map((d) => Math.max(d ?? DENSITY_FLOOR, DENSITY_FLOOR)),
    mode: 'lines', name: run, line: {color: runColor(run), width: 1.5},
    hovertemplate: `${run}<br>λ %{x:.4g}<br>density %{y:.3g}<extra></extra>`,
  }));
  // Eight decades below the highest peak: lower than that is SLQ's noise.
  const peak = traces.flatMap((t) => t.y).reduce((a, b) => Math.max(a, b), 0);
  const range = peak > 0 ? [Math.log10(peak) - 8, Math.log10(peak) + 0.5] : undefined;
  return plot(div, traces, baseLayout({
      xaxis: {title: {text: 'eigenvalue'}},
      yaxis: {title: {text: 'density'}, type: 'log', exponentformat: 'power', range}}));
}

// Small multiples, one facet per direction (e1, e2, ..., random), the runs
// overlaid; each facet's x title states the step scale of each run.
function renderSlices(div, here, group) {
  const directions = [...new Set(group.series.map(direction))].sort(compareDirections);
  const traces = [];
  const titles = [];
  const inLegend = new Set();
  directions.forEach((d, i) => {
    const members = here.filter((s) => direction(s) === d);
    for (const {run, p} of members) {
      traces.push(sliceTrace(run, d, p, facet(i), !inLegend.has(run)));
      inLegend.add(run);
    }
    titles.push(scaleTitle(d, members.filter(({p}) => p.scale != null)));
  });
  return plot(div, traces, facetLayout(directions.length, (i) => ({
      x: {title: {text: titles[i]}},
      y: {title: {text: i ? '' : 'loss'}}}), {showlegend: group.runs.length > 1}));
}

// "α × 1.2e-3 along e1", or with several runs "α (× 1.2e-3 | 3.4e-3) along
// e1" with each scale in its run's colour.
function scaleTitle(d, scaled) {
  const fmt = (x) => Number(x).toExponential(1);
  if (!scaled.length) return `α along ${escapeHtml(d)}`;
  if (scaled.length === 1) return `α × ${fmt(scaled[0].p.scale)} along ${escapeHtml(d)}`;
  const scales = scaled.map(({run, p}) => colored(run, fmt(p.scale))).join(' | ');
  return `α (× ${scales}) along ${escapeHtml(d)}`;
}

function sliceTrace(run, d, p, axes, showlegend) {
  // "distance": the Euclidean length of one unit of α, where recorded.
  const far = p.distance != null;
  return {
    x: p.alphas, y: p.losses, xaxis: axes.x, yaxis: axes.y, mode: 'lines+markers',
    name: run, legendgroup: run, showlegend, meta: {run, direction: d},
    line: {color: runColor(run), width: 1.5}, marker: {size: 4},
    customdata: far ? p.alphas.map((a) => Math.abs(a) * p.distance) : undefined,
    hovertemplate: `${run} · ${d}<br>α %{x:.3g}` + (far ? ' (‖Δθ‖ %{customdata:.3g})' : '') +
        '<br>loss %{y:.5g}<extra></extra>',
  };
}

// The walk between consecutive iterates as one curve over the steps: the
// point a of the segment walked at step t is drawn at x = t + a.
function drawWalk(node, group) {
  const div = addPlot(node, 'walk');
  const traces = group.series.map(({run, points}) => {
    const x = [];
    const y = [];
    for (const p of points) {
      p.alphas.forEach((a, i) => { x.push(p.step + a); y.push(p.losses[i]); });
      x.push(null);  // no line across steps that were not walked
      y.push(null);
    }
    return {x, y, mode: 'lines', name: run, line: {color: runColor(run), width: 1.5},
            hovertemplate: `${run}<br>iterate %{x:.2f}<br>loss %{y:.5g}<extra></extra>`};
  });
  return plot(div, traces, baseLayout({xaxis: {title: {text: 'step + interpolation a'}},
                                       yaxis: {title: {text: 'loss'}}}));
}

// ------------------------------------------------------------------ step analysis, surfaces, phases

// Grouped bars (one per direction, in shades of the run's colour) over the
// step-length factors; one facet per run.
function renderStepAnalysis(div, here, group) {
  const traces = here.flatMap(({run, p}, i) => {
    const colors = shades(runColor(run), p.directions.length);
    return p.directions.map((d, j) => ({
      type: 'bar', name: traceName(run, d, group.runs), legendgroup: run,
      x: p.factors.map((f) => `${f}×η`), y: p.changes[j], marker: {color: colors[j]},
      xaxis: facet(i).x, yaxis: facet(i).y,
      hovertemplate: `${run} · ${d}<br>%{x}: %{y:.3g}%<extra></extra>`,
    }));
  });
  const several = group.runs.length > 1;
  return plot(div, traces, facetLayout(here.length, (i) => ({
      x: {title: {text: 'step length'}}, y: {title: {text: i ? '' : 'loss change (%)'}}}), {
      titles: runTitles(here, group), barmode: 'group', bargap: 0.2,
      ...(several ? {legend: RIGHT_LEGEND} : {})}));
}

// One contour facet per run, on a colour scale shared by all of them.
function renderSurface(div, here, group) {
  const traces = here.map(({run, p}, i) => ({
    type: 'contour', x: p.xs, y: p.ys, z: p.losses, coloraxis: 'coloraxis',
    contours: {coloring: 'heatmap'}, xaxis: facet(i).x, yaxis: facet(i).y, name: run,
    hovertemplate: `${run}<br>x %{x:.3g}<br>y %{y:.3g}<br>loss %{z:.5g}<extra></extra>`,
  }));
  const axisTitle = (i, j, dflt) => ({title: {text: (here[i].p.directions || [])[j] || dflt}});
  return plot(div, traces, facetLayout(here.length,
      (i) => ({x: axisTitle(i, 0, 'x'), y: axisTitle(i, 1, 'y')}), {
      titles: runTitles(here, group),
      coloraxis: {colorscale: 'Viridis', colorbar: {thickness: 10, title: {text: 'loss'}}}}));
}

// Early-training phases: colour by phase, marker symbol (and outline) by run.
function renderPhase(div, here, group) {
  const phases = [...new Set(group.series.flatMap((s) => s.points.flatMap(
      (p) => p.records.map((r) => r.phase))))].sort();
  const traces = [];
  for (const {run, p} of here) {
    for (const phase of phases) {
      const rs = p.records.filter((r) => r.phase === phase);
      if (!rs.length) continue;
      traces.push({
        mode: 'markers', name: traceName(run, phase, group.runs),
        x: rs.map((r) => 1 / r.width), y: rs.map((r) => r.c),
        marker: {size: 8, color: PHASE_COLORS[phase] ||
                    SPARE_PHASE_COLORS[phases.indexOf(phase) % SPARE_PHASE_COLORS.length],
                 symbol: RUN_SYMBOLS[group.runs.indexOf(run) % RUN_SYMBOLS.length],
                 line: {color: runColor(run), width: 1}},
        hovertemplate: `${run} · ${phase}<br>1/width %{x:.4g}<br>c %{y:.3g}<extra></extra>`,
      });
    }
  }
  return plot(div, traces, baseLayout({xaxis: {title: {text: '1 / width'}},
                                       yaxis: {title: {text: 'c = η λ₀'}, type: 'log'}}));
}

// ------------------------------------------------------------------ the page

// The sections, in page order: which series they take (a kind or a list
// of kinds, and `only`), how those are grouped into cards (by tag unless
// `key` says otherwise), how a card is drawn and how wide it is.  A run's
// λ_max interval joins its top-eigenvalue card.
const SECTIONS = [
  {id: 'eigenvalues', title: 'Top eigenvalues', kind: ['eigenvalues', 'lambda_interval'],
   key: (s) => (s.kind === 'lambda_interval' ? intervalCard(s) : s.tag),
   draw: drawEigenvalues},
  {id: 'directional', title: 'Directional curvature', kind: 'directional',
   draw: drawDirectional},
  {id: 'rotation', title: 'Eigenvector rotation', kind: 'rotation', draw: drawRotation,
   size: () => 'full'},
  {id: 'blocks', title: 'Per-layer curvature', kind: 'blocks', draw: drawBlocks,
   size: () => 'full'},
  {id: 'sharpness', title: 'Sharpness', kind: 'sharpness', draw: drawSharpness,
   size: () => 'full'},
  {id: 'density', title: 'Spectral density', kind: 'density',
   draw: (node, g) => perStepPlot(node, 'density', g, renderDensity)},
  {id: 'slices', title: 'Loss slices', kind: 'loss_slice', only: (s) => !isWalk(s),
   key: sliceGroup, draw: (node, g) => perStepPlot(node, 'loss_slice', g, renderSlices),
   size: (g) => sizeFor(new Set(g.series.map(direction)).size)},
  {id: 'step_analysis', title: 'Step-length analysis', kind: 'step_analysis',
   draw: (node, g) => perStepPlot(node, 'step_analysis', g, renderStepAnalysis),
   size: (g) => sizeFor(g.runs.length)},
  {id: 'walk', title: 'Walk between iterates', kind: 'loss_slice', only: isWalk,
   draw: drawWalk},
  {id: 'surface', title: '2-D surfaces', kind: 'surface',
   draw: (node, g) => perStepPlot(node, 'surface', g, renderSurface),
   size: (g) => sizeFor(g.runs.length)},
  {id: 'phase_diagram', title: 'Phase diagram', kind: 'phase_diagram',
   draw: (node, g) => perStepPlot(node, 'phase_diagram', g, renderPhase)},
];

// A card of n facets spans one grid column for one, two for two or three,
// the whole row for more.
function sizeFor(n) {
  return n <= 1 ? '' : n <= 3 ? 'wide' : 'full';
}

// The cards of a section: its series grouped by key, sorted by key; each
// group's series and runs in run order.
function groupCards(spec, series) {
  const groups = new Map();
  for (const s of series) {
    const kinds = [].concat(spec.kind);
    if (!kinds.includes(s.kind) || (spec.only && !spec.only(s))) continue;
    const key = spec.key ? spec.key(s) : s.tag;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(s);
  }
  const order = (s) => state.runs.indexOf(s.run);
  return [...groups].sort(([a], [b]) => a.localeCompare(b)).map(([key, members]) => {
    members.sort((a, b) => order(a) - order(b) || a.tag.localeCompare(b.tag));
    return {key, series: members, runs: [...new Set(members.map((s) => s.run))]};
  });
}

async function drawAll(root, series) {
  const pending = [];
  for (const spec of SECTIONS) {
    const groups = groupCards(spec, series);
    if (!groups.length) continue;  // sections without data are not shown
    const grid = addSection(root, spec);
    for (const group of groups) pending.push(spec.draw(addCard(grid, spec, group), group));
  }
  await Promise.all(pending);
}

// Hides the cards whose tag (or member tags) do not match the filter: a
// case-insensitive regular expression, or a plain substring where the text
// is not a valid expression.  Sections left without cards are hidden too.
function applyFilter() {
  const text = state.filter.trim();
  let matches;
  try {
    const re = new RegExp(text, 'i');
    matches = (tag) => re.test(tag);
  } catch {
    const needle = text.toLowerCase();
    matches = (tag) => tag.toLowerCase().includes(needle);
  }
  let shown = 0;
  let total = 0;
  for (const details of document.querySelectorAll('#views details.section')) {
    let inSection = 0;
    for (const c of details.querySelectorAll('.card')) {
      const tags = [c.dataset.tag, ...JSON.parse(c.dataset.tags)];
      const visible = !text || tags.some(matches);
      if (c.hidden === visible) {
        c.hidden = !visible;
        if (visible) resizePlots(c);
      }
      inSection += visible;
      total += 1;
    }
    details.hidden = !inSection;
    details.querySelector('.count').textContent = ` (${inSection})`;
    shown += inSection;
  }
  document.getElementById('no-match').hidden = !(total && !shown);
}

function message(title, text) {
  return el('div', {id: 'empty', class: 'empty'}, el('h3', {}, title), el('p', {}, text));
}

function emptyMessage(series) {
  if (!state.runs.length) {
    return message('No Spectrum data yet',
        'Write summaries with tf_sharpness.summary (eigenvalues, density, loss_slice, ' +
        'step_analysis, surface, phase_diagram, rotation, blocks, sharpness, directional, ' +
        'lambda_interval) inside a tf.summary writer, ' +
        'or run: python scripts/train.py --flagfile=scripts/flags/quick.cfg --logdir=LOGDIR');
  }
  if (!state.selected.size) return message('No run selected', 'Tick a run above.');
  return series.length ? null : message('No Spectrum data', 'The selected runs have none yet.');
}

// Reloads tags and data and redraws.  The new page is built below the old
// one and replaces it when drawn (the scroll position survives); a refresh
// started meanwhile supersedes this one.  #status's data-generation counts
// the refreshes that finished.
async function refresh() {
  const generation = ++state.generation;
  const current = () => generation === state.generation;
  const status = document.getElementById('status');
  status.textContent = 'loading…';
  try {
    Plotly = await loadPlotly();
    const tags = await getJson('tags');
    if (!current()) return;
    const runs = Object.keys(tags).sort();
    for (const r of runs) if (!state.runs.includes(r)) state.selected.add(r);
    state.tags = tags;
    state.runs = runs;
    renderRunSelector();
    const series = await fetchSeries();
    if (!current()) return;
    const views = document.getElementById('views');
    const next = el('div', {class: 'generation'});
    views.append(next);
    const empty = emptyMessage(series);
    if (empty) next.append(empty);
    else await drawAll(next, series);
    if (!current()) {
      next.remove();
      return;
    }
    for (const old of [...views.children]) if (old !== next) old.remove();
    const first = next.querySelector('.eigenvalues-plot');
    if (first) first.id = 'eigenvalues-plot';
    applyFilter();
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    status.dataset.generation = generation;
  } catch (e) {
    if (!current()) return;
    status.textContent = `error: ${e.message}`;
    console.warn(e);
  }
}

// Checkboxes in the run colours; rebuilt only when the set of runs changes.
function renderRunSelector() {
  const box = document.getElementById('runs');
  const toggles = [...box.querySelectorAll('input.run-toggle')];
  if (toggles.map((t) => t.dataset.run).join('\n') !== state.runs.join('\n') || !toggles.length) {
    box.replaceChildren(el('span', {class: 'runs-label'}, 'Runs'));
    for (const run of state.runs) {
      const cb = el('input', {type: 'checkbox', class: 'run-toggle', 'data-run': run,
                              style: `accent-color:${runColor(run)}`, onchange: (e) => {
        if (e.target.checked) state.selected.add(run); else state.selected.delete(run);
        refresh();
      }});
      box.append(el('label', {class: 'run', style: `color:${runColor(run)}`}, cb, ` ${run}`));
    }
  }
  for (const cb of box.querySelectorAll('input.run-toggle')) {
    cb.checked = state.selected.has(cb.dataset.run);
  }
}

export async function render() {
  document.head.append(el('link', {rel: 'stylesheet', href: new URL('static/style.css', BASE).href}));
  const filter = el('input', {type: 'search', id: 'tag-filter', spellcheck: 'false',
                              placeholder: 'Filter tags (regular expressions supported)',
                              oninput: (e) => { state.filter = e.target.value; applyFilter(); }});
  const poll = el('input', {type: 'checkbox', id: 'poll', onchange: (e) => {
    clearInterval(state.timer);
    if (e.target.checked) state.timer = setInterval(refresh, 30000);
  }});
  const logAxis = el('input', {type: 'checkbox', id: 'log-axis', onchange: (e) => {
    state.logAxis = e.target.checked;
    setLogAxis();
  }});
  document.body.append(
    el('header', {},
       filter,
       el('button', {id: 'refresh', onclick: () => refresh()}, 'Refresh'),
       el('label', {}, poll, ' auto-refresh (30 s)'),
       el('label', {}, logAxis, ' log eigenvalue axis'),
       el('span', {id: 'status'})),
    el('div', {id: 'runs'}),
    el('div', {id: 'no-match', class: 'empty', hidden: ''}, 'No card matches the tag filter.'),
    el('div', {id: 'views'}));
  await refresh();
}
