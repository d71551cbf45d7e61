"""Config-driven jobs, all through phasediag.jobs.lifecycle: ``run``, ``validate``, ``experiment`` (one
:func:`run_job`), and ``plot``, ``export``, ``merge`` on their result directories; the summary printing."""

from __future__ import annotations

import contextlib

import click

from phasediag.cli.options import (
    NONNEGATIVE,
    POSITIVE,
    WIDTH,
    BadInput,
    IntegerType,
    flag,
    json_option,
    no_plot_option,
    progress,
    quiet_option,
    shard_option,
    shard_value,
    workers_option,
)

# ----------------------------------------------------------------------------------------------------------
# the one way in and out of the lifecycle


@contextlib.contextmanager
def config_errors():
    """A bad config, run directory or option: one line, exit status 2; a run option or setting the library
    names by its field (`out`, `shard`) is named by its flag."""
    from phasediag.config.reader import ConfigError
    from phasediag.errors import FieldError

    try:
        yield
    except FieldError as e:
        raise BadInput(f"{flag(e.field)}: {e.message}") from None
    except ConfigError as e:
        raise BadInput(str(e)) from None


def run_job(config, out, as_json: bool, quiet: bool, **how) -> None:
    """Run any job kind through the lifecycle, print its summary (bad input: one line, exit 2)."""
    from phasediag.jobs import lifecycle

    flags = {"validate", "experiment"}
    modes = {k: how.pop(k) for k in flags if k in how}
    start, update, close = progress(quiet or as_json)
    options = lifecycle.Options(progress_total=start, progress=update, warn=warn, **how)
    try:
        with config_errors():
            _, summary = lifecycle.run(config, out=lifecycle.DEFAULT if out is None else out,
                                       options=options, **modes)
    finally:
        close()
    echo_summary(summary, as_json, quiet)


def warn(message: str) -> None:
    """One line about something the run recovered from on its own (stderr, even with --quiet)."""
    click.echo(f"Warning: {' '.join(message.split())}", err=True)


def echo_summary(summary, as_json: bool, quiet: bool) -> None:
    """Print a lifecycle Summary: its JSON object, or its text."""
    import json

    if as_json:
        click.echo(json.dumps(summary.to_dict(), allow_nan=False))
    elif not quiet:
        if summary.status == "up to date":
            click.echo(f"{summary.out}: up to date (config {summary.config_hash}), nothing to do")
            return
        click.echo(summary.text)


def echo_paths(paths, as_json: bool, quiet: bool) -> None:
    """Print written paths: a JSON list, or one 'wrote PATH' line each."""
    import json

    if as_json:
        click.echo(json.dumps(paths))
    elif not quiet:
        for p in paths:
            click.echo(f"wrote {p}")


# ----------------------------------------------------------------------------------------------------------
# phasediag run

RUN_EPILOG = """\b
Examples:
  phasediag run configs/1_width_vs_init.yaml                 # -> outputs/width_vs_init/
  phasediag run configs/7_gd_lr_vs_width.yaml --workers 2 --json
  phasediag run configs/big.yaml --shard 3/100      # -> outputs/big/shard-0003-of-0100/ (examples/slurm/)
  phasediag run configs/big.yaml --shard 3/100 --shared --out /scratch/big   # one result, no merge
"""


@click.command(epilog=RUN_EPILOG)
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output directory.  [default: outputs/<name>/, or outputs/<name>/shard-KKKK-of-NNNN/]")
@shard_option("Evaluate only part K of N of the grid (cluster arrays); join the parts with 'merge'.")
@workers_option("Parallel workers: forked processes on Linux (threads elsewhere); results are bit-identical "
                "for any number.")
@click.option("--shared", is_flag=True,
              help="With --shard: write into the one result all shards share in --out (a folder they all see, "
                   "e.g. on a cluster file system); the last shard to finish commits it, no merge needed.")
@click.option("--resume", is_flag=True, help="Reuse finished chunks of an interrupted run; skip a finished one.")
@no_plot_option("Write the data and meta.json only, no figures.")
@click.option("--chunk-size", type=IntegerType(1, 2**40), default=131072, show_default=True,
              help="Grid points per vectorized chunk (bounds memory; does not change any result).")
@click.option("--checkpoint-every", type=NONNEGATIVE, default=5.0, show_default=True, metavar="SECONDS",
              help="Save finished chunks for --resume at most this often (0: after every chunk).")
@json_option("Print a JSON summary (paths, counts, timings).")
@quiet_option("No progress bar, no summary.")
def run(config, out, shard, shared, workers, resume, no_plot, chunk_size, checkpoint_every, as_json, quiet):
    """Run a YAML CONFIG of any kind (a sweep of the closed form, a 'mode: scaling' diagram, an 'experiment:'
    study; the kind comes from the config) and write its run directory: the data, the figures, meta.json.

    The run directory is one unit: the new files are staged and committed together with meta.json (which
    records their sizes and SHA-256), so an interrupted or failed run leaves the previous result complete;
    one writer at a time (a second exits with status 75); a sweep keeps its finished chunks in .partial-*/
    for --resume.
    """
    run_job(config, out, as_json, quiet, shard=shard_value(shard), shared=shared, workers=workers, resume=resume,
            plot=not no_plot, chunk_size=chunk_size, checkpoint_every=checkpoint_every)


