// The Spectrum tab: Hessian eigenvalues, spectral densities and loss-landscape
// probes written by tf_sharpness.summary.  An ES module loaded by TensorBoard
// into the plugin iframe; all URLs are relative to this module.

const BASE = new URL('./', import.meta.url);
const PALETTES = [
  ['#1f77b4', '#4a98c9', '#74b3d8', '#9ecae1', '#c6dbef', '#deebf7'],
  ['#d62728', '#e0524a', '#ea7d6e', '#f3a893', '#f9cfbb', '#fde5d9'],
  ['#2ca02c', '#52b452', '#79c879', '#a0dba0', '#c7edc7', '#e0f5e0'],
  ['#9467bd', '#a983cb', '#bf9fd9', '#d4bbe6', '#e9d7f3', '#f4ebf9'],
  ['#ff7f0e', '#ff9a3f', '#ffb570', '#ffd0a1', '#ffe5cc', '#fff2e5'],
  ['#8c564b', '#a4766c', '#bc978d', '#d4b7ae', '#ead7d0', '#f5ebe7'],
];

const state = {tags: {}, runs: [], selected: new Set(), logAxis: false, timer: null};

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

function tagsOfKind(kind) {
  const out = [];
  for (const run of state.runs) {
    if (!state.selected.has(run)) continue;
    for (const [tag, k] of Object.entries(state.tags[run] || {})) {
      if (k === kind) out.push([run, tag]);
    }
  }
  return out;
}

function section(id, title) {
  const box = el('section', {id, class: 'view'}, el('h3', {}, title));
  document.getElementById('views').append(box);
  return box;
}

function plotDiv(box, id) {
  const div = el('div', {id, class: 'plot'});
  box.append(div);
  return div;
}

// A slider over the steps of a series; calls draw(index) on change.
function stepSlider(box, steps, draw) {
  const label = el('span', {class: 'step-label'});
  const slider = el('input', {type: 'range', min: 0, max: steps.length - 1,
                              value: steps.length - 1, class: 'step-slider'});
  const update = () => {
    label.textContent = ` step ${steps[slider.value]}`;
    draw(Number(slider.value));
  };
  slider.addEventListener('input', update);
  box.append(el('div', {class: 'controls'}, 'Step: ', slider, label));
  update();
}

async function drawEigenvalues(Plotly) {
  const data = await getJson('eigenvalues');
  const runs = state.runs.filter((r) => state.selected.has(r) && data[r]);
  if (!runs.length) return;
  const box = section('eigenvalues-view', 'Top Hessian eigenvalues');
  const toggle = el('label', {}, el('input', {type: 'checkbox', id: 'log-axis',
      ...(state.logAxis ? {checked: ''} : {}),
      onchange: (e) => { state.logAxis = e.target.checked; refresh(); }}), ' log axis');
  box.append(el('div', {class: 'controls'}, toggle));
  const div = plotDiv(box, 'eigenvalues-plot');
  const traces = [];
  runs.forEach((run, ri) => {
    const palette = PALETTES[ri % PALETTES.length];
    for (const [tag, points] of Object.entries(data[run])) {
      const k = Math.max(...points.map((p) => p.values.length));
      for (let i = 0; i < k; i++) {
        traces.push({
          x: points.map((p) => p.step), y: points.map((p) => p.values[i] ?? null),
          mode: 'lines+markers', name: `${run} λ${i + 1}`,
          line: {color: palette[Math.min(i, palette.length - 1)]},
          // Error bars: the spread over Hessian subsets where measured,
          // else the Ritz residual ||Hv - λv||.
          error_y: points.some((p) => p.spread || p.residuals) ? {type: 'data', visible: true,
              array: points.map((p) => (p.spread ? p.spread[i] : p.residuals ? p.residuals[i] : 0))}
              : undefined,
          hovertemplate: `${run} ${tag} λ${i + 1}<br>step %{x}<br>%{y:.5g}<extra></extra>`,
        });
      }
      const thr = points.filter((p) => p.learning_rate).map((p) => ({
          x: p.step, y: 2 * (1 + (p.momentum || 0)) / p.learning_rate}));
      if (thr.length) {
        traces.push({x: thr.map((t) => t.x), y: thr.map((t) => t.y), mode: 'lines',
                     name: `${run} 2(1+β)/η`, line: {color: palette[0], dash: 'dash'},
                     hovertemplate: `${run} threshold 2(1+β)/η = %{y:.5g}<extra></extra>`});
      }
      const mv = points.filter((p) => p.num_matvecs != null);
      if (mv.length) {
        const info = points[points.length - 1].info || {};
        const desc = Object.entries(info).map(([a, b]) => `${a}: ${b}`).join(', ');
        box.append(el('div', {class: 'note'},
            `${run}: HVPs per measurement ${mv.map((p) => p.num_matvecs).join(', ')}` +
            (desc ? ` — Hessian of: ${desc}` : '')));
      }
    }
  });
  await Plotly.newPlot(div, traces, {
    xaxis: {title: {text: 'step'}},
    yaxis: {title: {text: 'eigenvalue'}, type: state.logAxis ? 'log' : 'linear'},
    margin: {t: 20}, hovermode: 'closest', height: 420,
  }, {responsive: true});
}

