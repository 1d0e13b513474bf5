"""The trajectory report's text and figure (``tf-sharpness report
--logdir``): one run's measurements, its summary line, windows, threshold
crossings and a comparison with another run, from ``trajectory``'s
statistics.  Every function returns text; the command line prints it."""

from __future__ import annotations

from tf_sharpness.reports import plotting, tables, trajectory

_fmt = tables.fixed


def steps_per_epoch(records: list[dict]) -> float | None:
  """From the records' own (step, epoch) pairs; None when no record says
  (a run that has only logged step 0): the report then counts in steps."""
  for r in records:
    if r.get("epoch"):
      return round(r["step"] / r["epoch"])  # training counts whole steps per epoch
  return None


def thresholds(records: list[dict]) -> dict[str, float]:
  """The stability thresholds of the last measurement that has them."""
  return next((r["stability_thresholds"] for r in reversed(records)
               if r.get("stability_thresholds")), {})


def measurements_table(records: list[dict], per_epoch: float | None, names: list[str]) -> str:
  """One line per measurement of lambda_max, with the thresholds ``names``."""
  lines = [tables.header(["epoch", "step", "train loss", "lambda_max", *names,
                          "test accuracy"])]
  for r in records:
    if not r.get("top_eigenvalues"):
      continue
    limits = [_fmt(r.get("stability_thresholds", {}).get(n), 1) for n in names]
    epoch = None if per_epoch is None else r["step"] / per_epoch
    lines.append(f"| {_fmt(epoch, 2)} | {r['step']} | {_fmt(r.get('train_loss'), 3)} | "
                 f"{r['top_eigenvalues'][0]:.1f} | " + "".join(f"{x} | " for x in limits)
                 + f"{_fmt(r.get('test_accuracy'), 3)} |")
  return "\n".join(lines)


def summary_line(s: dict, loss_threshold: float) -> str:
  """lambda_max's start, peak, late mean and value at ``loss_threshold``."""
  at = s["lambda_max_at_loss_threshold"]
  if at is not None:
    reached = f"{at:.1f} at step {s['step_at_loss_threshold']}"
  elif all(l is None for l in s["train_loss"]):
    reached = "the training loss was never measured (train with --eval_every > 0)"
  else:
    reached = "not reached"
  where = (f"epoch {s['peak_epoch']:.2f}" if s["peak_epoch"] is not None
           else f"step {s['peak_step']}")
  after = ("below it for the last quarter of the run" if s["peaked"]
           else "within the last quarter of the run: not a peak yet")
  return (f"lambda_max: start {s['initial_lambda_max']:.1f}, peak "
          f"{s['peak_lambda_max']:.1f} at {where} ({after}), late mean "
          f"{s['late_mean_lambda_max']:.1f}; at training loss {loss_threshold:g}: "
          f"{reached}; final train loss {_fmt(s['final_train_loss'], 3)}, "
          f"test accuracy {_fmt(s['test_accuracy'], 3)}"
          + ("; DIVERGED" if s["diverged"] else ""))


def windows_table(s: dict, windows: list[tuple[float, float]], limits: dict[str, float],
                  wall: dict[int, tuple[int, float]]) -> tuple[str, list[dict]]:
  """The table of ``windows`` (A:B in epochs, or steps) and their statistics."""
  unit = "epochs" if s["epochs"] is not None else "steps"
  stats = [{**trajectory.window(s, a, b, limits),
            "seconds_per_unit": trajectory.seconds_per_unit(s, a, b, wall)} for a, b in windows]
  lines = [tables.header(
      [unit, "measurements", "mean lambda_max", "range",
       *(f"above {n} = {v:.4g}" for n, v in limits.items()), f"slope per {unit[:-1]}",
       "train loss: mean (range)", "HVPs per measurement", f"seconds per {unit[:-1]}"])]
  for w in stats:
    lines.append(f"| {w['start']:g}–{w['end']:g} | {w['count']} | {_fmt(w['mean'], 1)} | "
                 f"{tables.span(w['min'], w['max'])} | "
                 + "".join(f"{w['above'][n]} | " for n in limits)
                 + f"{tables.slope(w['slope'])} | {_loss_span(w)} | "
                 f"{_fmt(w['mean_matvecs'], 1)} | {_fmt(w['seconds_per_unit'], 1)} |")
  return "\n".join(lines), stats


def _loss_span(w: dict) -> str:
  if w["mean_train_loss"] is None:
    return tables.MISSING
  return (f"{w['mean_train_loss']:.3f} "
          f"({tables.span(w['min_train_loss'], w['max_train_loss'], 3)})")


def crossings_text(s: dict, limits: dict[str, float], levels: list[float]) -> str:
  """Where lambda_max first reaches each threshold, and the loss each level."""
  unit = "epoch" if s["epochs"] is not None else "step"
  lines = []
  for name, value in limits.items():
    x = trajectory.first_at_or_above(s, value)
    lines.append(f"lambda_max first >= {name} = {value:.4g}: "
                 + ("never" if x is None else f"at {unit} {x:g}"))
  found = trajectory.by_loss(s, levels)["index_at_level"] if levels else []
  for level, i in zip(levels, found):
    lines.append(f"training loss first <= {level:g}: "
                 + ("never" if i is None else f"at {unit} {trajectory.x_values(s)[i]:g}"))
  return "\n".join(lines)


def comparison_line(s: dict, other: dict, path: str) -> str:
  """The largest difference of lambda_max from the run ``other`` (read
  from ``path``) over the steps both measured."""
  d = trajectory.largest_difference(s, other)
  if d is None:
    return f"compared with {path}: no step measured by both"
  return (f"compared with {path}: over the {d['shared']} steps both measured, lambda_max "
          f"differs by at most {100 * d['relative']:.2f}% (step {d['step']}: "
          f"{d['value']:.1f} here, {d['reference']:.1f} there)")


def figure(s: dict, limits: dict[str, float], path: str, name: str,
           loss_threshold: float) -> str | None:
  """lambda_max and the training loss against epochs; the thresholds are
  those of the last measurement (a learning-rate schedule moves them).
  Returns ``path``, or None without matplotlib."""
  plt = plotting.pyplot()
  if plt is None:
    return None
  fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
  x, x_label = (s["epochs"], "epoch") if s["epochs"] is not None else (s["steps"], "step")
  ax.plot(x, s["lambda_max"], "o-", markersize=3, label="λ_max")
  for i, (label, value) in enumerate(limits.items()):
    ax.axhline(value, color=f"C{i + 1}", linestyle="--", label=f"{label} = {value:.3g}")
  ax.set_xlabel(x_label)
  ax.set_ylabel("λ_max")
  ax.set_title(name)
  ax.legend(fontsize=8)
  pts = [(e, l) for e, l in zip(x, s["train_loss"]) if l is not None]
  if pts:
    ax_loss.plot(*zip(*pts), "o-", markersize=3, color="C3")
  ax_loss.axhline(loss_threshold, color="k", linestyle=":", linewidth=1)
  ax_loss.set_xlabel(x_label)
  ax_loss.set_ylabel("training loss")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return path
