"""A seeded e-commerce world generated in Spark, with planted truth to measure profiles against.

Every random draw is a hash of (seed, purpose, ids), never ``rand()``: the same seed gives the
same rows whatever the partitioning, and events for a day are the same whether that day is
generated alone or inside a larger window (so incremental loads are reproducible).

Users carry latent interest mixtures over a category tree (tilted by gender and age),
price sensitivity, purchase propensity and an optional churn time; sessions follow a diurnal
rhythm and the view -> cart -> purchase funnel; items have power-law popularity and titles.

Five real-shop phenomena make the order of events matter (a category rule sees none of them):
*complementary follow-ups* (a purchase in a leaf with a complement -- camera -> lens, dress ->
handbag -- is followed within two days by a session on the partner item of the complement leaf),
*replenishment cycles* (consumables are bought again every 14-28 days, per leaf), *interest
drift* (for a share of shoppers the third interest gives way to a new one on a day inside the
period), *friends' influence* (a purchase or share is seen by the shopper's friends and the
accounts following them, who look at the same item within three days and sometimes buy it) and
*search-led sessions* (a session opened by a search stays on the searched product type, converts
more often, and brings the shopper back to its first item within three days). The planted truth
records the per-shopper ones (interests as they stand at the cut-off and before a drift, its day and category);
the complement, cycle, influence and search rules are the constants below and the events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from shopper_profiles.config import SimulatorConfig
from shopper_profiles.ingest.bronze import AGE_BANDS, RAW_COLUMNS

SOURCE = "simulator"

CATEGORY_TREE: dict[str, dict[str, tuple[str, ...]]] = {
    "beauty": {"skincare": ("serum", "moisturiser", "cleanser"), "makeup": ("lipstick", "mascara", "foundation"),
               "haircare": ("shampoo", "conditioner", "hair oil"), "fragrance": ("perfume", "body mist", "cologne")},
    "fashion": {"womens": ("dress", "blouse", "skirt"), "mens": ("shirt", "chinos", "blazer"),
                "shoes": ("sneakers", "boots", "sandals"), "accessories": ("handbag", "scarf", "belt")},
    "electronics": {"phones": ("smartphone", "phone case", "charger"), "computers": ("laptop", "monitor", "keyboard"),
                    "audio": ("headphones", "speaker", "earbuds"), "cameras": ("camera", "lens", "tripod")},
    "home": {"kitchen": ("frying pan", "kettle", "knife set"), "furniture": ("chair", "desk", "bookshelf"),
             "decor": ("vase", "candle", "mirror"), "garden": ("planter", "hose", "pruner")},
    "sports": {"fitness": ("yoga mat", "dumbbell", "kettlebell"), "outdoor": ("tent", "backpack", "sleeping bag"),
               "cycling": ("helmet", "bike light", "bike lock"), "team_sports": ("football", "jersey", "shin pads")},
    "books": {"fiction": ("novel", "thriller", "romance"), "nonfiction": ("biography", "cookbook", "history"),
              "children": ("picture book", "story book", "activity book"), "comics": ("graphic novel", "manga", "comic")},
    "toys": {"games": ("board game", "card game", "party game"), "puzzles": ("jigsaw", "puzzle cube", "brain teaser"),
             "dolls": ("doll", "doll house", "action figure"), "building": ("building bricks", "construction set", "marble run")},
    "grocery": {"snacks": ("crisps", "chocolate", "cookies"), "beverages": ("coffee", "tea", "juice"),
                "pantry": ("pasta", "olive oil", "rice"), "organic": ("granola", "honey", "oat milk")},
}
TOP_CATEGORIES = tuple(CATEGORY_TREE)
LEAVES = tuple((top, sub) for top, subs in CATEGORY_TREE.items() for sub in subs)
# Complementary follow-ups: a purchase in the first leaf leads to the partner item (same index)
# of the second; several cross top categories, where a category rule cannot follow.
COMPLEMENTS: dict[tuple[str, str], tuple[str, str]] = {
    ("electronics", "cameras"): ("electronics", "audio"), ("electronics", "phones"): ("fashion", "accessories"),
    ("electronics", "computers"): ("home", "furniture"), ("fashion", "womens"): ("fashion", "shoes"),
    ("fashion", "mens"): ("fashion", "accessories"), ("home", "kitchen"): ("grocery", "pantry"),
    ("sports", "cycling"): ("sports", "outdoor"), ("sports", "fitness"): ("grocery", "organic"),
    ("books", "fiction"): ("books", "nonfiction"), ("toys", "building"): ("toys", "puzzles"),
    ("beauty", "makeup"): ("beauty", "skincare"), ("home", "decor"): ("home", "garden"),
}
# Replenishment: consumables bought again after a leaf-specific cycle.
CONSUMABLES: tuple[tuple[str, str], ...] = (
    ("beauty", "skincare"), ("beauty", "haircare"), ("grocery", "snacks"), ("grocery", "beverages"),
    ("grocery", "pantry"), ("grocery", "organic"),
)
CONSUMABLE_LEAVES = tuple(LEAVES.index(leaf) for leaf in CONSUMABLES)
FOLLOW_UP_HOURS = (2, 48)  # a complement session comes this long after the purchase
CYCLE_DAYS = (14, 28)  # a consumable's cycle, drawn per leaf
REPEATS = 2  # purchases of a consumable are repeated up to this many cycles later
DRIFT_WEIGHT = 0.45  # the new interest's share after a drift
REACTION_HOURS = (20, 68)  # a friend's or a search's return comes this long after (inside the 3-day lookback)
SEARCH_MATCH_DRAWS = 4  # a search session's view takes the first of this many draws of the searched type
SEARCH_CONVERSION = 1.5  # a search-led session's views are carted this much more often
ADJECTIVES = ("classic", "premium", "eco", "deluxe", "compact", "vintage", "ultra", "soft", "bold", "smart")
BRANDS = {top: tuple(f"{top[:3].title()}{suffix}" for suffix in ("ora", "ly", "mark", "nova", "wise"))
          for top in TOP_CATEGORIES}
COUNTRIES = (("United Kingdom", ("London", "Manchester", "Leeds"), 0.40),
             ("United States", ("New York", "Austin", "Seattle"), 0.20),
             ("Germany", ("Berlin", "Hamburg", "Munich"), 0.15), ("France", ("Paris", "Lyon", "Lille"), 0.15),
             ("Spain", ("Madrid", "Valencia", "Seville"), 0.10))
DEVICE_MIX = (("mobile", 0.5), ("desktop", 0.3), ("app", 0.15), ("tablet", 0.05))
AGE_MIX = (0.14, 0.26, 0.22, 0.17, 0.12, 0.09)
# Demographics tilt interests (so demographics are predictable from behaviour, as in real shops).
GENDER_TILT = {"female": {"beauty": 1.2, "fashion": 0.8, "home": 0.3},
               "male": {"electronics": 1.0, "sports": 0.9, "books": 0.2},
               "other": {"books": 0.6, "toys": 0.4}}
AGE_TILT = {"18-24": {"fashion": 0.6, "electronics": 0.5, "toys": -0.4}, "25-34": {"electronics": 0.3, "toys": 0.4},
            "35-44": {"toys": 0.7, "home": 0.4}, "45-54": {"home": 0.6, "grocery": 0.3},
            "55-64": {"books": 0.6, "home": 0.5, "fashion": -0.4}, "65+": {"books": 0.8, "grocery": 0.6, "electronics": -0.5}}

DIRTY_KINDS = (
    "missing_user_id", "unparsable_timestamp", "future_timestamp", "unknown_event_type", "negative_price",
    "absurd_price", "price_not_numeric", "non_positive_quantity", "absurd_quantity", "quantity_not_integer",
    "non_product_code", "malformed_unicode", "oversized_text", "missing_item_id", "search_without_query",
    "unknown_device",
)
"""Kinds of bad row the simulator plants; each maps to the validation rule of the same name."""


@dataclass
class RawBatch:
    """What a source lands: string-typed frames per entity (canonical names + ``raw_row``)."""

    source: str
    events: DataFrame
    users: DataFrame | None = None
    items: DataFrame | None = None
    social_edges: DataFrame | None = None
    truth: DataFrame | None = None
    injected: DataFrame | None = None  # simulator only: event_id -> planted bad-input kind

    def entities(self) -> dict[str, DataFrame]:
        frames = {"events": self.events, "users": self.users, "items": self.items, "social_edges": self.social_edges}
        return {name: frame for name, frame in frames.items() if frame is not None}


def _leaf_of(item: str) -> int | None:
    """The leaf index inside a simulator item id (``item_id``'s "I%02d%05d"), or None for other ids."""
    if len(item) != 8 or not item.startswith("I") or not item[1:].isdigit() or int(item[1:3]) >= len(LEAVES):
        return None
    return int(item[1:3])


def complement_of(item: str) -> str | None:
    """The partner item a purchase of ``item`` leads to (planted truth for evaluation), or None."""
    leaf = _leaf_of(item)
    to = None if leaf is None else COMPLEMENTS.get(LEAVES[leaf])
    return None if to is None else f"I{LEAVES.index(to):02d}{item[3:]}"


def is_consumable(item: str) -> bool:
    """Whether ``item`` is bought again every cycle (planted truth for evaluation)."""
    return _leaf_of(item) in CONSUMABLE_LEAVES


def uniform(seed: int, purpose: str, *cols: Column) -> Column:
    """Deterministic U[0,1) from a hash of the seed, a purpose string and the given columns."""
    return F.pmod(F.xxhash64(F.lit(seed), F.lit(purpose), *cols), F.lit(1 << 52)).cast("double") / float(1 << 52)


def _pick(u: Column, options: Sequence[str], weights: Sequence[float]) -> Column:
    """Categorical draw by inverse CDF."""
    expr = F.lit(options[-1])
    cumulative = 0.0
    cuts = []
    for option, weight in zip(options, weights, strict=True):
        cumulative += weight
        cuts.append((cumulative, option))
    for cut, option in reversed(cuts[:-1]):
        expr = F.when(u < cut, F.lit(option)).otherwise(expr)
    return expr


def leaf_name(leaf: Column) -> Column:
    return F.element_at(F.array(*[F.lit(f"{t} > {s}") for t, s in LEAVES]), leaf + 1)


def item_id(leaf: Column, idx: Column) -> Column:
    return F.format_string("I%02d%05d", leaf, idx)


def leaf_base_price(seed: int, leaf: Column) -> Column:
    """The typical price of a leaf category (8..320)."""
    return F.exp(F.lit(2.08) + uniform(seed, "leaf_base", leaf) * F.lit(3.69))


def item_price(seed: int, leaf: Column, idx: Column) -> Column:
    """List price: the leaf's base times a log-normal-ish item factor, in 2 decimals."""
    base = leaf_base_price(seed, leaf)
    noise = uniform(seed, "p1", leaf, idx) + uniform(seed, "p2", leaf, idx) + uniform(seed, "p3", leaf, idx) - 1.5
    return F.round(base * F.exp(noise * 0.9), 2)


def item_noun(seed: int, leaf: Column, idx: Column) -> Column:
    """Which of its leaf's three product types (0-2) an item is: its title's noun, what a search names."""
    return (uniform(seed, "noun", leaf, idx) * 3).cast("int")


def noun_name(leaf: Column, noun: Column) -> Column:
    nouns = F.array(*[F.array(*[F.lit(w) for w in CATEGORY_TREE[t][s]]) for t, s in LEAVES])
    return F.element_at(F.element_at(nouns, leaf + 1), noun + 1)


def simulate_items(spark: SparkSession, cfg: SimulatorConfig) -> DataFrame:
    n = cfg.items_per_leaf
    seed = cfg.seed
    frame = spark.range(len(LEAVES) * n).select(
        (F.col("id") / n).cast("int").alias("leaf"), (F.col("id") % n).cast("int").alias("idx")
    )
    adjective = F.element_at(F.array(*[F.lit(a) for a in ADJECTIVES]),
                             (uniform(seed, "adj", F.col("leaf"), F.col("idx")) * len(ADJECTIVES)).cast("int") + 1)
    noun = noun_name(F.col("leaf"), item_noun(seed, F.col("leaf"), F.col("idx")))
    top_index = (F.col("leaf") / 4).cast("int")
    brand = F.element_at(
        F.element_at(F.array(*[F.array(*[F.lit(b) for b in BRANDS[t]]) for t in TOP_CATEGORIES]), top_index + 1),
        (uniform(seed, "brand", F.col("leaf"), F.col("idx")) * 5).cast("int") + 1,
    )
    size = F.element_at(F.array(*[F.lit(x) for x in ("", " 50ml", " XL", " 2-pack", " mini", " set of 3")]),
                        (uniform(seed, "size", F.col("leaf"), F.col("idx")) * 6).cast("int") + 1)
    return frame.select(
        item_id(F.col("leaf"), F.col("idx")).alias("item_id"),
        F.concat(brand, F.lit(" "), F.initcap(adjective), F.lit(" "), noun, size).alias("title"),
        leaf_name(F.col("leaf")).alias("category_path"),
        brand.alias("brand"),
        F.format_string("%.2f", item_price(seed, F.col("leaf"), F.col("idx"))).alias("price"),
        F.to_json(F.array(F.concat(F.lit("brand:"), brand),
                          F.concat(F.lit("leaf:"), F.col("leaf").cast("string")))).alias("attributes"),
    )


@lru_cache(maxsize=4)
def _users_latent(spark: SparkSession, cfg: SimulatorConfig) -> DataFrame:
    """Every user's hidden traits (the planted truth) and observed attributes. One plan per session
    and config: users, events, edges and truth all read it, and building its few thousand column
    expressions over py4j costs about a second each time (a plan is immutable, so sharing it is safe)."""
    seed = cfg.seed
    uid = F.col("id")
    users = spark.range(cfg.users).select(
        uid.alias("uid"),
        F.format_string("sim-%07d", uid).alias("raw_user_id"),
        _pick(uniform(seed, "gender", uid), ("female", "male", "other"), (0.48, 0.48, 0.04)).alias("gender"),
        _pick(uniform(seed, "age", uid), AGE_BANDS, AGE_MIX).alias("age_band"),
    )
    scores = []
    for c, top in enumerate(TOP_CATEGORIES):
        tilt = F.lit(0.0)
        for gender, tilts in GENDER_TILT.items():
            tilt = tilt + F.when(F.col("gender") == gender, F.lit(tilts.get(top, 0.0))).otherwise(0.0)
        for band, tilts in AGE_TILT.items():
            tilt = tilt + F.when(F.col("age_band") == band, F.lit(tilts.get(top, 0.0))).otherwise(0.0)
        gumbel = -F.log(-F.log(uniform(seed, f"interest{c}", F.col("uid")) * 0.998 + 0.001))
        scores.append(F.struct((tilt + gumbel).alias("score"), F.lit(c).alias("cat")))
    ranked = F.sort_array(F.array(*scores), asc=False)
    users = users.withColumn("top3", F.slice(ranked, 1, 3)).withColumn("drift_cat", ranked[3]["cat"])
    exp_scores = [F.exp(F.col("top3")[i]["score"] - F.col("top3")[0]["score"]) for i in range(3)]
    total = exp_scores[0] + exp_scores[1] + exp_scores[2]
    young = F.col("age_band").isin("18-24", "25-34").cast("double")
    churn_u = uniform(seed, "churn", F.col("uid"))
    churn_day = F.lit(15) + (uniform(seed, "churn_day", F.col("uid")) * (cfg.days + cfg.truth_horizon_days - 15)).cast("int")
    start = F.lit(cfg.start_date).cast("timestamp")
    country_names = [c[0] for c in COUNTRIES]
    users = users.select(
        "*",
        F.array(*[F.col("top3")[i]["cat"] for i in range(3)]).alias("interest_cats"),
        F.array(*[e / total for e in exp_scores]).alias("interest_weights"),
        F.least(F.lit(1.0), 0.75 * uniform(seed, "ps", F.col("uid")) + 0.25 * young).alias("price_sensitivity"),
        (0.05 + 0.55 * uniform(seed, "prop", F.col("uid"))).alias("purchase_propensity"),
        (F.lit(cfg.mean_active_day_rate) * F.exp(1.2 * (uniform(seed, "act", F.col("uid")) - 0.5) * 2)).alias("active_rate"),
        F.when(churn_u < cfg.churn_share, start + F.make_interval(days=churn_day)).alias("churn_ts"),
        # Interest drift: from this day on the third interest gives way to the fourth-ranked category.
        F.when(uniform(seed, "drift", F.col("uid")) < cfg.drift_share,
               F.lit(20) + (uniform(seed, "drift_day", F.col("uid")) * max(cfg.days - 20, 1)).cast("int")).alias("drift_day"),
        _pick(uniform(seed, "device", F.col("uid")), [d for d, _ in DEVICE_MIX], [w for _, w in DEVICE_MIX]).alias("device"),
        _pick(uniform(seed, "country", F.col("uid")), country_names, [c[2] for c in COUNTRIES]).alias("country"),
        F.date_sub(F.lit(cfg.start_date), (uniform(seed, "signup", F.col("uid")) * 1000).cast("int")).alias("signup_date"),
    )
    cities = F.create_map(*[x for name, cs, _ in COUNTRIES for x in (F.lit(name), F.array(*[F.lit(c) for c in cs]))])
    return users.withColumn(
        "city", F.element_at(F.element_at(cities, F.col("country")), (uniform(seed, "city", F.col("uid")) * 3).cast("int") + 1)
    )


def _interests_at(drifted: Column) -> Column:
    """A shopper's interest mixture, [struct(w, c)] for their three categories: as drawn, or after a
    drift (the first two keep 1 - DRIFT_WEIGHT of their shares, the new one takes the rest). Events
    and the planted truth both read it, so the truth is the mixture the events were drawn from."""
    w, c = F.col("interest_weights"), F.col("interest_cats")
    return F.when(drifted, F.array(
        F.struct((w[0] * (1 - DRIFT_WEIGHT)).alias("w"), c[0].alias("c")),
        F.struct((w[1] * (1 - DRIFT_WEIGHT)).alias("w"), c[1].alias("c")),
        F.struct((1 - (w[0] + w[1]) * (1 - DRIFT_WEIGHT)).alias("w"), F.col("drift_cat").alias("c")),
    )).otherwise(F.arrays_zip(w.alias("w"), c.alias("c")))


def simulate_users(spark: SparkSession, cfg: SimulatorConfig) -> DataFrame:
    """Observed basic attributes: demographics missing for 15% (missing values are real)."""
    seed = cfg.seed
    latent = _users_latent(spark, cfg)
    missing = uniform(seed, "demo_missing", F.col("uid")) < 0.15
    return latent.select(
        F.col("raw_user_id").alias("user_id"),
        F.when(~missing, F.col("age_band")).alias("age_band"),
        F.when(~missing, F.col("gender")).alias("gender"),
        "city", "country",
        F.col("signup_date").cast("string").alias("signup_date"),
        "device",
    )


def simulate_events(spark: SparkSession, cfg: SimulatorConfig, start: date, end: date) -> DataFrame:
    """Clean typed events for days in [start, end): sessions, funnels, searches, social actions."""
    seed = cfg.seed
    first = (start - cfg.start_date).days
    last = (end - cfg.start_date).days
    users = _users_latent(spark, cfg).select(
        "uid", "raw_user_id", "interest_cats", "interest_weights", "price_sensitivity", "purchase_propensity",
        "active_rate", "churn_ts", "device", "drift_cat", "drift_day",
    )
    # Sessions late on the day before the window can spill past midnight into it: generate
    # from that day and keep events by timestamp, so adjacent windows compose exactly. Earlier
    # days back to the longest replenishment lag are generated too (consumable sessions only):
    # their purchases bring follow-ups into the window.
    lookback = REPEATS * CYCLE_DAYS[1] + 3
    days = spark.range(first - 1 - lookback, last).select(F.col("id").cast("int").alias("day"))
    day_ts = F.lit(cfg.start_date).cast("timestamp") + F.make_interval(days=F.col("day"))
    user_days = users.crossJoin(F.broadcast(days)).withColumn("day_ts", day_ts)
    # Activity fades over the two weeks before churn: the signal churn models must pick up.
    fade = F.when(
        F.col("churn_ts").isNotNull(),
        F.greatest(F.lit(0.25), F.least(F.lit(1.0),
                                        (F.unix_timestamp("churn_ts") - F.unix_timestamp("day_ts")) / (14 * 86400.0))),
    ).otherwise(1.0)
    active = uniform(seed, "active", F.col("uid"), F.col("day")) < F.col("active_rate") * fade
    user_days = user_days.where(active & (F.col("churn_ts").isNull() | (F.col("day_ts") < F.col("churn_ts"))))
    n_sessions = 1 + (uniform(seed, "s2", F.col("uid"), F.col("day")) < 0.3).cast("int") + (
        uniform(seed, "s3", F.col("uid"), F.col("day")) < 0.1).cast("int")
    sessions = user_days.withColumn("session", F.explode(F.sequence(F.lit(0), n_sessions - 1)))
    skey = (F.col("uid"), F.col("day"), F.col("session"))
    hu, hv = uniform(seed, "hour", *skey), uniform(seed, "hour2", *skey)
    hour = (F.when(hu < 0.15, 7 + (hv * 3).cast("int")).when(hu < 0.45, 11 + (hv * 4).cast("int"))
            .when(hu < 0.9, 18 + (hv * 5).cast("int")).otherwise((hv * 24).cast("int")))
    start_s = F.unix_timestamp("day_ts") + hour * 3600 + (uniform(seed, "minute", *skey) * 3540).cast("long")
    cu = uniform(seed, "cat", *skey)
    mix = _interests_at(F.col("drift_day").isNotNull() & (F.col("day") >= F.col("drift_day")))
    cat = F.when(cu < mix[0]["w"], mix[0]["c"]).when(cu < mix[0]["w"] + mix[1]["w"], mix[1]["c"]).otherwise(mix[2]["c"])
    sessions = sessions.select(
        "*",
        start_s.alias("session_start"),
        (cat * 4 + (uniform(seed, "sub", *skey) * 4).cast("int")).alias("leaf"),
        (1 + F.pow(uniform(seed, "nviews", *skey), 1.5) * 8).cast("int").alias("n_views"),
        (uniform(seed, "search", *skey) < 0.35).alias("has_search"),
        (uniform(seed, "qn", *skey) * 3).cast("int").alias("query_noun"),  # the product type a search names
        F.substring(F.sha2(F.concat_ws("|", F.lit(seed), *[c.cast("string") for c in skey]), 256), 1, 16).alias("session_id"),
    )
    # Before the window (the lookback) only consumables matter: their purchases repeat into it.
    sessions = sessions.where((F.col("day") >= first - 3) | F.col("leaf").isin(*CONSUMABLE_LEAVES))
    slots = sessions.withColumn("slot", F.explode(F.sequence(F.lit(0), F.col("n_views") - 1)))
    k = (F.col("uid"), F.col("day"), F.col("session"), F.col("slot"))
    n = cfg.items_per_leaf
    searched = F.col("has_search")

    def popular(draw: int) -> Column:
        return (F.pow(uniform(seed, "ia" if draw == 0 else f"ia{draw}", *k), 2.5) * n).cast("int")

    def fits(idx: Column) -> Column:  # outside a search every item fits; inside, those of the searched type
        return ~searched | (item_noun(seed, F.col("leaf"), idx) == F.col("query_noun"))

    # A search-led session's view is the first popularity draw of the searched type (the last draw if none is).
    idx_a = popular(SEARCH_MATCH_DRAWS - 1)
    for draw in reversed(range(SEARCH_MATCH_DRAWS - 1)):
        idx_a = F.when(fits(popular(draw)), popular(draw)).otherwise(idx_a)
    idx_b = (uniform(seed, "ib", *k) * n).cast("int")
    price_a, price_b = item_price(seed, F.col("leaf"), idx_a), item_price(seed, F.col("leaf"), idx_b)
    # Price-sensitive shoppers pick the cheaper of two candidates (planted price sensitivity).
    cheaper = uniform(seed, "cheap", *k) < F.col("price_sensitivity")
    idx = F.when(cheaper & (price_b < price_a) & fits(idx_b), idx_b).otherwise(idx_a)
    slots = slots.withColumn("idx", idx)
    prop = F.col("purchase_propensity")
    carted = uniform(seed, "cart", *k) < (0.08 + 0.3 * prop) * F.when(searched, SEARCH_CONVERSION).otherwise(1.0)
    # Sensitive shoppers abandon carts of items priced above their category's norm.
    relative_price = item_price(seed, F.col("leaf"), F.col("idx")) / leaf_base_price(seed, F.col("leaf"))
    price_effect = F.greatest(F.lit(0.1), F.least(F.lit(1.5), 1 - F.col("price_sensitivity") * (relative_price - 1)))
    bought = carted & (uniform(seed, "buy", *k) < (0.3 + 0.6 * prop) * price_effect)
    removed = carted & ~bought & (uniform(seed, "remove", *k) < 0.5)
    qty = 1 + (uniform(seed, "q1", *k) < 0.2).cast("int") + (uniform(seed, "q2", *k) < 0.05).cast("int")

    def ev(kind: str, offset: int | Column, when: Column | None = None, quantity: Column | None = None,
           leaf: Column | None = None, slot: Column | None = None) -> Column:
        value = F.struct(F.lit(kind).alias("event_type"), F.lit(offset).cast("long").alias("offset"),
                         (quantity if quantity is not None else F.lit(None).cast("int")).alias("quantity"),
                         (leaf if leaf is not None else F.col("leaf")).alias("leaf"),
                         (slot if slot is not None else F.col("slot")).alias("slot"))
        return value if when is None else F.when(when, value)

    step = (20 + uniform(seed, "step", F.col("uid"), F.col("day"), F.col("session")) * 70).cast("int")
    actions = F.concat(F.array(
        ev("view", 0),
        ev("add_to_cart", 10, carted, qty),
        ev("purchase", 40, bought, qty),
        ev("remove_from_cart", 30, removed, qty),
        ev("like", 15, uniform(seed, "like", *k) < 0.04),
        ev("share", 18, uniform(seed, "share", *k) < 0.015),
        ev("review", 60, bought & (uniform(seed, "review", *k) < 0.15)),
    ), _caused_later(ev, bought, qty, cfg))
    item_events = slots.select(
        "*", F.explode(F.filter(actions, lambda a: a.isNotNull())).alias("a")
    ).select(
        "uid", "raw_user_id", "day", "session", F.col("a.slot").alias("slot"), "device", "churn_ts",
        F.col("a.leaf").alias("leaf"),
        F.when(F.col("a.slot") < 1000, F.col("session_id")).otherwise(F.substring(F.sha2(F.concat_ws(
            "|", F.lit(seed), F.lit("follow"), F.col("uid"), F.col("day"), F.col("session"), F.col("a.slot")), 256), 1, 16)
        ).alias("session_id"),
        F.col("a.event_type").alias("event_type"),
        (F.col("session_start") + 30 + F.col("slot") * step + F.col("a.offset")).alias("ts_s"),
        item_id(F.col("a.leaf"), F.col("idx")).alias("item_id"),
        item_price(seed, F.col("a.leaf"), F.col("idx")).alias("price"),
        F.col("a.quantity").alias("quantity"),
        F.lit(None).cast("string").alias("query"), F.lit(None).cast("long").alias("cause"),
    )
    sk = (F.col("uid"), F.col("day"), F.col("session"))
    adjective = F.element_at(F.array(*[F.lit(a) for a in ADJECTIVES]),
                             (uniform(seed, "qa", *sk) * len(ADJECTIVES)).cast("int") + 1)
    query = F.concat_ws(" ", adjective, noun_name(F.col("leaf"), F.col("query_noun")))
    searches = sessions.where("has_search").select(
        "uid", "raw_user_id", "day", "session", F.lit(-1).alias("slot"), "session_id", "device", "churn_ts", "leaf",
        F.lit("search").alias("event_type"), F.col("session_start").alias("ts_s"),
        F.lit(None).cast("string").alias("item_id"), F.lit(None).cast("double").alias("price"),
        F.lit(None).cast("int").alias("quantity"), query.alias("query"), F.lit(None).cast("long").alias("cause"),
    )
    events = item_events.unionByName(searches).unionByName(_friends_influence(spark, cfg, item_events, users))
    events = events.where(F.col("churn_ts").isNull() | (F.col("ts_s") < F.unix_timestamp("churn_ts")))
    window_start = int((start - date(1970, 1, 1)).total_seconds())
    window_end = int((end - date(1970, 1, 1)).total_seconds())
    events = events.where((F.col("ts_s") >= window_start) & (F.col("ts_s") < window_end))
    return events.select(
        # ``cause`` (the influencing shopper) is null for a shopper's own events, which concat_ws skips.
        F.substring(F.sha2(F.concat_ws("|", F.lit(seed), F.col("uid"), F.col("day"), F.col("session"), F.col("slot"),
                                       F.col("event_type"), F.col("cause")), 256), 1, 32).alias("event_id"),
        F.col("raw_user_id").alias("user_id"),
        F.timestamp_seconds(F.col("ts_s")).alias("ts"),
        "event_type", "item_id",
        leaf_name(F.col("leaf")).alias("category"),
        "price", "quantity", "query", "session_id", "device",
    )


def _caused_later(ev: Any, bought: Column, qty: Column, cfg: SimulatorConfig) -> Column:
    """The events a slot causes later, as more actions of the same slot (one pass, no second scan
    of the events): after a purchase, a session on the complement's partner item within two days
    and the same consumable bought again one and two cycles on; after a search-led session's first
    view, a return to that item within three days. Slots 1000+ (follow-ups), 2000+ and 3000+
    (repeats) and 4000+ (returns) keep their event ids distinct."""
    seed = cfg.seed
    k = (F.col("uid"), F.col("day"), F.col("session"), F.col("slot"))
    partner = F.create_map(*[x for a, b in COMPLEMENTS.items() for x in (F.lit(LEAVES.index(a)), F.lit(LEAVES.index(b)))])
    to = partner[F.col("leaf")]
    follows = bought & to.isNotNull() & (uniform(seed, "follow", *k) < cfg.complement_rate)
    lo, hi = FOLLOW_UP_HOURS
    lag = F.lit(40) + ((lo + uniform(seed, "follow_lag", *k) * (hi - lo)) * 3600).cast("long")
    cart = follows & (uniform(seed, "follow_cart", *k) < 0.35)
    slot = F.col("slot") + 1000
    caused = [ev("view", lag, follows, None, to, slot), ev("add_to_cart", lag + 10, cart, F.lit(1), to, slot),
              ev("purchase", lag + 40, cart & (uniform(seed, "follow_buy", *k) < 0.6), F.lit(1), to, slot)]
    consumable = bought & F.col("leaf").isin(*CONSUMABLE_LEAVES)
    cycle = F.lit(CYCLE_DAYS[0]) + (uniform(seed, "cycle", F.col("leaf")) * (CYCLE_DAYS[1] - CYCLE_DAYS[0] + 1)).cast("int")
    draw = uniform(seed, "replenish", *k)  # one draw against rate^n: a second repeat only follows a first
    for n in range(1, REPEATS + 1):
        again = consumable & (draw < cfg.replenishment_rate ** n)
        at = F.lit(40) + ((n * cycle + (uniform(seed, "replenish_jitter", *k, F.lit(n)) - 0.5) * 4) * 86400).cast("long")
        slot = F.col("slot") + 1000 + 1000 * n
        caused += [ev("view", at, again, None, None, slot), ev("add_to_cart", at + 10, again, qty, None, slot),
                   ev("purchase", at + 40, again, qty, None, slot)]
    back = F.col("has_search") & (F.col("slot") == 0) & (uniform(seed, "search_return", *k) < cfg.search_return_rate)
    lo, hi = REACTION_HOURS
    at = F.lit(40) + ((lo + uniform(seed, "return_lag", *k) * (hi - lo)) * 3600).cast("long")
    cart = back & (uniform(seed, "return_cart", *k) < 0.5)
    slot = F.col("slot") + 4000
    caused += [ev("view", at, back, None, None, slot), ev("add_to_cart", at + 10, cart, F.lit(1), None, slot),
               ev("purchase", at + 40, cart & (uniform(seed, "return_buy", *k) < 0.6), F.lit(1), None, slot)]
    return F.array(*caused)


def _friends_influence(spark: SparkSession, cfg: SimulatorConfig, item_events: DataFrame, users: DataFrame) -> DataFrame:
    """Friends' influence: each purchase or share in a shopper's own sessions is seen by their
    friends and followers (links made before it), each of whom looks at the item 20-68 hours
    later with chance ``influence_rate``, carts it a third of those times and buys half of those.
    Rows keep the influencing action's (day, session, slot) and name its shopper in ``cause``."""
    seed = cfg.seed
    edges = _edges(spark, cfg)
    friend = F.col("edge_type") == "friend"
    # A follower sees the followed account; friends see each other.
    seen_by = (edges.select(F.col("src_uid").alias("viewer"), F.col("dst_uid").alias("actor"), "edge_s")
               .unionByName(edges.where(friend).select(F.col("dst_uid").alias("viewer"), F.col("src_uid").alias("actor"), "edge_s"))
               .groupBy("viewer", "actor").agg(F.min("edge_s").alias("edge_s")))
    # One influence per slot: a slot both bought and shared is seen once, from its first action.
    acts = item_events.where(F.col("event_type").isin("purchase", "share") & (F.col("slot") < 1000)).groupBy(
        F.col("uid").alias("actor"), "day", "session", "slot", "leaf", "item_id", "price").agg(F.min("ts_s").alias("ts_s"))
    k = (F.col("viewer"), F.col("actor"), F.col("day"), F.col("session"), F.col("slot"))
    seen = acts.join(seen_by, "actor").where(
        (F.col("ts_s") >= F.col("edge_s")) & (uniform(seed, "influence", *k) < cfg.influence_rate))
    lo, hi = REACTION_HOURS
    at = F.col("ts_s") + ((lo + uniform(seed, "influence_lag", *k) * (hi - lo)) * 3600).cast("long")
    cart = uniform(seed, "influence_cart", *k) < 1 / 3
    buy = cart & (uniform(seed, "influence_buy", *k) < 0.5)
    actions = F.array(*[F.when(when, F.struct(F.lit(kind).alias("event_type"), (at + offset).alias("ts_s"),
                                              F.when(F.lit(kind) != "view", F.lit(1)).alias("quantity")))
                        for kind, offset, when in (("view", 0, F.lit(True)), ("add_to_cart", 10, cart),
                                                   ("purchase", 40, buy))])
    viewers = users.select(F.col("uid").alias("viewer"), "raw_user_id", "device", "churn_ts")
    return seen.select("*", F.explode(F.filter(actions, lambda a: a.isNotNull())).alias("a")).join(viewers, "viewer").select(
        F.col("viewer").alias("uid"), "raw_user_id", "day", "session", (F.col("slot") + 5000).alias("slot"), "device",
        "churn_ts", "leaf",
        F.substring(F.sha2(F.concat_ws("|", F.lit(seed), F.lit("influence"), *k), 256), 1, 16).alias("session_id"),
        F.col("a.event_type").alias("event_type"), F.col("a.ts_s").alias("ts_s"), "item_id", "price",
        F.col("a.quantity").cast("int").alias("quantity"), F.lit(None).cast("string").alias("query"),
        F.col("actor").cast("long").alias("cause"),
    )


@lru_cache(maxsize=4)
def _edges(spark: SparkSession, cfg: SimulatorConfig) -> DataFrame:
    """The friend/follow graph by simulator uid: (src_uid, dst_uid, edge_type, edge_s), one row per
    (src, dst, type); homophily: most links join users of the same main interest. One plan per session
    and config, as :func:`_users_latent`."""
    from pyspark.sql.window import Window

    seed = cfg.seed
    users = _users_latent(spark, cfg).select("uid", "raw_user_id", F.col("interest_cats")[0].alias("main"))
    ranked = users.withColumn("rank", F.row_number().over(Window.partitionBy("main").orderBy("uid")) - 1).withColumn(
        "group_size", F.count("*").over(Window.partitionBy("main")))
    links = ranked.withColumn("j", F.explode(F.sequence(F.lit(1), F.lit(max(cfg.friends_per_user, 1)))))
    if cfg.friends_per_user == 0:
        links = links.limit(0)
    ek = (F.col("uid"), F.col("j"))
    same_group = uniform(seed, "homophily", *ek) < 0.8
    offset = 1 + (uniform(seed, "offset", *ek) * 40).cast("int")
    links = links.select(
        "uid", "raw_user_id", "main", "j",
        F.when(same_group, F.pmod(F.col("rank") + offset, F.col("group_size"))).alias("dst_rank"),
        F.when(~same_group, (uniform(seed, "random_dst", *ek) * cfg.users).cast("long")).alias("dst_uid"),
    )
    by_rank = ranked.select(F.col("main").alias("m2"), F.col("rank").alias("r2"), F.col("uid").alias("uid_by_rank"))
    links = links.join(by_rank, (links.main == by_rank.m2) & (links.dst_rank == by_rank.r2), "left")
    start_s = int((cfg.start_date - date(1970, 1, 1)).total_seconds())
    edges = links.select(
        F.col("uid").alias("src_uid"), F.coalesce(F.col("dst_uid"), F.col("uid_by_rank")).alias("dst_uid"),
        F.when(uniform(seed, "edge_type", *ek) < 0.3, "follow").otherwise("friend").alias("edge_type"),
        (F.lit(start_s) + (uniform(seed, "edge_ts", *ek) * cfg.days * 86400).cast("long")).alias("edge_s"),
    ).where(F.col("src_uid") != F.col("dst_uid"))
    return edges.groupBy("src_uid", "dst_uid", "edge_type").agg(F.min("edge_s").alias("edge_s"))


def simulate_social_edges(spark: SparkSession, cfg: SimulatorConfig) -> DataFrame:
    """The friend/follow graph as a source delivers it (raw ids, one row per src, dst and type)."""
    return _edges(spark, cfg).select(
        F.format_string("sim-%07d", F.col("src_uid")).alias("src_user_id"),
        F.format_string("sim-%07d", F.col("dst_uid")).alias("dst_user_id"), "edge_type",
        F.date_format(F.timestamp_seconds("edge_s"), "yyyy-MM-dd HH:mm:ss").alias("ts"),
    )


def planted_truth(spark: SparkSession, cfg: SimulatorConfig) -> DataFrame:
    """Per user: top interests, price sensitivity, propensity, churn, demographics and whether they
    buy in the ``truth_horizon_days`` after the simulated period (raw ids; pseudonymised on ingest)."""
    end = cfg.start_date + timedelta(days=cfg.days)
    horizon_end = end + timedelta(days=cfg.truth_horizon_days)
    buyers = (simulate_events(spark, cfg, end, horizon_end).where(F.col("event_type") == "purchase")
              .select(F.col("user_id").alias("raw_user_id")).distinct().withColumn("buys", F.lit(True)))
    latent = _users_latent(spark, cfg)
    tops = F.array(*[F.lit(t) for t in TOP_CATEGORIES])
    # Interests as they stand at the cut-off: a drift inside the period has replaced the third one.
    drifted = F.col("drift_day").isNotNull() & (F.col("drift_day") < cfg.days)
    latent = latent.withColumn("_now", F.sort_array(_interests_at(drifted), asc=False))
    start = F.lit(cfg.start_date).cast("timestamp")
    return latent.join(buyers, "raw_user_id", "left").select(
        "raw_user_id",
        F.transform(F.col("_now"), lambda x: F.element_at(tops, x["c"] + 1)).alias("top_interests"),
        F.transform(F.col("_now"), lambda x: x["w"]).alias("interest_weights"),
        "price_sensitivity", "purchase_propensity", "churn_ts", "age_band", "gender",
        F.when(drifted, start + F.make_interval(days=F.col("drift_day"))).alias("interest_drift_ts"),
        F.when(drifted, F.element_at(tops, F.col("drift_cat") + 1)).alias("drifted_to"),
        # ... and as they stood until the drift: an evaluation at a D before the drift judges these.
        F.when(drifted, F.transform(F.sort_array(_interests_at(F.lit(False)), asc=False),
                                    lambda x: F.element_at(tops, x["c"] + 1))).alias("interests_before_drift"),
        (F.col("churn_ts").isNotNull() & (F.col("churn_ts") < F.lit(end).cast("timestamp"))).alias("churned"),
        F.lit(end).alias("truth_cutoff"),
        F.coalesce(F.col("buys"), F.lit(False)).alias("will_purchase_next_window"),
        F.lit(cfg.seed).cast("long").alias("seed"),
    )


def to_raw(frame: DataFrame, entity: str) -> DataFrame:
    """Land a typed frame as strings under the canonical names, with the record as JSON."""
    columns = RAW_COLUMNS[entity]
    as_strings = frame.select(*[
        (F.date_format(F.col(c), "yyyy-MM-dd HH:mm:ss") if dict(frame.dtypes).get(c) == "timestamp"
         else F.col(c).cast("string")).alias(c)
        for c in columns
    ])
    return as_strings.withColumn("raw_row", F.to_json(F.struct(*columns)))


def inject_dirt(events: DataFrame, cfg: SimulatorConfig) -> tuple[DataFrame, DataFrame]:
    """Corrupt ``dirty_rate`` of view events with one planted kind each, and add exact and near
    duplicates at ``duplicate_rate``. Returns (raw events, event_id -> planted kind)."""
    seed = cfg.seed
    eid = F.col("event_id")
    is_view = F.col("event_type") == "view"
    dirty = is_view & (uniform(seed, "dirty", eid) < cfg.dirty_rate)
    kind = F.when(dirty, F.element_at(F.array(*[F.lit(k) for k in DIRTY_KINDS]),
                                      (uniform(seed, "kind", eid) * len(DIRTY_KINDS)).cast("int") + 1))
    marked = events.withColumn("_kind", kind)

    def corrupt(column: str, by_kind: dict[str, Column]) -> Column:
        expr = F.col(column)
        for name, value in by_kind.items():
            expr = F.when(F.col("_kind") == name, value).otherwise(expr)
        return expr.alias(column)

    corrupted = marked.select(
        "event_id",
        corrupt("user_id", {"missing_user_id": F.when(uniform(seed, "blank", eid) < 0.5, F.lit("  "))}),
        corrupt("ts", {"unparsable_timestamp": F.lit("2024-13-45 99:61:00"),
                       "future_timestamp": F.lit("2099-01-01 00:00:00")}),
        corrupt("event_type", {"unknown_event_type": F.lit("clickk"), "search_without_query": F.lit("search"),
                               "non_positive_quantity": F.lit("purchase")}),
        corrupt("item_id", {"non_product_code": F.lit("POST"), "missing_item_id": F.lit(None),
                            "search_without_query": F.lit(None)}),
        "category",
        corrupt("price", {"negative_price": F.lit("-12.50"), "absurd_price": F.lit("9999999"),
                          "price_not_numeric": F.lit("12,50 EUR"), "search_without_query": F.lit(None)}),
        corrupt("quantity", {"non_positive_quantity": F.lit("-3"), "absurd_quantity": F.lit("500000"),
                             "quantity_not_integer": F.lit("2.5x")}),
        corrupt("query", {"malformed_unicode": F.lit("caf\ufffd cr\u00e8me\u0000"),
                          "oversized_text": F.repeat(F.lit("serum "), 200),
                          "search_without_query": F.lit("   ")}),
        "session_id",
        corrupt("device", {"unknown_device": F.lit("toaster")}),
        "_kind",
    )
    du = uniform(seed, "dup", eid)
    clean_view = is_view & F.col("_kind").isNull()
    exact = corrupted.where(clean_view & (du < cfg.duplicate_rate)).withColumn("_kind", F.lit("exact_duplicate"))
    near = corrupted.where(clean_view & (du >= cfg.duplicate_rate) & (du < 2 * cfg.duplicate_rate)).select(
        F.concat(eid, F.lit("n")).alias("event_id"), *[c for c in corrupted.columns if c not in ("event_id", "_kind")],
        F.lit("near_duplicate").alias("_kind"),
    ).withColumn("ts", F.date_format(F.to_timestamp("ts") + F.expr("INTERVAL 1 SECOND"), "yyyy-MM-dd HH:mm:ss"))
    landed = corrupted.unionByName(exact).unionByName(near)
    injected = landed.where(F.col("_kind").isNotNull()).select("event_id", F.col("_kind").alias("kind"))
    columns = RAW_COLUMNS["events"]
    raw = landed.drop("_kind").withColumn("raw_row", F.to_json(F.struct(*columns)))
    return raw, injected


def simulate(spark: SparkSession, cfg: SimulatorConfig, start: date | None = None, end: date | None = None,
             typed: DataFrame | None = None) -> RawBatch:
    """The simulator as a source: events for [start, end) (default: the whole period) with
    planted dirt, plus users, items, the social graph and the planted truth. ``typed`` is
    ``simulate_events`` of that window already materialised (see ``land_source``): the dirt, the
    duplicates and the planted-kind list each read the events again, and generating them is the
    expensive part."""
    start = start or cfg.start_date
    end = end or cfg.start_date + timedelta(days=cfg.days)
    if not start < end:
        raise ValueError(f"empty window: start {start} must be before end {end}")
    if typed is None:
        typed = simulate_events(spark, cfg, start, end)
    raw_events, injected = inject_dirt(to_raw(typed, "events").drop("raw_row"), cfg)
    return RawBatch(
        source=SOURCE,
        events=raw_events,
        users=to_raw(simulate_users(spark, cfg), "users"),
        items=to_raw(simulate_items(spark, cfg), "items"),
        social_edges=to_raw(simulate_social_edges(spark, cfg), "social_edges"),
        truth=planted_truth(spark, cfg),
        injected=injected,
    )
