"""Audiences: named segments defined declaratively (``conf/audiences.yaml``) over the profile
table and the RFM columns of the need family, validated before any Spark work, materialised as
members per snapshot with their sizes recorded per run.

A definition is the AND of its conditions; a condition names a field, an operator and a value:

    - name: churn_risk_high_spenders
      description: likely to lapse, and worth keeping
      all:
        - {field: churn_risk, op: ">=", value: 0.6}
        - {field: m_score, op: ">=", value: 4}
        - {field: interest.beauty, op: ">=", value: 0.5}     # interest score of one category
        - {field: top_interests, op: contains, value: toys}  # among the profile's top categories
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, date, datetime
from functools import reduce
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopper_profiles.config import Config, ConfigError, conf_dir
from shopper_profiles.storage import DeltaStore, TableSpec

NUMERIC_FIELDS = ("purchase_intent", "churn_risk", "expected_price_ratio", "r_score", "f_score", "m_score", "monetary_90d",
                  "frequency_90d", "recency_days")
TEXT_FIELDS = ("price_sensitivity_band", "predicted_age_band", "predicted_gender", "rfm_segment")
NEED_COLUMNS = ("r_score", "f_score", "m_score", "monetary_90d", "frequency_90d", "recency_days", "rfm_segment")
INTEREST = "interest."
Operator = Literal[">=", ">", "<=", "<", "==", "!=", "in", "contains"]

AUDIENCE_MEMBERS = TableSpec(
    "audience_members",
    T.StructType([T.StructField("as_of", T.DateType(), False), T.StructField("audience", T.StringType(), False),
                  T.StructField("user_id", T.StringType(), False)]),
    partition_by=("as_of",), keys=("as_of", "audience", "user_id"),
    description="Pseudonymous members of every audience per profile snapshot (rebuilt per as_of).",
)
AUDIENCE_SIZES = TableSpec(
    "audience_sizes",
    T.StructType([T.StructField("run_id", T.StringType(), False), T.StructField("as_of", T.DateType(), False),
                  T.StructField("audience", T.StringType(), False), T.StructField("users", T.LongType(), False),
                  T.StructField("share", T.DoubleType(), True), T.StructField("definition", T.StringType(), False),
                  T.StructField("profiles_version", T.LongType(), True), T.StructField("run_at", T.TimestampType(), False)]),
    keys=("run_id", "audience"),
    description="Size of every audience at every run (appended: the history of segment sizes).",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Strict):
    field: str
    op: Operator
    value: float | str | list[str]

    @field_validator("field")
    @classmethod
    def known_field(cls, name: str, info: ValidationInfo) -> str:
        categories = (info.context or {}).get("categories", ())
        if name.startswith(INTEREST):
            category = name[len(INTEREST):]
            if categories and category not in categories:
                raise ValueError(f"unknown category {category!r} in {name!r}; known: {', '.join(categories)}")
            return name
        if name not in (*NUMERIC_FIELDS, *TEXT_FIELDS, "top_interests"):
            raise ValueError(f"unknown field {name!r}; use one of {', '.join((*NUMERIC_FIELDS, *TEXT_FIELDS))}, "
                             "top_interests or interest.<category>")
        return name

    @model_validator(mode="after")
    def operator_fits_field(self, info: ValidationInfo) -> Condition:
        numeric = self.field in NUMERIC_FIELDS or self.field.startswith(INTEREST)
        if self.field == "top_interests":
            categories = (info.context or {}).get("categories", ())
            if self.op != "contains" or not isinstance(self.value, str):
                raise ValueError("top_interests takes op 'contains' and one category name")
            if categories and self.value not in categories:
                raise ValueError(f"unknown category {self.value!r}; known: {', '.join(categories)}")
        elif self.op == "contains":
            raise ValueError(f"op 'contains' is for top_interests, not {self.field!r}")
        elif self.op == "in":
            if numeric or not isinstance(self.value, list):
                raise ValueError(f"op 'in' takes a list of values of a text field, got {self.field!r} {self.value!r}")
        elif numeric and not isinstance(self.value, int | float):
            raise ValueError(f"{self.field!r} is numeric: {self.op} needs a number, got {self.value!r}")
        elif not numeric and (self.op not in ("==", "!=") or not isinstance(self.value, str)):
            raise ValueError(f"{self.field!r} is text: use ==, != or in with text values")
        return self

    def column(self) -> Column:
        if self.field == "top_interests":
            return F.exists("top_interests", lambda s: s["category"] == F.lit(self.value))
        left = F.col("interest_scores")[self.field[len(INTEREST):]] if self.field.startswith(INTEREST) else F.col(self.field)
        value: Any = self.value
        if self.op == "in":
            test = left.isin(*value)
        else:
            test = {">=": left >= value, ">": left > value, "<=": left <= value, "<": left < value,
                    "==": left == value, "!=": left != value}[self.op]
        return F.coalesce(test, F.lit(False))  # a missing value (no purchase yet) never matches


class Audience(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    description: str = ""
    all: list[Condition] = Field(min_length=1)

    def column(self) -> Column:
        return reduce(lambda a, b: a & b, (c.column() for c in self.all))


class AudienceFile(_Strict):
    audiences: list[Audience] = Field(min_length=1)

    @field_validator("audiences")
    @classmethod
    def unique_names(cls, audiences: list[Audience]) -> list[Audience]:
        names = [a.name for a in audiences]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"audience names must be unique; repeated: {', '.join(twice)}")
        return audiences


def audiences_path(configured: str) -> Path:
    """A relative ``profiles.audiences_file`` is looked up next to the config (SHOPPER_CONF_DIR)."""
    path = Path(configured)
    if path.is_absolute():
        return path
    beside = conf_dir() / path.name
    return beside if beside.exists() else conf_dir().parent / path


def load_audiences(path: Path, categories: tuple[str, ...] | list[str] = ()) -> list[Audience]:
    """Parse and validate the definitions; any problem fails naming the audience, condition and field."""
    if not path.exists():
        raise ConfigError(f"audience definitions {path} not found; set profiles.audiences_file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return AudienceFile.model_validate(raw, context={"categories": tuple(categories)}).audiences
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from error
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            where = ".".join(str(p) for p in problem["loc"])
            where = re.sub(r"audiences\.(\d+)", lambda m: _audience_label(raw, int(m.group(1))), where)
            lines.append(f"  {where}: {problem['msg']}")
        raise ConfigError(f"invalid audience definitions in {path}:\n" + "\n".join(lines)) from error


def _audience_label(raw: Any, index: int) -> str:
    try:
        return f"audience {raw['audiences'][index]['name']!r}"
    except (KeyError, IndexError, TypeError):
        return f"audience #{index + 1}"


def audience_members(profiles: DataFrame, need: DataFrame, audiences: list[Audience]) -> DataFrame:
    """Pure: one snapshot's profiles (+ its need-family RFM columns) -> (as_of, audience, user_id),
    every audience evaluated in one pass over the profiles."""
    frame = profiles.join(need.select("user_id", *NEED_COLUMNS), "user_id", "left")
    names = F.array(*[F.when(a.column(), F.lit(a.name)) for a in audiences])
    return frame.select("as_of", "user_id", F.explode(F.filter(names, lambda n: n.isNotNull())).alias("audience")).select(
        "as_of", "audience", "user_id")


def build_audiences(spark: SparkSession, store: DeltaStore, config: Config, as_of: date) -> dict[str, Any]:
    """Materialise every defined audience for profile snapshot D (members replace partition D) and
    append this run's sizes."""
    from shopper_profiles.features.build import read_published
    from shopper_profiles.features.schemas import need_spec
    from shopper_profiles.profiles.scoring import PROFILES, profiles_at

    path = audiences_path(config.profiles.audiences_file)
    load_audiences(path)  # field/operator errors before any Spark work; categories need the profiles
    profiles = profiles_at(store, as_of)
    first = profiles.select("interest_scores").limit(1).collect()
    definitions = load_audiences(path, sorted(first[0]["interest_scores"]))
    (need,) = read_published(store, [need_spec()], as_of)
    store.create(AUDIENCE_MEMBERS)
    version = store.overwrite(audience_members(profiles, need, definitions), AUDIENCE_MEMBERS, window={"as_of": as_of})
    counted: dict[str, int] = dict(store.read(AUDIENCE_MEMBERS).where(F.col("as_of") == F.lit(as_of)).groupBy("audience").count().collect())
    total = profiles.count()
    run_id, run_at = uuid.uuid4().hex, datetime.now(UTC).replace(tzinfo=None)
    profiles_version = store.version(PROFILES)
    sizes = [(run_id, as_of, a.name, int(counted.get(a.name, 0)), counted.get(a.name, 0) / total if total else None,
              json.dumps(a.model_dump()), profiles_version, run_at) for a in definitions]
    store.create(AUDIENCE_SIZES)
    store.append(spark.createDataFrame(sizes, AUDIENCE_SIZES.schema), AUDIENCE_SIZES)
    return {"as_of": str(as_of), "run_id": run_id, "profiles": total, "members_version": version,
            "sizes": {a.name: int(counted.get(a.name, 0)) for a in definitions}}
