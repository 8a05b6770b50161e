"""Amazon Beauty (S3-Rec release): ``user item item ...`` lines -> review events in order,
plus item attributes. The file has no timestamps: order is kept as a synthetic clock
(one minute per position from 2014-01-01), which preserves everything the file holds."""

from __future__ import annotations

import json

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopper_profiles.ingest.simulator import RawBatch
from shopper_profiles.ingest.validation import read_whole_input

SOURCE = "amazon_beauty"
EPOCH = "2014-01-01 00:00:00"


def read_sequences(spark: SparkSession, path: str) -> DataFrame:
    lines = spark.read.text(path).where(F.trim("value") != "")
    tokens = F.split(F.trim(F.col("value")), r"\s+")
    return lines.select(tokens[0].alias("user"), F.slice(tokens, 2, 100_000).alias("items"), F.col("value").alias("line"))


def to_events(sequences: DataFrame) -> DataFrame:
    exploded = sequences.select("user", "line", F.posexplode("items").alias("pos", "item"))
    ts = F.to_timestamp(F.lit(EPOCH)) + F.make_interval(mins=F.col("pos"))
    return exploded.select(
        F.concat(F.lit("ab-"), F.col("user"), F.lit("-"), F.col("pos").cast("string")).alias("event_id"),
        F.col("user").alias("user_id"),
        F.date_format(ts, "yyyy-MM-dd HH:mm:ss").alias("ts"),
        F.lit("review").alias("event_type"),
        F.col("item").alias("item_id"),
        *[F.lit(None).cast("string").alias(c) for c in ("category", "price", "quantity", "query")],
        F.concat(F.lit("ab-"), F.col("user")).alias("session_id"),
        F.lit(None).cast("string").alias("device"),
        F.to_json(F.struct(F.col("user"), F.col("pos").alias("position"), F.col("item"))).alias("raw_row"),
    )


def to_items(spark: SparkSession, sequences: DataFrame, attributes_path: str | None) -> DataFrame:
    seen = sequences.select(F.explode("items").alias("item_id")).distinct()
    if attributes_path:
        with open(attributes_path) as handle:
            attributes = json.load(handle)
        attrs = spark.createDataFrame([(k, json.dumps([f"attr:{a}" for a in v])) for k, v in attributes.items()],
                                      "item_id string, attributes string")
        seen = seen.join(attrs, "item_id", "left")
    else:
        seen = seen.withColumn("attributes", F.lit(None).cast("string"))
    return seen.select(
        "item_id", *[F.lit(None).cast("string").alias(c) for c in ("title", "category_path", "brand", "price")],
        "attributes", F.to_json(F.struct("item_id", "attributes")).alias("raw_row"),
    )


def to_users(sequences: DataFrame) -> DataFrame:
    return sequences.select(
        F.col("user").alias("user_id"),
        *[F.lit(None).cast("string").alias(c) for c in ("age_band", "gender", "city", "country", "signup_date", "device")],
        F.to_json(F.struct("user")).alias("raw_row"),
    )


def land(spark: SparkSession, path: str) -> RawBatch:
    import os

    attributes = path.replace(".txt", "_item2attributes.json")
    sequences = read_whole_input(lambda: read_sequences(spark, path), path)
    return RawBatch(source=SOURCE, events=to_events(sequences), users=to_users(sequences),
                    items=to_items(spark, sequences, attributes if os.path.exists(attributes) else None))