# ----------------------------------------------------------------------------------------------------------
# phasediag validate

VALIDATE_EPILOG = """\b
Examples:
  phasediag validate configs/1_width_vs_init.yaml                  # -> outputs/width_vs_init/validate/
  phasediag validate configs/7_gd_lr_vs_width.yaml --points 40 --workers 2 --json
  phasediag validate configs/1_width_vs_init.yaml --shard 2/8 --out v/2 && phasediag merge v/* --out v/all
"""


@click.command(epilog=VALIDATE_EPILOG)
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--points", type=IntegerType(1, 100_000), default=24, show_default=True,
              help="Grid points to simulate, spread over the predicted phases (GD: outcomes too).")
@click.option("--max-width", type=WIDTH, default=10_000, show_default=True,
              help="Only points of at most this width are simulated (the vectors are stored).")
@click.option("--method", type=click.Choice(["gd", "flow"]), default="gd", show_default=True,
              help="flow configs: gd = GD at a small step (its discretization error is the deviation), "
                   "flow = Dormand-Prince integration of the flow. GD configs always use GD.")
@click.option("--step", type=POSITIVE, default=0.01, show_default=True,
              help="flow configs, --method gd: a Theta_max times the learning-rate factor (the step size).")
@click.option("--max-steps", type=IntegerType(1, 10_000_000), default=200_000, show_default=True,
              help="Cap on simulated steps per point (GD configs: the exact map is compared at the same step).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output directory.  [default: outputs/<name>/validate/, or .../shard-KKKK-of-NNNN/]")
@shard_option("Simulate only part K of N of the selected points; join the parts with 'merge'.")
@workers_option("Processes simulating points in parallel (results are bit-identical for any number).")
@no_plot_option("Write validation.json and meta.json only.")
@json_option("Print a JSON summary (with every point's row).")
@quiet_option("No progress bar, no table.")
def validate(config, points, max_width, method, step, max_steps, out, shard, workers, no_plot, as_json, quiet):
    """Check the closed form against simulated training on points of a sweep CONFIG.

    Points are chosen over the predicted phases; each is simulated at its configured width from vectors seeded
    by (config seed, grid index) and compared with the exact solution for the same vectors: per point the map
    label, the predicted and measured labels, NTK change and alignment, and the worst deviation over the path.
    Writes validation.json, meta.json and two figures (markers coloured by measured phase over the predicted
    map; predicted vs measured). Exit status 0 also when labels differ: read the report.
    """
    from phasediag.studies.validation import Settings

    settings = Settings(points=points, max_width=max_width, step=step, max_steps=max_steps, method=method)
    run_job(config, out, as_json, quiet, shard=shard_value(shard), workers=workers, plot=not no_plot,
            settings=settings, validate=True)


# ----------------------------------------------------------------------------------------------------------
# phasediag experiment

EXPERIMENT_EPILOG = """\b
Examples:
  phasediag experiment configs/12_nonlinear_digits.yaml      # needs: pip install '.[experiments]'
  phasediag experiment configs/11_gd_vs_sgd.yaml --workers 2 --json
"""


@click.command(epilog=EXPERIMENT_EPILOG)
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output directory.  [default: outputs/<name>/]")
@workers_option("Processes training in parallel (results are bit-identical for any number).")
@no_plot_option("Write the results and meta.json only.")
@json_option("Print a JSON summary (paths, timings, findings).")
@quiet_option("No progress bar, no summary.")
def experiment(config, out, workers, no_plot, as_json, quiet):
    """Run a simulated-training study from a YAML CONFIG whose top-level key 'experiment' names it:
    'nonlinear' (a tanh / ReLU two-layer network on scikit-learn's digits: NTK change, alignment, test error
    against init scale) or 'sgd_drift' (the linear model under SGD vs GD: drift of the imbalance Delta and the
    alignment across batch sizes and learning rates).
    """
    run_job(config, out, as_json, quiet, workers=workers, plot=not no_plot, experiment=True)


# ----------------------------------------------------------------------------------------------------------
# phasediag plot / export / merge: on result directories


def _formats(value):
    if value is None:
        return None
    from phasediag.config.sweep import FORMATS

    items = [v.strip().lower() for v in value.split(",")]
    bad = [v for v in items if v not in FORMATS]
    if bad:
        raise click.BadParameter(f"unknown format {bad[0]!r}; allowed: {', '.join(FORMATS)}",
                                 param_hint="'--formats'")
    return items


#: the `phasediag plot` option of each figure setting (phasediag.config.reader.figure_option_values fields)
FIGURE_FLAGS = {"labels": "--label", "title": "--title", "size": "--size", "style": "--style", "dpi": "--dpi"}


