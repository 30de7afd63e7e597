"""Real services on loopback for the connector tests: PostgreSQL and the moto server.

Registered as a pytest plugin by tests/conftest.py (``pytest_plugins``). Every
fixture is session-scoped and starts its service on first use only, so tests that
do not need a service do not pay for it.

* PostgreSQL: the Debian server binaries (``/usr/lib/postgresql/*/bin``), a
  temporary data directory owned by the ``postgres`` OS user (initdb refuses to
  run as root), a free loopback port, password (scram) authentication on
  127.0.0.1 and the unix socket inside the temporary directory.
* moto's server mode (``ThreadedMotoServer``) on 127.0.0.1 for S3 and DynamoDB,
  reached over HTTP by boto3 and by Spark's s3a, which is configured on the live
  SparkSession through its Hadoop configuration.
* A Spark Connect server (``SparkConnectServer``, shipped in pyspark's jars) on
  127.0.0.1, started with the venv's ``spark-submit`` and Delta's jars and
  settings, for clients made with ``SparkSession.builder.remote(url)``. Such a
  client cannot share a Python process with the run's classic session, so its
  tests run in a child process (see tests/test_filter_connect.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import pwd
import shutil
import socket
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from ketch_spark.config import KetchConfig

__all__ = [
    "PostgresServer",
    "MotoServer",
    "free_port",
    "SHORT_LIVED_JVM",
    "with_connectors",
    "postgres_server",
    "moto_server",
    "s3a_spark",
    "services_connectors",
    "services_cfg",
    "SeededStores",
    "seeded_stores",
    "SparkConnectServer",
    "spark_connect_server",
]

PG_SUPERUSER = "postgres"
PG_SUPERUSER_PASSWORD = "pg-super-Secret-5f2c9a"
PG_USER = "ketch_reader"
PG_PASSWORD = "pg-reader-Secret-81d07e"
PG_DATABASE = "warehouse"
AWS_ACCESS_KEY_ID = "AKIAKETCHTESTKEY0001"
AWS_SECRET_ACCESS_KEY = "aws-Secret-Key-3b9e7c41d2"
AWS_REGION = "us-east-1"


#: Java options for a test's helper JVM that lives seconds or only hands out work (a killed job, a racing
#: driver, a standalone master and worker): C1 compilation alone and a one-thread collector halve the CPU such a
#: JVM takes (measured: 40 -> 18-22 CPU-s for a catalog scan to reach its kill point), leaving the cores to the
#: work under test.
SHORT_LIVED_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_bin_dir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    pytest.skip("PostgreSQL server binaries are not installed (run `make install`)")


def _pg_os_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
        return pwd.getpwnam("postgres")


@dataclass
class PostgresServer:
    """A running PostgreSQL server on loopback.

    Attributes:
        port: TCP port on 127.0.0.1.
        root: Temporary folder holding the data directory, socket and log.
        bin_dir: Folder of the server binaries.
    """

    port: int
    root: Path
    bin_dir: Path

    @property
    def jdbc_url(self) -> str:
        """JDBC URL of the test database (no credentials)."""
        return f"jdbc:postgresql://127.0.0.1:{self.port}/{PG_DATABASE}"

    def connect(self, dbname: str = PG_DATABASE, user: str = PG_SUPERUSER, password: str = PG_SUPERUSER_PASSWORD):
        """A psycopg connection (autocommit) over TCP."""
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=self.port, dbname=dbname, user=user, password=password, autocommit=True
        )

    def execute(self, *statements: str, dbname: str = PG_DATABASE) -> None:
        """Runs SQL statements as the superuser."""
        with self.connect(dbname=dbname) as conn:
            for statement in statements:
                conn.execute(statement)


def _run_as(user: pwd.struct_passwd, command: list[str]) -> None:
    done = subprocess.run(
        command, user=user.pw_uid, group=user.pw_gid, capture_output=True, text=True, check=False, cwd="/"
    )
    if done.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} failed: {done.stderr[-2000:]}")


def _start_postgres() -> PostgresServer:
    bin_dir = _pg_bin_dir()
    user = _pg_os_user()
    root = Path(tempfile.mkdtemp(prefix="ketch-pg-"))
    os.chown(root, user.pw_uid, user.pw_gid)
    pwfile = root / "pwfile"
    pwfile.write_text(PG_SUPERUSER_PASSWORD + "\n", encoding="utf-8")
    os.chown(pwfile, user.pw_uid, user.pw_gid)
    data = root / "data"
    _run_as(
        user,
        [
            str(bin_dir / "initdb"), "-D", str(data), "-U", PG_SUPERUSER, "-E", "UTF8", "--no-sync",
            "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
        ],
    )
    port = free_port()
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c autovacuum=off"
    _run_as(user, [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"])
    server = PostgresServer(port=port, root=root, bin_dir=bin_dir)
    server.execute(f"CREATE DATABASE {PG_DATABASE}", dbname="postgres")
    server.execute(f"CREATE ROLE {PG_USER} LOGIN PASSWORD '{PG_PASSWORD}'")
    return server


def _stop_postgres(server: PostgresServer) -> None:
    user = _pg_os_user()
    try:
        _run_as(user, [str(server.bin_dir / "pg_ctl"), "-D", str(server.root / "data"), "-m", "fast", "-w", "stop"])
    finally:
        shutil.rmtree(server.root, ignore_errors=True)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server on a free loopback port, stopped (and its directory removed) on exit."""
    server = _start_postgres()
    try:
        yield server
    finally:
        _stop_postgres(server)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server on a free loopback port, stopped at the end of the run."""
    with running_postgres() as server:
        yield server


@dataclass
class MotoServer:
    """moto's server mode on loopback (S3 and DynamoDB over HTTP).

    Attributes:
        endpoint: ``http://127.0.0.1:<port>``.
    """

    endpoint: str

    def client(self, service: str) -> Any:
        """A boto3 client of ``service`` pointed at the server."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=AWS_REGION,
            aws_access_key_id=AWS_ACCESS_KEY_ID,
            aws_secret_access_key=AWS_SECRET_ACCESS_KEY,
        )

    def upload_tree(self, local: Path, bucket: str, prefix: str) -> None:
        """Uploads every file under ``local`` to ``s3://bucket/prefix/...``."""
        s3 = self.client("s3")
        for path in sorted(local.rglob("*")):
            if path.is_file():
                key = f"{prefix.strip('/')}/{path.relative_to(local).as_posix()}"
                s3.upload_file(str(path), bucket, key)


