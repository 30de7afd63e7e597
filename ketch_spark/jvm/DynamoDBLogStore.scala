package org.apache.spark.sql.ketch

import java.io.{FileNotFoundException, IOException}
import java.net.URI
import java.nio.charset.StandardCharsets
import java.nio.file.FileAlreadyExistsException
import java.util.{Iterator => JIterator, UUID}
import java.util.concurrent.ConcurrentHashMap

import scala.jdk.CollectionConverters._

import io.delta.storage.HadoopFileSystemLogStore
import org.apache.hadoop.conf.Configuration
import org.apache.hadoop.fs.{FileSystem, Path}
import org.apache.hadoop.io.IOUtils
import software.amazon.awssdk.auth.credentials.{AwsBasicCredentials, AwsCredentialsProvider, DefaultCredentialsProvider, StaticCredentialsProvider}
import software.amazon.awssdk.http.apache.ApacheHttpClient
import software.amazon.awssdk.regions.Region
import software.amazon.awssdk.services.dynamodb.DynamoDbClient
import software.amazon.awssdk.services.dynamodb.model._

/**
 * A Delta log store for s3a:// that makes commits from several drivers safe, with a DynamoDB table
 * as the arbiter of who writes each commit file.
 *
 * S3 has no "create unless it exists" that every Delta writer uses, so two drivers committing
 * version N of a table at once could both write N.json, one silently replacing the other. Here
 * a commit N is first written to a temporary file, then claimed by a conditional PutItem of the
 * item (tablePath, fileName = N.json); only the winner copies the temporary file to N.json and
 * marks the item complete. The loser gets FileAlreadyExistsException, which Delta turns into its
 * usual conflict check and retry. A writer that dies between the claim and the copy leaves an
 * incomplete item; the next writer or lister of the table finishes the copy from the temporary
 * file. The items have the key schema of Delta's own S3DynamoDBLogStore (tablePath HASH, fileName
 * RANGE), so one lock table can serve both.
 *
 * Settings (Hadoop configuration, or Spark settings with the same names), prefix
 * spark.ketch.logStore.ddb.: tableName (default ketch_delta_log), region (default us-east-1),
 * endpoint (default: AWS's), createTable (default true: create it, on-demand billing, when
 * missing), ttlSeconds (default 86400: the expireTime stamped on complete items, for a TTL the
 * table's owner may turn on). Credentials: fs.s3a.access.key / fs.s3a.secret.key when set, else
 * the AWS SDK's default chain.
 */
class DynamoDBLogStore(initHadoopConf: Configuration) extends HadoopFileSystemLogStore(initHadoopConf) {
  import DynamoDBLogStore._

  private val settings = Settings(initHadoopConf)
  private val client = DynamoDBLogStore.client(settings)

  override def isPartialWriteVisible(path: Path, hadoopConf: Configuration): java.lang.Boolean = false

  override def write(
      path: Path,
      actions: JIterator[String],
      overwrite: java.lang.Boolean,
      hadoopConf: Configuration): Unit = {
    val fs = path.getFileSystem(hadoopConf)
    val resolved = fs.makeQualified(path)
    val version = commitVersion(resolved.getName)
    if (overwrite || version < 0) {
      writeDirectly(fs, resolved, actions, overwrite)
    } else {
      writeCommit(fs, resolved, version, actions)
    }
  }

  override def listFrom(path: Path, hadoopConf: Configuration): JIterator[org.apache.hadoop.fs.FileStatus] = {
    val fs = path.getFileSystem(hadoopConf)
    val logDir = fs.makeQualified(path).getParent
    latestEntry(tablePathOf(logDir)).filterNot(_.complete).foreach(finish(fs, logDir, _))
    super.listFrom(path, hadoopConf)
  }

