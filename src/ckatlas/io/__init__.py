"""What ckatlas writes and reads back: atomic files, format versions, results, run folders, summaries.

* `ckatlas.io.files`: atomic writes (a temp file, then a rename), JSON and ``.npz`` helpers;
* `ckatlas.io.formats`: every saved kind's format version and the converters that bring an
  older file forward;
* `ckatlas.io.results`: the generic serialiser of result dataclasses (`JsonResult`, `NpzResult`);
* `ckatlas.io.rundir`: one training run's folder (config.json, metrics.json, weights, state);
* `ckatlas.io.summary`: an experiment's summary.json as typed entries (`read_summary`).
"""