def _wait_for_port(port: int, timeout: float = 20.0, what: str = "moto server",
                   process: subprocess.Popen | None = None) -> None:
    """Waits until something listens on ``port``; stops early when ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before listening on port {port}")
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f} s")


@contextlib.contextmanager
def running_moto() -> Iterator[MotoServer]:
    """moto's threaded server on a free loopback port (S3, DynamoDB), stopped on exit."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_DEFAULT_REGION", AWS_REGION)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    _wait_for_port(port)
    try:
        yield MotoServer(endpoint=f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto's threaded server on a free loopback port (S3, DynamoDB)."""
    with running_moto() as server:
        yield server


def s3a_hadoop_settings(endpoint: str) -> dict[str, str]:
    """Hadoop settings that point s3a at ``endpoint`` with the test keys."""
    return {
        "fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "fs.s3a.endpoint": endpoint,
        "fs.s3a.endpoint.region": AWS_REGION,
        "fs.s3a.path.style.access": "true",
        "fs.s3a.connection.ssl.enabled": "false",
        "fs.s3a.access.key": AWS_ACCESS_KEY_ID,
        "fs.s3a.secret.key": AWS_SECRET_ACCESS_KEY,
        "fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        "fs.s3a.attempts.maximum": "2",
        "fs.s3a.retry.limit": "2",
        "fs.s3a.connection.establish.timeout": "5s",
        "fs.s3a.connection.timeout": "20s",
        "fs.s3a.change.detection.mode": "none",
        "fs.s3a.input.stream.type": "classic",
    }


@pytest.fixture(scope="session")
def s3a_spark(spark, moto_server: MotoServer):
    """The session's SparkSession with s3a pointed at the moto server."""
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in s3a_hadoop_settings(moto_server.endpoint).items():
        hadoop_conf.set(key, value)
    return spark


def _aws_credentials(moto_server: MotoServer, endpoint_key: str) -> dict[str, Any]:
    """Endpoint, region and the test credentials of a connector section reaching moto."""
    return {
        endpoint_key: moto_server.endpoint,
        "region": AWS_REGION,
        "access_key_id": AWS_ACCESS_KEY_ID,
        "secret_access_key": AWS_SECRET_ACCESS_KEY,
    }


@pytest.fixture(scope="session")
def services_connectors(postgres_server: PostgresServer, moto_server: MotoServer) -> dict[str, Any]:
    """The ``connectors`` config section pointing at the running services."""
    return connectors_section(postgres_server, moto_server)


def connectors_section(postgres_server: PostgresServer, moto_server: MotoServer) -> dict[str, Any]:
    """The ``connectors`` config section pointing at the two servers (PostgreSQL as the reader role)."""
    return {
        "jdbc": {"url": postgres_server.jdbc_url, "user": PG_USER, "password": PG_PASSWORD},
        "dynamodb": _aws_credentials(moto_server, "endpoint_url"),
        "s3": {**_aws_credentials(moto_server, "endpoint"), "path_style_access": True, "ssl_enabled": False},
    }


def with_connectors(cfg: KetchConfig, connectors: dict[str, Any], **sections: dict[str, Any]) -> KetchConfig:
    """A copy of ``cfg`` with the given ``connectors`` section (and other free sections)."""
    merged = {**cfg.sections, "connectors": connectors, **sections}
    return dataclasses.replace(cfg, sections=merged)


@pytest.fixture()
def services_cfg(cfg: KetchConfig, services_connectors: dict[str, Any], s3a_spark) -> KetchConfig:
    """The ``cfg`` fixture with its connectors section pointing at the running services."""
    return with_connectors(cfg, services_connectors)


# -- seeded stores: one of each kind, with known personal columns ------------------------------------

LAKE_BUCKET = "ketch-lake"
SECURED_DATABASE = "secured"
WRONG_PASSWORD = "wrong-Password-77aa"


@dataclass
class SeededStores:
    """Stores seeded with personal data for the catalog and connector tests.

    Attributes:
        lake: Local folder holding the lake (Delta, partitioned Parquet, gzip JSON logs, CSV).
        bad: Local folder with a corrupt Parquet dataset and an empty prefix.
        s3_lake: The same lake uploaded to moto's S3 (``s3a://``).
        postgres: The PostgreSQL server.
        moto: The moto server.
        connectors: Connectors section for these stores (with a wrong-password and an unreachable source).
    """

    lake: Path
    bad: Path
    s3_lake: str
    postgres: PostgresServer
    moto: MotoServer
    connectors: dict[str, Any]


def _write_lake(spark, root: Path) -> None:
    import gzip
    import hashlib
    import json

    from pyspark.sql import functions as F

    customers = [
        (1, "jane.doe@example.com", "+14155550101", "Jane Doe", "12 Main Street, Springfield"),
        (2, "bob.smith@example.org", "+442071234567", "Bob Smith", "4 Elm Road, London"),
        (3, "maria.garcia@example.net", "+34911234567", "Maria Garcia", "7 Oak Lane, Madrid"),
    ]
    customers_df = spark.createDataFrame(customers, "customer_id long, email string, phone string, full_name string, "
                                                    "address string")
    customers_df = customers_df.withColumn(
        "profile",
        F.struct(F.struct(F.sha2(F.lower(F.col("email")), 256).alias("email_sha256")).alias("contact")),
    ).drop("address")
    customers_df.write.format("delta").save(str(root / "crm" / "customers"))
    events = [
        ("6D92078A-8246-4BA4-AE5B-76104861E7DC", "10.1.2.3", "u-1", "415-555-0134", 10.5, "2026-11-01"),
        ("A1B2C3D4-1111-2222-3333-444455556666", "2001:db8::7", "u-2", "212-555-0199", 3.0, "2026-11-01"),
        ("0F8FAD5B-D9CB-469F-A165-70867728950E", "192.168.7.9", "u-3", "646-555-0143", 7.25, "2026-11-02"),
    ]
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = ("idfa", "client_ip", "user_id", "order_number", "amount", "event_date")
    events_table = pa.table({name: [row[i] for row in events] for i, name in enumerate(columns)})
    pq.write_to_dataset(events_table, str(root / "events"), partition_cols=["event_date"])
    logs = root / "raw" / "logs"
    logs.mkdir(parents=True)
    people = [("Jane Doe", "jane.doe@example.com"), ("Bob Smith", "bob.smith@example.org")]
    for part, (name, email) in enumerate(people):
        record = {
            "ts": f"2026-11-0{part + 1}T10:00:00Z",
            "user": {"id": f"u-{part + 1}", "name": name, "contact": {"email": email}},
            "payload": json.dumps({"client": {"ip": f"10.0.0.{part + 1}"}}),
            "items": [{"sku": "SKU-1", "card_number": "4111 1111 1111 1111"}],
            "note": "thanks",
        }
        with gzip.open(logs / f"part-{part:04d}.jsonl.gz", "wt", encoding="utf-8") as handle:
            for _ in range(3):
                handle.write(json.dumps(record) + "\n")
    exports = root / "exports"
    exports.mkdir()
    (exports / "contacts.csv").write_text(
        "first_name,last_name,dob,gender,age_range,income_band,content_sha256\n"
        + "".join(
            f"{first},{last},19{70 + i}-0{i + 1}-1{i},{gender},25-34,50k-75k,"
            f"{hashlib.sha256(f'doc-{i}'.encode()).hexdigest()}\n"
            for i, (first, last, gender) in enumerate([("Jane", "Doe", "female"), ("Bob", "Smith", "male"),
                                                       ("Maria", "Garcia", "female")])
        ),
        encoding="utf-8",
    )


def _write_bad(root: Path) -> None:
    corrupt = root / "corrupt"
    corrupt.mkdir(parents=True)
    (corrupt / "part-00000.parquet").write_bytes(b"PAR1 this is not a parquet file at all" * 10)
    (root / "empty").mkdir()


def _seed_postgres(server: PostgresServer) -> None:
    server.execute(
        "CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL, phone text, full_name text, "
        "preferences jsonb, created_at timestamp DEFAULT now())",
        "INSERT INTO customers (email, phone, full_name, preferences) VALUES "
        "('jane.doe@example.com', '+14155550101', 'Jane Doe', '{\"contact\": {\"email\": \"jane@example.com\"}}'),"
        "('bob.smith@example.org', '+442071234567', 'Bob Smith', '{\"contact\": {\"email\": \"bob@example.org\"}}'),"
        "('maria.garcia@example.net', '+34911234567', 'Maria Garcia', '{\"contact\": {\"email\": \"m@example.net\"}}')",
        "CREATE TABLE orders (order_number text, customer_email_sha256 text, amount numeric(10, 2))",
        "INSERT INTO orders VALUES "
        "('415-555-0134', encode(sha256('jane.doe@example.com'), 'hex'), 10.50),"
        "('212-555-0199', encode(sha256('bob.smith@example.org'), 'hex'), 3.00),"
        "('646-555-0143', encode(sha256('maria.garcia@example.net'), 'hex'), 7.25)",
        "CREATE TABLE restricted (user_id text, email text)",
        "INSERT INTO restricted VALUES ('u-1', 'jane.doe@example.com')",
        f"GRANT SELECT ON customers, orders TO {PG_USER}",
        f"GRANT INSERT ON restricted TO {PG_USER}",
    )
    server.execute(f"CREATE DATABASE {SECURED_DATABASE}", dbname="postgres")


def _seed_dynamodb(moto: MotoServer) -> None:
    dynamodb = moto.client("dynamodb")
    for table, key in (("profiles", "user_id"), ("mixed_items", "pk")):
        dynamodb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    for i, email in enumerate(["jane.doe@example.com", "bob.smith@example.org", "maria.garcia@example.net"]):
        dynamodb.put_item(
            TableName="profiles",
            Item={
                "user_id": {"S": f"u-{i + 1}"},
                "email": {"S": email},
                "device": {"M": {"idfa": {"S": f"6D92078A-8246-4BA4-AE5B-76104861E7D{i}"}}},
                "visits": {"N": str(10 + i)},
            },
        )
    mixed = [
        {"pk": {"S": "a"}, "email": {"S": "jane.doe@example.com"}, "age": {"N": "41"}},
        {"pk": {"S": "b"}, "age": {"S": "25-34"}, "tags": {"SS": ["x", "y"]}},
        {"pk": {"S": "c"}, "contact": {"M": {"phone": {"S": "+14155550101"}}}, "blob": {"B": b"\x00\x01"}},
        {"pk": {"S": "d"}, "contact": {"S": "not a map here"}, "scores": {"L": [{"N": "1"}, {"S": "two"}]}},
    ]
    for item in mixed:
        dynamodb.put_item(TableName="mixed_items", Item=item)


@pytest.fixture(scope="session")
def seeded_stores(spark, postgres_server: PostgresServer, moto_server: MotoServer, s3a_spark,
                  tmp_path_factory: pytest.TempPathFactory) -> SeededStores:
    """A lake (local and on S3), a PostgreSQL warehouse and DynamoDB tables holding known personal data."""
    root = tmp_path_factory.mktemp("stores")
    lake, bad = root / "lake", root / "bad"
    _write_lake(spark, lake)
    _write_bad(bad)
    moto_server.client("s3").create_bucket(Bucket=LAKE_BUCKET)
    moto_server.upload_tree(lake, LAKE_BUCKET, "lake")
    _seed_postgres(postgres_server)
    _seed_dynamodb(moto_server)
    closed_port = free_port()
    connectors = {
        "jdbc": [
            {"url": postgres_server.jdbc_url, "user": PG_USER, "password": PG_PASSWORD},
            {"url": f"jdbc:postgresql://127.0.0.1:{postgres_server.port}/{SECURED_DATABASE}", "user": PG_USER,
             "password": WRONG_PASSWORD},
            {"url": f"jdbc:postgresql://127.0.0.1:{closed_port}/{PG_DATABASE}", "user": PG_USER,
             "password": PG_PASSWORD, "connect_timeout": 3},
        ],
        "dynamodb": _aws_credentials(moto_server, "endpoint_url"),
        "s3": _aws_credentials(moto_server, "endpoint"),
    }
    return SeededStores(lake, bad, f"s3a://{LAKE_BUCKET}/lake", postgres_server, moto_server, connectors)


# ----------------------------------------------------------------------------- Spark Connect

SPARK_CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


@dataclass(frozen=True)
class SparkConnectServer:
    """A Spark Connect server on loopback.

    Attributes:
        url: ``sc://127.0.0.1:<port>``, for ``SparkSession.builder.remote(url)``.
        log: The server's output (spark-submit and the driver's log).
    """

    url: str
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's output."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _spark_connect_command(port: int, jars: list[str], warehouse: Path) -> list[str]:
    """``spark-submit`` of the server with Delta's jars and settings, sized like the test session."""
    import pyspark

    from ketch_spark.session import delta_settings

    spark_home = Path(pyspark.__file__).resolve().parent
    settings = {
        **delta_settings(),
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": "2",
        "spark.default.parallelism": "2",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.sql.warehouse.dir": str(warehouse),
        "spark.driver.memory": "1g",
    }
    command = [str(spark_home / "bin" / "spark-submit"), "--class", SPARK_CONNECT_SERVER_CLASS,
               "--name", "ketch-spark-connect-tests", "--master", "local[2]", "--jars", ",".join(jars)]
    for key, value in settings.items():
        command += ["--conf", f"{key}={value}"]
    return [*command, "spark-internal"]


def _stop_process_group(process: subprocess.Popen) -> None:
    """Stops ``process``, started in a session of its own, and whatever it started."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def spark_connect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkConnectServer]:
    """A Spark Connect server (local[2], UTC, Delta) on a free loopback port, stopped at the end of the run.

    Skips when the Delta jars or pyspark's Connect client (``pyspark[connect]``) are not installed.
    """
    from ketch_spark.errors import JarsNotInstalledError
    from ketch_spark.jars import default_jars_dir, installed_jar_paths

    for module in ("grpc", "grpc_status", "google.rpc", "zstandard"):  # pyspark[connect]
        pytest.importorskip(module, reason="the Spark Connect client needs pyspark[connect] (`make install`)")
    try:
        jars = installed_jar_paths(default_jars_dir(), ["delta"])
    except JarsNotInstalledError as missing:
        pytest.skip(f"the Spark Connect server needs the Delta jars: {missing}")
    root = tmp_path_factory.mktemp("spark-connect")
    port = free_port()
    server = SparkConnectServer(url=f"sc://127.0.0.1:{port}", log=root / "server.log")
    import pyspark

    env = {**os.environ, "SPARK_HOME": str(Path(pyspark.__file__).resolve().parent), "PYSPARK_PYTHON": sys.executable}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    with server.log.open("wb") as log:
        process = subprocess.Popen(
            _spark_connect_command(port, jars, root / "warehouse"), cwd=root, env=env,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        _wait_for_port(port, timeout=180, what="Spark Connect server", process=process)
    except RuntimeError as failed:
        _stop_process_group(process)
        raise RuntimeError(f"{failed}; its log ends with:\n{server.log_tail()}") from None
    try:
        yield server
    finally:
        _stop_process_group(process)