  private def writeCommit(fs: FileSystem, target: Path, version: Long, actions: JIterator[String]): Unit = {
    val logDir = target.getParent
    val tablePath = tablePathOf(logDir)
    if (version > 0) finishPrevious(fs, logDir, tablePath, version - 1)
    if (fs.exists(target)) throw new FileAlreadyExistsException(target.toString)
    val tempName = s".tmp/${target.getName}.${UUID.randomUUID()}"
    writeDirectly(fs, new Path(logDir, tempName), actions, overwrite = true)
    val claim = Entry(tablePath, target.getName, tempName, complete = false, expireTime = None)
    try {
      client.putItem(putRequest(claim).toBuilder.conditionExpression("attribute_not_exists(fileName)").build())
    } catch {
      case _: ConditionalCheckFailedException => throw new FileAlreadyExistsException(target.toString)
    }
    finish(fs, logDir, claim)
    fs.delete(new Path(logDir, tempName), false)
  }

  /** Copies a claimed commit's temporary file to its place, then marks the item complete. */
  private def finish(fs: FileSystem, logDir: Path, entry: Entry): Unit = {
    val target = new Path(logDir, entry.fileName)
    if (!fs.exists(target)) {
      try copy(fs, new Path(logDir, entry.tempPath), target)
      catch {
        // the claim's writer finished it and removed its temporary file meanwhile
        case _: FileNotFoundException if fs.exists(target) =>
        case missing: FileNotFoundException =>
          throw new FileNotFoundException(
            s"commit ${entry.fileName} of ${entry.tablePath} is claimed in DynamoDB table ${settings.table} but " +
              s"neither it nor its temporary file ${entry.tempPath} exists: ${missing.getMessage}")
      }
    }
    val expires = System.currentTimeMillis() / 1000 + settings.ttlSeconds
    client.putItem(putRequest(entry.copy(complete = true, expireTime = Some(expires))))
  }

  private def finishPrevious(fs: FileSystem, logDir: Path, tablePath: String, version: Long): Unit = {
    val previous = new Path(logDir, commitFileName(version))
    if (!fs.exists(previous)) getEntry(tablePath, previous.getName).filterNot(_.complete).foreach(finish(fs, logDir, _))
  }

  private def writeDirectly(fs: FileSystem, path: Path, actions: JIterator[String], overwrite: Boolean): Unit = {
    if (!overwrite && fs.exists(path)) throw new FileAlreadyExistsException(path.toString)
    val out = fs.create(path, overwrite)
    try actions.asScala.foreach(action => out.write((action + "\n").getBytes(StandardCharsets.UTF_8)))
    finally out.close()
  }

  private def copy(fs: FileSystem, from: Path, to: Path): Unit = {
    val in = fs.open(from)
    try {
      val out = fs.create(to, true)
      try IOUtils.copyBytes(in, out, 64 * 1024, false) finally out.close()
    } finally in.close()
  }

  private def getEntry(tablePath: String, fileName: String): Option[Entry] = {
    val key = Map(TablePath -> text(tablePath), FileName -> text(fileName)).asJava
    val item = client.getItem(GetItemRequest.builder().tableName(settings.table).key(key).consistentRead(true).build()).item()
    if (item == null || item.isEmpty) None else Some(Entry(item))
  }

  private def latestEntry(tablePath: String): Option[Entry] = {
    val request = QueryRequest.builder()
      .tableName(settings.table)
      .keyConditionExpression(s"$TablePath = :t")
      .expressionAttributeValues(Map(":t" -> text(tablePath)).asJava)
      .scanIndexForward(false)
      .limit(1)
      .consistentRead(true)
      .build()
    client.query(request).items().asScala.headOption.map(item => Entry(item))
  }

  private def putRequest(entry: Entry): PutItemRequest =
    PutItemRequest.builder().tableName(settings.table).item(entry.item.asJava).build()
}

object DynamoDBLogStore {
  val Prefix = "spark.ketch.logStore.ddb."
  private val TablePath = "tablePath"
  private val FileName = "fileName"
  private val CommitFile = """^(\d{20})\.json$""".r
  private val clients = new ConcurrentHashMap[Settings, DynamoDbClient]()

