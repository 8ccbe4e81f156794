"""The ``mlebench`` command line: option parsing only, one module per command group.

User errors (a bad path, a broken file) surface as one ``Error: ...`` line and exit status 1;
bad options are click usage errors (exit status 2) that list the valid choices. The commands
call the suite's modules for everything else: configuration (:mod:`mlebench.config`), jobs
(:mod:`mlebench.engine.run`), reports (:mod:`mlebench.report`), benchmarks
(:mod:`mlebench.bench`) and the gate (:mod:`mlebench.gate`). Methods come from the registry
(:mod:`mlebench.registry`), plugins included: ``mlebench --plugin MODULE ...`` loads one that is
not installed.
"""

from __future__ import annotations

import click

from mlebench.cli import bench, check, data, jobs, report, results, sweep
from mlebench.cli.options import Group, load_plugins_option


@click.group(cls=Group)
@click.version_option(package_name="mlebench")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE", expose_value=False, is_eager=True,
              callback=load_plugins_option,
              help="Import MODULE, a method plugin that is not installed (repeatable; also MLEBENCH_PLUGINS, "
                   "comma-separated). Installed plugins register through the 'mlebench.methods' entry point.")
def main() -> None:
    """mlebench: benchmark and robustness suite for multi-modal semantic segmentation."""


for command in (data.data, *jobs.COMMANDS, results.results, results.compare_cmd, report.report_cmd,
                bench.bench, check.check_cmd, sweep.sweep):
    main.add_command(command)


if __name__ == "__main__":  # pragma: no cover
    main()
