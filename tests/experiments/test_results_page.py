"""docs/results.md keeps its own rule: the tally line counts the summary
table's verdicts, every verdict is one of the four words, and no row
rests "reproduces" on fewer than 3 seeds."""

import collections
import os
import re

from conftest import REPO

VERDICTS = ("reproduces", "partly", "does not", "not attempted")


def _summary_rows():
  text = open(os.path.join(REPO, "docs", "results.md"), encoding="utf-8").read()
  summary = text.split("## Summary", 1)[1].split("\n## ", 1)[0]
  tally = re.search(r"\*\*Tally, (\d+) claims:\*\* (\d+) reproduce, (\d+) partly, "
                    r"(\d+) do not, (\d+) not attempted\.", summary)
  assert tally, "the summary has no tally line"
  lines = [l for l in summary.splitlines() if l.startswith("| ") and "| --- " not in l]
  header, rows = lines[0], [[c.strip() for c in l.strip("|").split("|")] for l in lines[1:]]
  assert header.startswith("| claim (paper, figure) | the paper's number | ours | verdict |")
  # a verdict may carry the erratum's mark, explained under the tally and
  # counted in it
  marked = collections.Counter(
      next(v for v in VERDICTS if r[3].startswith(v)) for r in rows if r[3].endswith(" ⚠"))
  if marked:
    assert "\n⚠: " in summary, "rows are marked ⚠ but the summary does not say why"
    said = re.search(r"Of these, marked ⚠ \([^)]*\): ([^.]*)\.", summary)
    assert said, "the tally does not count the rows marked ⚠"
    assert said.group(1) == ", ".join(
        f"{marked[v]} {'reproduce' if v == 'reproduces' else v}" for v in VERDICTS if marked[v])
  else:
    assert "⚠" not in summary
  for r in rows:
    r[3] = r[3].removesuffix(" ⚠")
  return tally, rows


def test_the_tally_counts_the_table():
  tally, rows = _summary_rows()
  words = [row[3] for row in rows]
  for word in words:
    assert word.startswith(VERDICTS), f"verdict {word!r} is not one of {VERDICTS}"
  counts = collections.Counter(next(v for v in VERDICTS if w.startswith(v)) for w in words)
  assert [int(g) for g in tally.groups()] == [
      len(rows), counts["reproduces"], counts["partly"], counts["does not"],
      counts["not attempted"]]


def test_reproduces_needs_three_seeds_and_one_seed_rows_say_so():
  _, rows = _summary_rows()
  previous = ""
  for claim, _, _, verdict, scale, _ in rows:
    # "same" (or "same; 1 seed") repeats the row above's scale
    seeds = [int(n) for n in re.findall(r"(\d+) seeds?\b", scale)] or (
        [int(n) for n in re.findall(r"(\d+) seeds?\b", previous)]
        if scale.startswith("same") else [])
    previous = scale if not scale.startswith("same") else previous
    if verdict == "reproduces":
      assert seeds and seeds[0] >= 3, (claim, scale)
    if seeds and max(seeds) == 1:
      assert verdict in ("partly (1 seed)", "does not", "not attempted"), (claim, verdict)
