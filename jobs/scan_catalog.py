"""spark-submit entry point: `ketch-spark catalog scan`.

    spark-submit --packages "$(python -m ketch_spark.jars packages)" --py-files ketch_spark.zip \\
        --files conf/ketch.yaml,conf/policy.yaml \\
        jobs/scan_catalog.py --conf ketch.yaml --source s3a://bucket/lake/

Arguments are those of `ketch-spark catalog scan --help`. `make zip` builds ketch_spark.zip; README "Submit the jobs
with spark-submit" explains the jars, the shipped config and the warehouse.
"""

import sys

from ketch_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["catalog", "scan", *sys.argv[1:]]))
