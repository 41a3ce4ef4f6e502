"""The page's Explore tab: sumlab.analysis shown with Gradio components (the analysis itself lives there).

Runs under the configured roots (the leaderboard with 95% intervals), one run's examples worst first with their
per-example ROUGE (search by id or text, pages), an example with the words of its prediction that match the
reference marked (unigram, bigram or LCS), length and compression statistics, and a second run side by side with
the paired comparison (``analysis.compare.compare_runs``). Every path the browser sends back goes through
``analysis.explore.open_run`` (refused outside the roots); problems are shown as the analysis's one-line errors.
"""

# No `from __future__ import annotations`: Gradio finds the SelectData argument of an event by its annotation,
# which must be the class itself.
import functools
import html
from types import SimpleNamespace
from typing import Any, Callable, Optional

from sumlab.analysis import explore
from sumlab.analysis.highlight import KINDS, Highlighted, Span, to_html
from sumlab.analysis.roots import Roots
from sumlab.core.errors import SumlabError

PAGE = 20  # examples per page
RUN_COLUMNS = ["run", "kind", "model", "data", "score", "95% interval", "examples", "status", "path"]
EXAMPLE_COLUMNS = ["rank", "id", "rouge_combined", "rouge1", "rouge2", "rougeL", "prediction"]
LENGTH_FIELDS = ("input", "reference", "prediction", "prediction/reference", "input/prediction", "input/reference")
LENGTH_COLUMNS = ["field", "mean", "min", "p5", "p25", "p50", "p75", "p95", "max"]
COMPARE_COLUMNS = ["key", "baseline (A)", "B", "B - A", "95% interval", "p", "wins/ties/losses"]
CSS = """
mark.unigram { background: #fde68a; } mark.bigram { background: #fdba74; } mark.lcs { background: #a7f3d0; }
.example-text { white-space: pre-wrap; line-height: 1.5; }
"""


