"""spark-submit entry point: `ketch-spark dsr run`.

    spark-submit --packages "$(python -m ketch_spark.jars packages)" --py-files ketch_spark.zip \\
        --files conf/ketch.yaml,conf/policy.yaml \\
        jobs/run_requests.py --conf ketch.yaml --kind erasure

Arguments are those of `ketch-spark dsr run --help`. `make zip` builds ketch_spark.zip; README "Submit the jobs
with spark-submit" explains the jars, the shipped config and the warehouse.
"""

import sys

from ketch_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["dsr", "run", *sys.argv[1:]]))
