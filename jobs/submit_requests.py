"""spark-submit entry point: `ketch-spark dsr submit`.

    spark-submit --packages "$(python -m ketch_spark.jars packages)" --py-files ketch_spark.zip \\
        --files conf/ketch.yaml,conf/policy.yaml \\
        jobs/submit_requests.py --conf ketch.yaml --input requests.jsonl

Arguments are those of `ketch-spark dsr submit --help`. `make zip` builds ketch_spark.zip; README "Submit the jobs
with spark-submit" explains the jars, the shipped config and the warehouse.
"""

import sys

from ketch_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["dsr", "submit", *sys.argv[1:]]))