  private[ketch] case class Settings(
      table: String,
      region: String,
      endpoint: Option[String],
      createTable: Boolean,
      ttlSeconds: Long,
      accessKey: Option[String],
      secretKey: Option[String])

  private object Settings {
    def apply(conf: Configuration): Settings = {
      def get(name: String): Option[String] =
        Option(conf.get(Prefix + name)).orElse(Option(conf.get(Prefix.stripPrefix("spark.") + name)))
          .map(_.trim).filter(_.nonEmpty)
      Settings(
        table = get("tableName").getOrElse("ketch_delta_log"),
        region = get("region").getOrElse("us-east-1"),
        endpoint = get("endpoint"),
        createTable = get("createTable").forall(_.toBoolean),
        ttlSeconds = get("ttlSeconds").map(_.toLong).getOrElse(86400L),
        accessKey = Option(conf.get("fs.s3a.access.key")).filter(_.nonEmpty),
        secretKey = Option(conf.get("fs.s3a.secret.key")).filter(_.nonEmpty))
    }
  }

  private[ketch] case class Entry(
      tablePath: String, fileName: String, tempPath: String, complete: Boolean, expireTime: Option[Long]) {
    def item: Map[String, AttributeValue] = Map(
      TablePath -> text(tablePath),
      FileName -> text(fileName),
      "tempPath" -> text(tempPath),
      "complete" -> text(complete.toString)) ++
      expireTime.map(t => "expireTime" -> AttributeValue.builder().n(t.toString).build())
  }

  private object Entry {
    def apply(item: java.util.Map[String, AttributeValue]): Entry = Entry(
      item.get(TablePath).s(),
      item.get(FileName).s(),
      item.get("tempPath").s(),
      item.get("complete").s().toBoolean,
      Option(item.get("expireTime")).map(_.n().toLong))
  }

  private def text(value: String): AttributeValue = AttributeValue.builder().s(value).build()

  /** The version of a commit file name (00000000000000000012.json), -1 for any other file. */
  def commitVersion(name: String): Long = name match {
    case CommitFile(digits) => digits.toLong
    case _ => -1L
  }

  private def commitFileName(version: Long): String = f"$version%020d.json"

  private def tablePathOf(logDir: Path): String = logDir.getParent.toString

  /** One client per distinct setting, shared by every table's log store; the lock table is made once. */
  private def client(settings: Settings): DynamoDbClient =
    clients.computeIfAbsent(settings, s => {
      val credentials: AwsCredentialsProvider = (s.accessKey, s.secretKey) match {
        case (Some(key), Some(secret)) => StaticCredentialsProvider.create(AwsBasicCredentials.create(key, secret))
        case _ => DefaultCredentialsProvider.builder().build()
      }
      val builder = DynamoDbClient.builder()
        .region(Region.of(s.region))
        .credentialsProvider(credentials)
        .httpClientBuilder(ApacheHttpClient.builder())
      s.endpoint.foreach(endpoint => builder.endpointOverride(URI.create(endpoint)))
      val made = builder.build()
      if (s.createTable) ensureTable(made, s.table)
      made
    })

  private def ensureTable(client: DynamoDbClient, table: String): Unit = {
    try {
      client.describeTable(DescribeTableRequest.builder().tableName(table).build())
    } catch {
      case _: ResourceNotFoundException =>
        val key = Seq(TablePath -> KeyType.HASH, FileName -> KeyType.RANGE)
        try {
          client.createTable(CreateTableRequest.builder()
            .tableName(table)
            .attributeDefinitions(key.map { case (name, _) =>
              AttributeDefinition.builder().attributeName(name).attributeType(ScalarAttributeType.S).build()
            }.asJava)
            .keySchema(key.map { case (name, kind) => KeySchemaElement.builder().attributeName(name).keyType(kind).build() }.asJava)
            .billingMode(BillingMode.PAY_PER_REQUEST)
            .build())
        } catch {
          case _: ResourceInUseException => // made meanwhile by another driver
        }
        client.waiter().waitUntilTableExists(DescribeTableRequest.builder().tableName(table).build())
    }
  }
}
