"""Layer 5, results: what a run found, as data (model.py: Outcome, Results), rendered
(render.py: text, Markdown, HTML) and recorded from pytest's reports (recorder.py, the
plugin that writes summary.json and the JUnit evidence)."""
