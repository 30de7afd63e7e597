/*
 * ketch-spark's Spark session extension: a consent filter whose key set is kept (persisted) for an
 * application reuses one broadcast hash relation per key set and filter across queries, instead of
 * collecting, building and broadcasting the same relation for every query.
 *
 * It lives under org.apache.spark.sql to plan the key set with QueryExecution.prepareExecutedPlan
 * (private[sql]), which plans it without adaptive execution while an outer query runs.
 *
 * It uses Spark internals, so it is built per Spark version (BuildInfo, written at build time, names
 * the one it was compiled against): under another Spark it registers nothing, and a linkage error
 * while planning turns it off for the application; either way it logs one warning and Spark plans
 * the join the usual way (same rows, a broadcast per query).
 */
package org.apache.spark.sql.ketch

import java.util.{LinkedHashMap => JLinkedHashMap}

import scala.jdk.CollectionConverters._
import scala.util.control.NonFatal

import org.apache.spark.SPARK_VERSION
import org.apache.spark.broadcast.Broadcast
import org.apache.spark.rdd.RDD
import org.apache.spark.sql.SparkSessionExtensions
import org.apache.spark.sql.catalyst.InternalRow
import org.apache.spark.sql.catalyst.expressions.{Attribute, BindReferences, SubqueryExpression}
import org.apache.spark.sql.catalyst.optimizer.BuildRight
import org.apache.spark.sql.catalyst.planning.ExtractEquiJoinKeys
import org.apache.spark.sql.catalyst.plans.{LeftAnti, LeftSemi}
import org.apache.spark.sql.catalyst.plans.logical.{BROADCAST, LogicalPlan}
import org.apache.spark.sql.catalyst.plans.physical.{BroadcastMode, BroadcastPartitioning, Partitioning}
import org.apache.spark.sql.classic
import org.apache.spark.sql.execution.{LeafExecNode, QueryExecution, SparkPlan, SparkStrategy}
import org.apache.spark.sql.execution.columnar.InMemoryRelation
import org.apache.spark.sql.execution.joins.{BroadcastHashJoinExec, HashJoin, HashedRelationBroadcastMode}
import org.slf4j.LoggerFactory

/** Registered through `spark.sql.extensions`. */
class KetchSparkExtensions extends (SparkSessionExtensions => Unit) {
  override def apply(extensions: SparkSessionExtensions): Unit =
    if (SPARK_VERSION == BuildInfo.SparkVersion) {
      extensions.injectPlannerStrategy(session => KeptKeySetJoins(session.asInstanceOf[classic.SparkSession]))
    } else {
      KeptKeySets.turnOff(s"it was built for Spark ${BuildInfo.SparkVersion}, this is Spark $SPARK_VERSION")
    }
}

/**
 * Broadcast relations of kept key sets, least recently used first.
 *
 * A kept key set is an in-memory relation cached under a name starting with [[NamePrefix]] (the Python
 * side caches one per consent/state version and purpose). Its rows never change while it is cached, so
 * the hash relation built from it (after the filters Spark pushed onto it, e.g. one org) can serve every
 * later query with the same build side.
 */
object KeptKeySets {
  val NamePrefix = "ketch_kept_key_set_"
  /** Session setting that turns the kept relations off ("false"); on by default. */
  val EnabledConf = "spark.ketch.keptRelations.enabled"

  /** Keyed by the build side and the join keys' mode: the same key set probed by (user, org) is another relation. */
  private val relations = new JLinkedHashMap[(LogicalPlan, BroadcastMode), Broadcast[Any]](16, 0.75f, true)
  private var capacity = 4
  @volatile private var offBecause: Option[String] = None

  /** Whether the extension plans kept relations in this JVM (false once turned off). */
  def active: Boolean = offBecause.isEmpty

  /** Turns the extension off for this JVM, with one warning saying why. */
  def turnOff(why: String): Unit = synchronized {
    if (offBecause.isEmpty) {
      offBecause = Some(why)
      LoggerFactory.getLogger(getClass).warn(
        s"ketch-spark's session extension is off: $why. Consent filters give the same rows, with a broadcast " +
          "per query; rebuild it with `python -m ketch_spark.jars install` for this Spark, or leave it out.")
    }
  }

  def enabled(session: classic.SparkSession): Boolean =
    session.conf.get(EnabledConf, "true").trim.equalsIgnoreCase("true")

  /**
   * Whether `plan` reads only kept key sets, deterministically and without subqueries (whose tables
   * could change), so its rows are fixed while the key sets stay cached.
   */
  def isKeptKeySet(plan: LogicalPlan): Boolean = {
    val leaves = plan.collectLeaves()
    leaves.nonEmpty && leaves.forall(keySetName(_).isDefined) && plan.deterministic &&
      !plan.exists(_.expressions.exists(SubqueryExpression.hasSubquery))
  }

