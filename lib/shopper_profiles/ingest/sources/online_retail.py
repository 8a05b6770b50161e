"""UCI Online Retail: purchase lines -> purchase events, cancellations (``C...``) -> returns,
stock codes and descriptions -> items, customers and countries -> users.

The file's dirt is left for validation to name: empty CustomerID, non-product codes
(POST, BANK CHARGES, ...), negative quantities outside cancellations, zero prices, duplicates.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from shopper_profiles.ingest.simulator import RawBatch
from shopper_profiles.ingest.validation import read_whole_input

SOURCE = "online_retail"
COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country")


def read_lines(spark: SparkSession, path: str) -> DataFrame:
    """Every line as strings, exactly as in the file (no type inference, nothing dropped)."""
    frame = spark.read.option("header", True).option("inferSchema", False).option("mode", "PERMISSIVE").csv(path)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not the UCI Online Retail layout, missing columns {missing}")
    return frame.select(*COLUMNS)


def to_events(lines: DataFrame) -> DataFrame:
    raw_row = F.to_json(F.struct(*COLUMNS))
    # Identical lines get distinct, stable ids (content hash + occurrence number), so a rerun
    # reproduces them and validation can still see them as exact duplicates.
    occurrence = F.row_number().over(Window.partitionBy(raw_row).orderBy(F.lit(1)))
    cancelled = F.upper(F.trim(F.col("InvoiceNo"))).startswith("C")
    quantity = F.trim(F.col("Quantity"))
    return lines.select(
        F.concat(F.substring(F.sha2(raw_row, 256), 1, 24), F.lit("-"), occurrence.cast("string")).alias("event_id"),
        F.col("CustomerID").alias("user_id"),
        F.col("InvoiceDate").alias("ts"),
        F.when(cancelled, F.lit("return")).otherwise(F.lit("purchase")).alias("event_type"),
        F.col("StockCode").alias("item_id"),
        F.lit(None).cast("string").alias("category"),
        F.col("UnitPrice").alias("price"),
        # A cancellation's negative quantity is the returned amount.
        F.when(cancelled & quantity.startswith("-"), F.substring(quantity, 2, 20)).otherwise(quantity).alias("quantity"),
        F.lit(None).cast("string").alias("query"),
        F.col("InvoiceNo").alias("session_id"),
        F.lit(None).cast("string").alias("device"),
        raw_row.alias("raw_row"),
    )


def to_items(lines: DataFrame) -> DataFrame:
    """One row per stock code: the most frequent description and the modal unit price."""
    code = F.trim(F.col("StockCode"))
    by_title = (lines.where(F.col("Description").isNotNull()).groupBy(code.alias("item_id"), "Description").count()
                .withColumn("_r", F.row_number().over(Window.partitionBy("item_id").orderBy(F.desc("count"), "Description")))
                .where("_r = 1").select("item_id", F.col("Description").alias("title")))
    by_price = (lines.where(F.col("UnitPrice").isNotNull() & ~F.col("InvoiceNo").startswith("C"))
                .groupBy(code.alias("item_id"), "UnitPrice").count()
                .withColumn("_r", F.row_number().over(Window.partitionBy("item_id").orderBy(F.desc("count"), "UnitPrice")))
                .where("_r = 1").select("item_id", F.col("UnitPrice").alias("price")))
    stats = lines.groupBy(code.alias("item_id")).agg(
        F.count("*").alias("lines"), F.sort_array(F.collect_set("Description")).alias("descriptions"))
    items = stats.join(by_title, "item_id", "left").join(by_price, "item_id", "left")
    return items.select(
        "item_id", "title", F.lit(None).cast("string").alias("category_path"), F.lit(None).cast("string").alias("brand"),
        "price", F.lit(None).cast("string").alias("attributes"),
        F.to_json(F.struct("item_id", "lines", "descriptions", "price")).alias("raw_row"),
    )


def to_users(lines: DataFrame) -> DataFrame:
    """Customers with their country (a customer seen in two countries lands twice; validation keeps one)."""
    customers = lines.where(F.col("CustomerID").isNotNull()).select("CustomerID", "Country").distinct()
    return customers.select(
        F.col("CustomerID").alias("user_id"), *[F.lit(None).cast("string").alias(c) for c in ("age_band", "gender", "city")],
        F.col("Country").alias("country"), F.lit(None).cast("string").alias("signup_date"),
        F.lit(None).cast("string").alias("device"),
        F.to_json(F.struct("CustomerID", "Country")).alias("raw_row"),
    )


def land(spark: SparkSession, path: str) -> RawBatch:
    lines = read_whole_input(lambda: read_lines(spark, path), path)
    return RawBatch(source=SOURCE, events=to_events(lines), users=to_users(lines), items=to_items(lines))
