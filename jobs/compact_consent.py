"""spark-submit entry point: `ketch-spark consent compact`.

    spark-submit --packages "$(python -m ketch_spark.jars packages)" --py-files ketch_spark.zip \\
        --files conf/ketch.yaml,conf/policy.yaml \\
        jobs/compact_consent.py --conf ketch.yaml

Arguments are those of `ketch-spark consent compact --help`. `make zip` builds ketch_spark.zip; README "Submit the jobs
with spark-submit" explains the jars, the shipped config and the warehouse.
"""

import sys

from ketch_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["consent", "compact", *sys.argv[1:]]))