async function drawPerStep(Plotly, kind, route, title, render) {
  for (const [run, tag] of tagsOfKind(kind)) {
    const points = await getJson(route, {run, tag});
    if (!points.length) continue;
    const box = section(`${kind}-${run}-${tag}`.replace(/[^\w-]/g, '_'), `${title}: ${run} / ${tag}`);
    const div = plotDiv(box, `${kind}-plot-${run}-${tag}`.replace(/[^\w-]/g, '_'));
    div.classList.add(`${kind}-plot`);
    if (kind === 'loss_slice' && points[0].direction === 'walk') {
      // The walk between iterates as one continuous curve over the steps.
      const x = [], y = [];
      for (const p of points) {
        p.alphas.forEach((a, i) => { x.push(p.step + a); y.push(p.losses[i]); });
        x.push(null); y.push(null);
      }
      await Plotly.newPlot(div, [{x, y, mode: 'lines', name: 'walk',
          hovertemplate: 'iterate %{x:.2f}<br>loss %{y:.5g}<extra></extra>'}],
          {xaxis: {title: {text: 'step + interpolation a'}}, yaxis: {title: {text: 'loss'}},
           margin: {t: 20}, height: 360}, {responsive: true});
      continue;
    }
    stepSlider(box, points.map((p) => p.step), (i) => render(Plotly, div, points[i]));
  }
}

function renderDensity(Plotly, div, p) {
  const floor = 1e-12;
  return Plotly.react(div, [{x: p.grid, y: p.density.map((d) => Math.max(d ?? floor, floor)),
      mode: 'lines', name: 'density',
      hovertemplate: 'λ %{x:.4g}<br>density %{y:.3g}<extra></extra>'}],
    {xaxis: {title: {text: 'eigenvalue'}}, yaxis: {title: {text: 'density'}, type: 'log'},
     margin: {t: 20}, height: 360}, {responsive: true});
}

function renderSlice(Plotly, div, p) {
  return Plotly.react(div, [{x: p.alphas, y: p.losses, mode: 'lines+markers',
      name: p.direction || 'slice',
      hovertemplate: 'α %{x}<br>loss %{y:.5g}<extra></extra>'}],
    {xaxis: {title: {text: `α (× ${p.scale != null ? p.scale.toPrecision(3) : '1'} along ${p.direction})`}},
     yaxis: {title: {text: 'loss'}}, margin: {t: 20}, height: 360}, {responsive: true});
}

function renderSteps(Plotly, div, p) {
  const traces = p.directions.map((d, i) => ({type: 'bar', name: d,
      x: p.factors.map((f) => `${f}×η`), y: p.changes[i],
      hovertemplate: `${d}<br>%{x}: %{y:.3g}%<extra></extra>`}));
  return Plotly.react(div, traces, {barmode: 'group', margin: {t: 20}, height: 360,
      yaxis: {title: {text: 'loss change (%)'}}}, {responsive: true});
}

function renderSurface(Plotly, div, p) {
  return Plotly.react(div, [{type: 'contour', x: p.xs, y: p.ys, z: p.losses,
      colorscale: 'Viridis', contours: {coloring: 'heatmap'},
      hovertemplate: 'x %{x}<br>y %{y}<br>loss %{z:.5g}<extra></extra>'}],
    {xaxis: {title: {text: (p.directions || [])[0] || 'x'}},
     yaxis: {title: {text: (p.directions || [])[1] || 'y'}}, margin: {t: 20}, height: 420},
    {responsive: true});
}

function renderPhase(Plotly, div, p) {
  const byPhase = {};
  for (const r of p.records) (byPhase[r.phase] = byPhase[r.phase] || []).push(r);
  const traces = Object.entries(byPhase).map(([phase, rs]) => ({
      mode: 'markers', name: phase, x: rs.map((r) => 1 / r.width), y: rs.map((r) => r.c),
      hovertemplate: `${phase}<br>1/width %{x:.4g}<br>c %{y:.3g}<extra></extra>`}));
  return Plotly.react(div, traces, {xaxis: {title: {text: '1 / width'}},
      yaxis: {title: {text: 'c = η λ₀'}, type: 'log'}, margin: {t: 20}, height: 420},
      {responsive: true});
}

