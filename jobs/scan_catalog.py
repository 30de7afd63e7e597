"""spark-submit entry point: `ketch-spark catalog scan`.

    spark-submit --packages "$(python -m ketch_spark.jars packages)" --py-files ketch_spark.zip \\
        --files conf/ketch.yaml,conf/policy.yaml \\
        jobs/scan_catalog.py --conf ketch.yaml --source s3a://bucket/lake/

Arguments are those of `ketch-spark catalog scan --help`.
"""

import sys

from ketch_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["catalog", "scan", *sys.argv[1:]]))
