"""The study: how close the approximation comes to the model, measured and written up.

Above the approximation in the data flow (corpus -> model -> store -> search -> approximation ->
study / web); it never imports the web. Modules, in the order the work runs:

- ``prompts``: reference prompts (pool rows), held-out prompts, prompts as token ids;
- ``evaluation``: the batched evaluation of the approximation against the model;
- ``baselines/``: what the approximation is compared with, one module per kind;
- the report's sections, each on plain arrays: ``headline`` (scores, paired comparisons),
  ``verdicts`` (sentences and notes), ``strata`` (by entropy), ``neighbours`` (set sizes),
  ``weights`` (weights fitted on a tuning split), ``sweep`` (a block's threshold swept),
  ``interesting`` (prompts worth opening) with ``permalink`` (their explorer URLs);
  ``methods`` names the methods and their colours;
- ``report``: the sections assembled from :class:`~app.study.report.ReportOptions`;
- ``charts`` (the report's figures, drawn with ``figures``), ``render`` (the HTML page),
  ``jsonable`` and ``storage`` (report.json and the files on disk);
- ``eval_report``: ``ffnlens eval --report`` as one call, and where reports go (``reports_dir``);
- ``reproduction``: METHOD.md's published figures beside ours, a section of a reference report
  (its rows and verdicts in ``repro_rows``, grouped in ``repro_groups`` and ``repro_probes``,
  measured by ``repro_measures``, drawn by ``repro_charts``).

Calibration of a store's thresholds, which the workspace runs when it builds a store, lives
below the study in :mod:`app.calibrate`.
"""