def _figure_options(labels, title, no_title, size, style, dpi) -> dict:
    """The figure options as the resolved plot settings (only those given), checked by the config's rules
    before anything is read or written; a bad value is a click.BadParameter naming its option."""
    from phasediag.cli.options import parse_number
    from phasediag.errors import FieldError

    if title is not None and no_title:
        raise click.UsageError("--title conflicts with --no-title: give one")
    values: dict = {}
    if labels:
        values["labels"] = {}
        for text in labels:
            name, sep, label = text.partition("=")
            if not sep or not name.strip():
                raise click.BadParameter(f"{text!r:.60}: expected NAME=TEXT, e.g. s='$s$'", param_hint="'--label'")
            values["labels"][name.strip()] = label  # (a name given twice: the last one)
    if no_title:
        values["title"] = None
    elif title is not None:
        values["title"] = title
    if size is not None:
        if "," in size:
            parts = size.split(",")
            if len(parts) != 2 or any(not p.strip() for p in parts):
                _refuse("--size")(f"{size!r:.40}: expected column, page or W,H (inches), e.g. 6,4")
            values["size"] = [parse_number(p.strip(), _refuse("--size")) for p in parts]
        else:
            values["size"] = size.strip()
    if style is not None:
        values["style"] = style
    if dpi is not None:
        values["dpi"] = parse_number(dpi, _refuse("--dpi"))
    from phasediag.config.reader import figure_option_values

    try:
        return figure_option_values(**values)
    except FieldError as e:
        _refuse(FIGURE_FLAGS.get(e.field, e.field))(e.message)


def _refuse(option: str):
    """fail(message) for `option`: a click.BadParameter (one line, exit status 2)."""
    def fail(message):
        raise click.BadParameter(message, param_hint=f"'{option}'")
    return fail


PLOT_EPILOG = """\b
Examples:
  phasediag plot outputs/width_vs_init --formats png,pdf
  phasediag plot outputs/width_vs_init --label s='$\\sigma^2$' --label d='width $d$' --no-title --size column
  phasediag plot outputs/width_vs_init --size 6,4 --style ggplot --dpi 300
"""


@click.command("plot", epilog=PLOT_EPILOG)
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--formats", default=None, metavar="png,pdf,svg", help="Figure formats.  [default: the config's]")
@click.option("--label", "labels", multiple=True, metavar="NAME=TEXT",
              help="Label of a sweep variable or metric NAME on axes and colour bars (matplotlib mathtext, e.g. "
                   "s='$\\sigma^2$'); repeatable; over the config's plot.labels.")
@click.option("--title", default=None, metavar="TEXT", help="Title of every figure.  [default: the config's]")
@click.option("--no-title", is_flag=True, help="No titles.")
@click.option("--size", default=None, metavar="column|page|W,H",
              help="Figure size: column, page, or W,H in inches (1 to 30).  [default: the config's]")
@click.option("--style", default=None, metavar="NAME|FILE",
              help="A matplotlib style name (e.g. ggplot) or style file.  [default: the config's]")
@click.option("--dpi", default=None, metavar="N", help="PNG resolution, 50 to 1200.  [default: the config's, 150]")
@json_option("Print the written paths as a JSON list.")
@quiet_option("Print nothing.")
def plot_command(directory, formats, labels, title, no_title, size, style, dpi, as_json, quiet):
    """Re-render the figures of a results DIRECTORY (from results.npz and meta.json); the figure options are
    recorded in its meta.json (config.plot), the data are not touched."""
    from phasediag.jobs import lifecycle

    from phasediag.errors import FieldError

    formats = _formats(formats)
    options = _figure_options(labels, title, no_title, size, style, dpi)
    with config_errors():
        try:
            paths = [str(p) for p in lifecycle.plot(directory, formats, options or None)]
        except FieldError as e:  # a label or title name this run does not have: named by its option
            if e.field not in FIGURE_FLAGS:
                raise
            _refuse(FIGURE_FLAGS[e.field])(e.message)
    echo_paths(paths, as_json, quiet)


@click.command("export")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--csv", "as_csv", is_flag=True, required=True, help="Write tidy CSV tables (one row per point).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="CSV path.  [default: DIRECTORY/<name>.csv; trajectories in <name>_trajectories.csv]")
@json_option("Print the written paths as a JSON list.")
@quiet_option("Print nothing.")
def export_command(directory, as_csv, out, as_json, quiet):
    """Export a results DIRECTORY as tidy CSV: axis values and every metric per grid point."""
    from phasediag.jobs import lifecycle

    with config_errors():
        paths = lifecycle.export_csv(directory, out)
    echo_paths(paths, as_json, quiet)


@click.command("merge")
@click.argument("directories", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Directory of the joined result.")
@no_plot_option("Do not draw the figures.")
@json_option("Print a JSON summary.")
@quiet_option("Print nothing.")
def merge_command(directories, out, no_plot, as_json, quiet):
    """Join the shard DIRECTORIES of one config (written by 'run --shard K/N' or 'validate --shard K/N') into
    one result."""
    from phasediag.jobs import lifecycle

    with config_errors():
        summary = lifecycle.merge(list(directories), out, plot=not no_plot)
    echo_summary(summary, as_json, quiet)