// How the top-k subspace moved between consecutive measurements: principal
// angles and the gradient's overlap with the top subspace over the steps,
// and the overlap matrix |<e_i(t'), e_j(t)>| at the step chosen on the slider.
async function drawRotation(Plotly) {
  for (const [run, tag] of tagsOfKind('rotation')) {
    const points = await getJson('rotation', {run, tag});
    if (!points.length) continue;
    const id = `rotation-${run}-${tag}`.replace(/[^\w-]/g, '_');
    const box = section(id, `Eigenvector rotation: ${run} / ${tag}`);
    const lines = plotDiv(box, `${id}-angles`);
    lines.classList.add('rotation-plot');
    const steps = points.map((p) => p.step);
    const k = Math.max(...points.map((p) => (p.principal_angles || []).length));
    const traces = [];
    for (let i = 0; i < k; i++) {
      traces.push({x: steps, y: points.map((p) => (p.principal_angles && p.principal_angles[i] != null
                                                    ? p.principal_angles[i] * 180 / Math.PI : null)),
                   mode: 'lines+markers', name: `angle ${i + 1}`,
                   hovertemplate: `principal angle ${i + 1}<br>step %{x}<br>%{y:.3g}°<extra></extra>`});
    }
    if (points.some((p) => p.gradient_overlap != null)) {
      traces.push({x: steps, y: points.map((p) => p.gradient_overlap), yaxis: 'y2',
                   mode: 'lines+markers', name: '‖P g‖ / ‖g‖', line: {dash: 'dot', color: '#444'},
                   hovertemplate: 'gradient in top subspace<br>step %{x}<br>%{y:.3g}<extra></extra>'});
    }
    await Plotly.newPlot(lines, traces, {
      xaxis: {title: {text: 'step'}}, yaxis: {title: {text: 'principal angle (degrees)'}, rangemode: 'tozero'},
      yaxis2: {title: {text: '‖P g‖ / ‖g‖'}, overlaying: 'y', side: 'right', range: [0, 1]},
      margin: {t: 20}, height: 360, legend: {orientation: 'h'}}, {responsive: true});
    const heat = plotDiv(box, `${id}-overlaps`);
    heat.classList.add('overlap-plot');
    stepSlider(box, steps, (i) => {
      const z = points[i].overlaps;
      return Plotly.react(heat, [{type: 'heatmap', z, zmin: 0, zmax: 1, colorscale: 'Blues',
          x: z[0].map((_, j) => `e${j + 1}(t)`), y: z.map((_, j) => `e${j + 1}(prev)`),
          hovertemplate: '%{y} · %{x}: %{z:.3f}<extra></extra>'}],
        {margin: {t: 20}, height: 320, yaxis: {autorange: 'reversed'}}, {responsive: true});
    });
  }
}

function emptyState() {
  document.getElementById('views').append(el('div', {id: 'empty', class: 'empty'},
    el('h3', {}, 'No Spectrum data yet'),
    el('p', {}, 'Write summaries with tf_sharpness.summary (eigenvalues, density, ' +
      'loss_slice, step_analysis, surface, phase_diagram, rotation) inside a tf.summary writer, ' +
      'or run: python scripts/train.py --flagfile=scripts/flags/quick.cfg --logdir=LOGDIR')));
}

async function refresh() {
  const views = document.getElementById('views');
  const status = document.getElementById('status');
  status.textContent = 'loading…';
  try {
    const Plotly = await loadPlotly();
    state.tags = await getJson('tags');
    const runs = Object.keys(state.tags).sort();
    for (const r of runs) if (!state.runs.includes(r)) state.selected.add(r);
    state.runs = runs;
    renderRunSelector();
    views.replaceChildren();
    if (!runs.length) { emptyState(); status.textContent = ''; return; }
    await drawEigenvalues(Plotly);
    await drawPerStep(Plotly, 'density', 'density', 'Spectral density', renderDensity);
    await drawPerStep(Plotly, 'loss_slice', 'slices', 'Loss slice', renderSlice);
    await drawPerStep(Plotly, 'step_analysis', 'step_analysis', 'Step-length analysis', renderSteps);
    await drawPerStep(Plotly, 'surface', 'surface', '2-D loss surface', renderSurface);
    await drawPerStep(Plotly, 'phase_diagram', 'phase_diagram', 'Phase diagram', renderPhase);
    await drawRotation(Plotly);
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    status.textContent = `error: ${e.message}`;
    console.warn(e);
  }
}

function renderRunSelector() {
  const box = document.getElementById('runs');
  box.replaceChildren('Runs: ');
  state.runs.forEach((run, i) => {
    const cb = el('input', {type: 'checkbox', class: 'run-toggle', 'data-run': run,
        ...(state.selected.has(run) ? {checked: ''} : {}),
        onchange: (e) => {
          if (e.target.checked) state.selected.add(run); else state.selected.delete(run);
          refresh();
        }});
    box.append(el('label', {style: `color:${PALETTES[i % PALETTES.length][0]};margin-right:1em`},
                  cb, ` ${run}`));
  });
}

export async function render() {
  const style = el('link', {rel: 'stylesheet', href: new URL('static/style.css', BASE).href});
  document.head.append(style);
  const poll = el('input', {type: 'checkbox', id: 'poll', onchange: (e) => {
    clearInterval(state.timer);
    if (e.target.checked) state.timer = setInterval(refresh, 30000);
  }});
  document.body.append(
    el('header', {},
       el('button', {id: 'refresh', onclick: refresh}, 'Refresh'),
       el('label', {}, poll, ' auto-refresh (30 s)'),
       el('span', {id: 'status'})),
    el('div', {id: 'runs'}),
    el('div', {id: 'views'}));
  await refresh();
}
