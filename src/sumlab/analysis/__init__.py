"""Analysis of finished runs: per-example ROUGE, honest comparisons, and the data behind the Explore page.

A *run* here is a directory with predictions: a training run (``metrics.json`` + ``test_predictions.jsonl``,
written by the test step) or a ``predict.py`` output (``metrics.json`` + ``predictions.jsonl``). Modules, in
import order:

- ``roots``: the directories files may be read from (``Roots.resolve`` refuses ``..``, absolute paths and symlinks
  that lead outside them, with ``PathRefused``, a SumlabError a server answers with 403).
- ``runs``: ``load_run(path)`` -> ``Run`` (kind, predictions file, ROUGE tokenizer, multi_reference), ``read_rows``.
- ``scores``: ``example_scores(run)`` -> ``ExampleScores`` (per-example ROUGE with the run's tokenizer, cached
  beside the predictions in ``scores-<tokenizer>-<multi_reference>.jsonl``).
- ``highlight``: ``highlights(prediction, reference, tokenizer)`` -> character spans of unigram, bigram and LCS
  matches, for HTML marks.
- ``compare``: ``compare_runs([a, b, ...])`` -> ``Comparison`` (paired bootstrap per ROUGE key, wins/ties/losses,
  the examples that changed most); ``python -m sumlab.compare`` prints and writes it.
- ``explore``: what the page shows: ``list_runs(roots)``, ``open_run(roots, path)`` (the one way in for a path
  from a request), ``examples_page``, ``example_view``, ``length_stats``, ``side_by_side``.

Results are frozen dataclasses with ``as_dict()`` (plain JSON-able data) or plain dicts; bad input raises
SumlabError (one line naming the problem and the fix; a server answers it with a 4xx). The only file written is the
per-example score cache, beside the predictions.
"""
