"""spark-submit entry point: `ketch-spark consent ingest`.

    spark-submit --packages "$(python -m ketch_spark.jars packages)" --py-files ketch_spark.zip \\
        --files conf/ketch.yaml,conf/policy.yaml \\
        jobs/ingest_consent.py --conf ketch.yaml --input s3a://bucket/consent/2026-11-26/ --format json

Arguments are those of `ketch-spark consent ingest --help`. `make zip` builds ketch_spark.zip; README "Submit the jobs
with spark-submit" explains the jars, the shipped config and the warehouse.
"""

import sys

from ketch_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["consent", "ingest", *sys.argv[1:]]))