  private def keySetName(plan: LogicalPlan): Option[String] = plan match {
    case r: InMemoryRelation => r.cacheBuilder.tableName.filter(_.startsWith(NamePrefix))
    case _ => None
  }

  def keySetNames(plan: LogicalPlan): Seq[String] = plan.collectLeaves().flatMap(keySetName).distinct

  /** The broadcast relation of `keySet` under `mode`, built on first use. */
  def relation(session: classic.SparkSession, mode: BroadcastMode, keySet: LogicalPlan): Broadcast[Any] =
    synchronized {
      val key = (keySet.canonicalized, mode.canonicalized)
      Option(relations.get(key)).getOrElse {
        val physical = QueryExecution.prepareExecutedPlan(session, keySet)
        val (rows, iterator) = physical.executeCollectIterator()
        val built = session.sparkContext.broadcast[Any](mode.transform(iterator, Some(rows)))
        relations.put(key, built)
        evictBeyond(capacity)
        built
      }
    }

  /** Keeps at most `entries` relations (0 keeps none); returns how many were dropped. */
  def setCapacity(entries: Int): Int = synchronized {
    require(entries >= 0, s"capacity must be >= 0, got $entries")
    capacity = entries
    evictBeyond(entries)
  }

  /**
   * Drops the relations built from the key set cached as `name`; returns how many. Unless `destroy`, a
   * query still running on one keeps it: the relation is only forgotten, and Spark's context cleaner
   * frees it once unused; `destroy` frees it at once, so no query may be using it.
   */
  def release(name: String, destroy: Boolean): Int = synchronized {
    drop(relations.keySet.asScala.filter(key => keySetNames(key._1).contains(name)).toList, destroy)
  }

  /** Number of relations kept. */
  def size: Int = synchronized(relations.size)

  private def evictBeyond(entries: Int): Int =
    drop(relations.keySet.asScala.take(math.max(relations.size - entries, 0)).toList, destroy = false)

  private def drop(keys: List[(LogicalPlan, BroadcastMode)], destroy: Boolean): Int = {
    keys.foreach { key =>
      val relation = relations.remove(key)
      try {
        if (destroy) relation.destroy() else relation.unpersist(false)
      } catch {
        case NonFatal(_) => // its SparkContext has stopped, and the blocks went with it
      }
    }
    keys.size
  }
}

/** Plans a broadcast-hinted semi or anti join whose build side is a kept key set on a kept relation. */
case class KeptKeySetJoins(session: classic.SparkSession) extends SparkStrategy {
  override def apply(plan: LogicalPlan): Seq[SparkPlan] =
    if (!KeptKeySets.active) Nil
    else
      try planKept(plan)
      catch {
        case e: LinkageError =>
          KeptKeySets.turnOff(s"it does not link against this Spark ($e)")
          Nil
      }

  private def planKept(plan: LogicalPlan): Seq[SparkPlan] = plan match {
    case ExtractEquiJoinKeys(joinType @ (LeftSemi | LeftAnti), leftKeys, rightKeys, otherCondition, _, left, right, hint)
        if hint.rightHint.exists(_.strategy.contains(BROADCAST)) && KeptKeySets.isKeptKeySet(right) &&
          KeptKeySets.enabled(session) =>
      val mode = HashedRelationBroadcastMode(BindReferences.bindReferences(HashJoin.rewriteKeyExpr(rightKeys), right.output))
      val build = KeptBroadcastExec(mode, right.output, right)(session)
      Seq(BroadcastHashJoinExec(leftKeys, rightKeys, joinType, BuildRight, otherCondition, planLater(left), build))
    case _ => Nil
  }
}

/** Build side of a broadcast hash join served by [[KeptKeySets]]. */
case class KeptBroadcastExec(mode: BroadcastMode, output: Seq[Attribute], keySet: LogicalPlan)(
    @transient private val sparkSession: classic.SparkSession)
    extends LeafExecNode {

  override protected def otherCopyArgs: Seq[AnyRef] = sparkSession :: Nil

  override def outputPartitioning: Partitioning = BroadcastPartitioning(mode)

  override protected def doExecute(): RDD[InternalRow] =
    QueryExecution.prepareExecutedPlan(sparkSession, keySet).execute()

  override protected[sql] def doExecuteBroadcast[T](): Broadcast[T] =
    KeptKeySets.relation(sparkSession, mode, keySet).asInstanceOf[Broadcast[T]]

  override def simpleString(maxFields: Int): String =
    s"KeptBroadcast ${KeptKeySets.keySetNames(keySet).mkString(", ")} ${output.mkString("[", ", ", "]")}"
}