def shown(func: Callable[..., Any]) -> Callable[..., Any]:
    """The analysis's one-line errors (a path outside the roots, a run without predictions) as the page's alert."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import gradio as gr

        try:
            return func(*args, **kwargs)
        except SumlabError as ex:
            raise gr.Error(str(ex)) from None

    return wrapper


def _number(value: Any, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def run_rows(roots: Roots) -> tuple[list[list[str]], list[tuple[str, str]]]:
    """The leaderboard rows, and the run choices (label, path) for the dropdowns."""
    rows, choices = [], []
    for r in explore.list_runs(roots):
        interval = f"{r.interval.low:.4f} - {r.interval.high:.4f}" if r.interval else ""
        score = f"{_number(r.score)} ({r.score_key})" if r.score is not None else ""
        rows.append([r.name, r.kind, r.model or "", r.data or "", score, interval, _number(r.examples), r.status or "",
                     r.path])  # fmt: skip
        choices.append((f"{r.name} ({r.kind}, {_number(r.score)})", r.path))
    return rows, choices


def score_runs(roots: Roots) -> int:
    """Score the prediction directories that have no cached per-example scores yet (their intervals); how many."""
    from sumlab.analysis.scores import NoReferences, example_scores

    scored = 0
    for summary in explore.list_runs(roots):
        if summary.kind == "predict" and summary.interval is None:
            try:
                example_scores(explore.open_run(roots, summary.path))
                scored += 1
            except NoReferences:  # predictions without references: nothing to score
                continue
    return scored


def example_rows(roots: Roots, path: str, query: str, order: str, offset: int) -> tuple[list[list[str]], str, int]:
    """One page of a run's examples (`offset` kept within them), a line saying which, and the page's offset."""
    run = explore.open_run(roots, path)
    page = explore.examples_page(run, query, offset, PAGE, order)
    if not page.rows and page.matched:  # paged past the end: the last page
        offset = (page.matched - 1) // PAGE * PAGE
        page = explore.examples_page(run, query, offset, PAGE, order)
    rows = [[str(r.rank + 1), r.id, *(_number(r.scores.get(k)) for k in EXAMPLE_COLUMNS[2:6]), r.prediction]
            for r in page.rows]  # fmt: skip
    what = f"matching {query.strip()!r}" if query.strip() else "in the run"
    first = offset + 1 if rows else 0
    return rows, f"examples {first}-{offset + len(rows)} of {page.matched} {what} ({page.total} in all)", offset


def _marked(side: dict[str, Any], kind: str) -> str:
    return to_html(Highlighted(side["text"], tuple(Span(**s) for s in side["spans"])), kind)


def _scores(scores: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in scores.items()) or "no reference: not scored"


def example_html(roots: Roots, path: str, example_id: str, kind: str) -> str:
    """The example in full: input, its references and the prediction, matched words marked."""
    view = explore.example_view(explore.open_run(roots, path), example_id)
    row = view.row
    parts = [f"<h3>{html.escape(row.id)}</h3><p>{_scores(row.scores)}</p>"]
    for i, marks in enumerate(view.highlights):
        label = "Reference" if len(view.highlights) == 1 else f"Reference {i + 1}"
        parts.append(f"<h4>{label}</h4><div class='example-text'>{_marked(marks['reference'], kind)}</div>")
        parts.append(f"<h4>Prediction</h4><div class='example-text'>{_marked(marks['prediction'], kind)}</div>")
    if not view.highlights:
        parts.append(f"<h4>Prediction</h4><div class='example-text'>{html.escape(row.prediction)}</div>")
    if row.text is not None:
        parts.append(f"<h4>Input</h4><div class='example-text'>{html.escape(row.text)}</div>")
    return "".join(parts)


def length_rows(roots: Roots, path: str) -> list[list[str]]:
    stats = explore.length_stats(explore.open_run(roots, path))
    return [[name, *(_number(stats[name][c], 2) for c in LENGTH_COLUMNS[1:])] for name in LENGTH_FIELDS if stats[name]]


def compare_rows(roots: Roots, path_a: str, path_b: str) -> list[list[str]]:
    """The paired bootstrap comparison of B with A, per ROUGE key."""
    from sumlab.analysis.compare import compare_runs

    pair = compare_runs([explore.open_run(roots, path_a), explore.open_run(roots, path_b)]).pairs[0]
    return [[k.key, _number(k.baseline_mean), _number(k.mean), f"{k.difference:+.4f}",
             f"{k.low:+.4f} - {k.high:+.4f}" + (" (excludes 0)" if k.significant else ""), f"{k.p_value:.3f}",
             f"{k.wins}/{k.ties}/{k.losses}"] for k in pair.keys]  # fmt: skip


def side_by_side_html(roots: Roots, path_a: str, path_b: str, example_id: str, kind: str) -> str:
    both = explore.side_by_side(explore.open_run(roots, path_a), explore.open_run(roots, path_b), example_id)
    columns = []
    for name in ("a", "b"):
        side = both[name]
        marks = side["highlights"]  # per reference; the first one's marks here
        marked = _marked(marks[0]["prediction"], kind) if marks else html.escape(side["prediction"])
        columns.append(f"<div style='flex:1'><h4>{name.upper()}: {html.escape(side['run'])}</h4>"
                       f"<p>{_scores(side['scores'])}</p><div class='example-text'>{marked}</div></div>")  # fmt: skip
    references = "".join(f"<div class='example-text'>{html.escape(r)}</div>" for r in both["references"])
    return (f"<h3>{html.escape(example_id)}</h3><div style='display:flex;gap:2em'>{''.join(columns)}</div>"
            f"<h4>Reference</h4>{references}")  # fmt: skip


def explore_tab(roots: Roots, page: Any) -> None:
    """The components and their events (inside a gr.Tab of `page`)."""
    events(roots, page, layout(roots))


def layout(roots: Roots) -> SimpleNamespace:
    import gradio as gr

    c = SimpleNamespace()
    gr.Markdown(f"Runs under {', '.join(f'`{r}`' for r in roots.paths) or 'no existing root'}, best first.")
    c.runs = gr.Dataframe(headers=RUN_COLUMNS, label="Runs", interactive=False, elem_id="runs", wrap=True)
    with gr.Row():
        c.refresh = gr.Button("Refresh runs", size="sm")
        c.score = gr.Button("Intervals for every run (scores the runs without)", size="sm")
    with gr.Row():
        c.run = gr.Dropdown(label="Run (A)", choices=[], elem_id="run-a")
        c.other = gr.Dropdown(label="Compare with (B)", choices=[], elem_id="run-b")
    with gr.Row():
        c.query = gr.Textbox(label="Search id or text", scale=3)
        c.order = gr.Radio(list(explore.ORDERS), value="worst", label="Order")
        c.kind = gr.Radio(list(KINDS), value="lcs", label="Highlight")
    c.where = gr.Markdown()
    c.examples = gr.Dataframe(headers=EXAMPLE_COLUMNS, label="Examples (select one)", interactive=False,
                              elem_id="examples", wrap=True)  # fmt: skip
    with gr.Row():
        c.previous, c.following = gr.Button("Previous page", size="sm"), gr.Button("Next page", size="sm")
    c.offset = gr.State(0)
    c.example_id = gr.Textbox(label="Example id", elem_id="example-id")
    c.example = gr.HTML(elem_id="example")
    with gr.Accordion("Lengths and compression (whitespace tokens)", open=False):
        c.lengths = gr.Dataframe(headers=LENGTH_COLUMNS, interactive=False, elem_id="lengths")
    with gr.Accordion("A and B side by side", open=True):
        c.comparison = gr.Dataframe(headers=COMPARE_COLUMNS, label="B against A: paired bootstrap",
                                    interactive=False, elem_id="comparison")  # fmt: skip
        c.side = gr.HTML(elem_id="side-by-side")
    return c


def events(roots: Roots, page: Any, c: SimpleNamespace) -> None:
    import gradio as gr

    @shown
    def list_all() -> tuple[Any, Any, Any]:
        rows, choices = run_rows(roots)
        return rows, gr.Dropdown(choices=choices), gr.Dropdown(choices=choices)

    @shown
    def open_page(path: Optional[str], text: str, sort: str, start: int) -> tuple[Any, str, int]:
        return example_rows(roots, path, text, sort, max(0, start)) if path else ([], "", 0)

    @shown
    def show(path: Optional[str], b: Optional[str], eid: str, mark: str) -> tuple[str, str]:
        if not path or not eid.strip():
            return "", ""
        both = side_by_side_html(roots, path, b, eid.strip(), mark) if b else ""
        return example_html(roots, path, eid.strip(), mark), both

    def pick(evt: gr.SelectData) -> str:
        return str(evt.row_value[1])

    listed, paged = [c.runs, c.run, c.other], [c.examples, c.where, c.offset]
    page.load(list_all, outputs=listed)
    c.refresh.click(list_all, outputs=listed)
    c.score.click(shown(lambda: score_runs(roots)), None, None).then(list_all, outputs=listed)
    for trigger in (c.run.change, c.query.submit, c.order.change):
        trigger(lambda p, t, s: open_page(p, t, s, 0), [c.run, c.query, c.order], paged)
    c.previous.click(lambda p, t, s, o: open_page(p, t, s, o - PAGE), [c.run, c.query, c.order, c.offset], paged)
    c.following.click(lambda p, t, s, o: open_page(p, t, s, o + PAGE), [c.run, c.query, c.order, c.offset], paged)
    c.run.change(shown(lambda p: length_rows(roots, p) if p else []), c.run, c.lengths)
    c.examples.select(pick, None, c.example_id)
    for trigger in (c.example_id.change, c.kind.change, c.other.change):
        trigger(show, [c.run, c.other, c.example_id, c.kind], [c.example, c.side])
    for trigger in (c.run.change, c.other.change):
        trigger(shown(lambda a, b: compare_rows(roots, a, b) if a and b else []), [c.run, c.other], c.comparison)
