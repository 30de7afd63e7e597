"""The README's spark-submit recipe as tests run it: the block itself, a checkout to run it in, a plain shell."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ketch_spark.jars import default_jars_dir, installed_jar_paths

REPO = Path(__file__).resolve().parent.parent
#: The README's comment right above the spark-submit block.
RECIPE_MARKER = "<!-- spark-submit recipe"
#: The recipe's jars argument: resolved from Maven Central by spark-submit.
PACKAGES_ARGUMENT = '--packages "$(.venv/bin/python -m ketch_spark.jars packages)"'
#: The recipe's line that makes the venv's Python the job's (on a cluster, the cluster's Python is).
EXPORT_PYTHON = 'export PYSPARK_PYTHON="$PWD/.venv/bin/python"'


def readme_recipe() -> str:
    """The bash block under the README's spark-submit recipe marker."""
    after_marker = (REPO / "README.md").read_text().split(RECIPE_MARKER, 1)[1]
    return after_marker.split("```bash\n", 1)[1].split("```", 1)[0]


def offline_recipe() -> str:
    """The recipe with the installed Delta jars in ``--jars`` instead of ``--packages``, unless
    ``KETCH_SPARK_TEST_PACKAGES=1`` asks for ``--packages`` as written (over the network).

    ``python -m ketch_spark.jars install`` keeps no Ivy cache (it resolves in a temporary folder), so
    offline ``--packages`` cannot work.
    """
    recipe = readme_recipe()
    if os.environ.get("KETCH_SPARK_TEST_PACKAGES") == "1":
        return recipe
    return recipe.replace(PACKAGES_ARGUMENT, f"--jars {','.join(installed_jar_paths(default_jars_dir(), ['delta']))}")


def recipe_checkout(root: Path, warehouse: Path) -> Path:
    """A checkout as a reader of the README has one, whose conf/ketch.yaml keeps the tables under ``warehouse``.

    The package, the jobs, the Makefile and the venv are links to this repository; ``conf/`` is real: a
    ketch.yaml with an absolute warehouse next to a copy of the policy (named relative to it, as conf/ has it).
    """
    root.mkdir()
    for name in ("Makefile", "ketch_spark", "jobs", ".venv"):
        (root / name).symlink_to(REPO / name)
    (root / "conf").mkdir()
    (root / "conf" / "policy.yaml").write_text((REPO / "conf" / "policy.yaml").read_text())
    (root / "conf" / "ketch.yaml").write_text(
        f"warehouse: {warehouse}\npolicy: policy.yaml\nspark: {{spark.sql.shuffle.partitions: 2}}\n"
    )
    return root


def plain_shell_env() -> dict[str, str]:
    """This process's environment without the venv on PATH, PYTHONPATH, SPARK_HOME or a Spark gateway."""
    venv_bin = Path(sys.executable).parent.resolve()
    dropped = ("PYTHONPATH", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "PYSPARK_GATEWAY_PORT",
               "PYSPARK_GATEWAY_SECRET", "SPARK_HOME", "VIRTUAL_ENV", "KETCH_SPARK_CONF", "KETCH_SPARK_JARS")
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    env["PATH"] = os.pathsep.join(
        entry for entry in env.get("PATH", "").split(os.pathsep) if entry and Path(entry).resolve() != venv_bin
    )
    return env
