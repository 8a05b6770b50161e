"""Basic family: demographics, location, tenure, primary device.

Imputation rules (each flagged in ``<column>_imputed``): a missing category becomes
``"unknown"``; a missing signup date becomes the user's first event date; the primary device
is the most used device over the last 90 days, else the registered device, else ``"unknown"``.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from shopper_profiles.features import population, within_days


def basic_features(users: DataFrame, events_cut: DataFrame, as_of: date) -> DataFrame:
    people = population(events_cut, as_of)
    first_seen = events_cut.groupBy("user_id").agg(F.to_date(F.min("ts")).alias("first_seen"))
    recent = events_cut.where(within_days(as_of, 90) & (F.col("device") != "unknown"))
    by_device = recent.groupBy("user_id", "device").count()
    top_device = by_device.withColumn(
        "_r", F.row_number().over(Window.partitionBy("user_id").orderBy(F.desc("count"), "device"))
    ).where("_r = 1").select("user_id", F.col("device").alias("used_device"))
    registered = users.select(
        "user_id", "age_band", "gender", "country", "city", "signup_date",
        F.when(F.col("device") != "unknown", F.col("device")).alias("registered_device"),
    )
    joined = people.join(registered, "user_id", "left").join(first_seen, "user_id", "left").join(
        top_device, "user_id", "left")
    columns = [F.col("user_id"), F.col("snapshot_date")]
    for column in ("age_band", "gender", "country", "city"):
        columns += [F.coalesce(F.col(column), F.lit("unknown")).alias(column), F.col(column).isNull().alias(f"{column}_imputed")]
    device = F.coalesce(F.col("used_device"), F.col("registered_device"), F.lit("unknown"))
    columns += [device.alias("primary_device"), F.col("used_device").isNull().alias("primary_device_imputed")]
    # A signup after the snapshot cannot be known at D: treat it as missing (point-in-time).
    known_signup = F.when(F.col("signup_date") < F.lit(as_of), F.col("signup_date"))
    signup = F.coalesce(known_signup, F.col("first_seen"))
    columns += [signup.alias("signup_date"), known_signup.isNull().alias("signup_date_imputed"),
                F.datediff(F.lit(as_of), signup).alias("tenure_days")]
    return joined.select(*columns)
