"""``lrc ablate``: run a study, one ``lrc fit`` per cell, then tabulate and plot the results.

An ablation file (docs/ablations.md) names a base experiment and the cells to run:

    ablation:
      name: compressors
      base: study_base.yaml                   # an experiment config, relative to this file
      grid:                                   # cartesian product of override values
        model.compressor.name: [tome, pooling, qformer, mlp]
        model.compressor.tokens_per_frame: [16, 64]
      seeds: [0, 1]                           # optional: run.seed per cell; tables show mean ± std
      metrics: [val/mcq_acc]                  # optional: the table's and plots' metrics (default: val/*)
      overrides: {trainer.max_epochs: 3}      # optional: applied to every cell

or, instead of ``grid``, ``cells:``, a list of override mappings that may each name their own ``base``
and a ``label`` (paper Table 5, HiCo × TPO: four cells on four base configs).

Each cell's config is, from lowest to highest precedence: its base file(s), the ablation's
``overrides``, the cell's own values, ``run.seed`` from ``seeds``, the command line's ``key=value``.
Every cell is validated before anything runs. Each then runs as ``python -m lrc.cli fit`` in a child
process, so a crash or an out-of-memory kill ends that cell only and its peak memory is the child's
own (``os.wait4``). The output folder (``--out DIR``, default ``runs/ablations/NAME``):

    ablation.yaml     the resolved plan; re-running into DIR needs the same cells (it resumes)
    cells/SLUG/       log.txt (the fit's stdout and stderr), cell.json (status, exit code, error, each
                      attempt's command, wall time, peak RSS), run/ (the ``lrc fit`` run dir)
    results.csv       one row per cell and seed: varied values, status, cost, every metric
    results.md        the table to paste: main metrics as mean ± std over seeds, cost, failures
    plots/*.png       each main metric against the first varied axis, one series per other value

Re-running the same command skips finished cells (run/metrics.json), continues interrupted ones with
``lrc fit --resume`` and retries failed ones. Ctrl-C is passed on to the running cell, which saves a
checkpoint; ``lrc ablate`` then exits with 130 and the command that resumes it.

The command in five modules, each read top to bottom: plan.py (the ablation file read, checked and
expanded into cells; the output folder's plan record), runner.py (``ablate()``: the cells started, ``--jobs``
at a time, watched and recorded in cell.json; signals passed on; resume), executors.py (where a cell's
``lrc fit`` runs: a child process, or a cluster job through submitit with ``--executor slurm``), progress.py
(the progress lines and the estimate of the time left) and report.py (results.csv, results.md, plots).
"""

from lrc.commands.ablate.plan import Cell, Plan, load_plan, validate_cells
from lrc.commands.ablate.report import CellResult, plot_results, table_markdown, write_results
from lrc.commands.ablate.runner import ablate, last_error

__all__ = ["Cell", "CellResult", "Plan", "ablate", "last_error", "load_plan", "plot_results", "table_markdown",
           "validate_cells", "write_results"]
