"""Column and feature names: the one place they are spelled.

Every stage (ingest, features, models, Feast repo, Triton config, gateway) imports names from
here; no column name appears as a string literal anywhere else.

Canonical tables (Parquet, written by ``shoprec ingest``):

* articles: one row per article. ``article_id`` (str), ``name`` (str, display name) and five
  categorical attributes plus free text. The attribute slots are generic so that sources with
  different taxonomies map onto one schema (README, "Canonical schema", has the mapping).
* customers: one row per customer. ``customer_id`` (str), ``age`` (float, years, null when
  unknown) and three categorical attributes (null when unknown).
* transactions: one row per purchase line. ``t_dat`` (date), ``customer_id``, ``article_id``,
  ``price`` (float, currency units per item), ``quantity`` (int >= 1), ``sales_channel_id``
  (int, 1 = store, 2 = online, as in the H&M data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# ---- canonical table and file names -------------------------------------------------------
ARTICLES: Final = "articles"
CUSTOMERS: Final = "customers"
TRANSACTIONS: Final = "transactions"
CANONICAL_TABLES: Final = (ARTICLES, CUSTOMERS, TRANSACTIONS)

# ---- canonical columns ---------------------------------------------------------------------
ARTICLE_ID: Final = "article_id"
CUSTOMER_ID: Final = "customer_id"
NAME: Final = "name"
PRODUCT_TYPE: Final = "product_type"
PRODUCT_GROUP: Final = "product_group"
DEPARTMENT: Final = "department"
SECTION: Final = "section"
VARIANT: Final = "variant"
DESCRIPTION: Final = "description"
ARTICLE_ATTRIBUTES: Final = (PRODUCT_TYPE, PRODUCT_GROUP, DEPARTMENT, SECTION, VARIANT)
ARTICLE_COLUMNS: Final = (ARTICLE_ID, NAME, *ARTICLE_ATTRIBUTES, DESCRIPTION)

AGE: Final = "age"
SEGMENT: Final = "segment"
HOUSEHOLD: Final = "household"
POSTAL_CODE: Final = "postal_code"
CUSTOMER_ATTRIBUTES: Final = (SEGMENT, HOUSEHOLD, POSTAL_CODE)
CUSTOMER_COLUMNS: Final = (CUSTOMER_ID, AGE, *CUSTOMER_ATTRIBUTES)

T_DAT: Final = "t_dat"
PRICE: Final = "price"
QUANTITY: Final = "quantity"
SALES_CHANNEL_ID: Final = "sales_channel_id"
TRANSACTION_COLUMNS: Final = (T_DAT, CUSTOMER_ID, ARTICLE_ID, PRICE, QUANTITY, SALES_CHANNEL_ID)

# ---- H&M Kaggle raw files and columns (public schema) ----------------------------------------
HM_ARTICLES_CSV: Final = "articles.csv"
HM_CUSTOMERS_CSV: Final = "customers.csv"
HM_TRANSACTIONS_CSV: Final = "transactions_train.csv"
HM_ARTICLE_COLUMNS: Final = (
    "article_id", "product_code", "prod_name", "product_type_no", "product_type_name",
    "product_group_name", "graphical_appearance_no", "graphical_appearance_name",
    "colour_group_code", "colour_group_name", "perceived_colour_value_id",
    "perceived_colour_value_name", "perceived_colour_master_id", "perceived_colour_master_name",
    "department_no", "department_name", "index_code", "index_name", "index_group_no",
    "index_group_name", "section_no", "section_name", "garment_group_no", "garment_group_name",
    "detail_desc",
)  # fmt: skip
HM_CUSTOMER_COLUMNS: Final = (
    "customer_id", "FN", "Active", "club_member_status", "fashion_news_frequency", "age",
    "postal_code",
)  # fmt: skip
HM_TRANSACTION_COLUMNS: Final = ("t_dat", "customer_id", "article_id", "price", "sales_channel_id")
# H&M raw column -> canonical column (only the columns shoprec keeps).
HM_ARTICLE_MAP: Final = {
    "article_id": ARTICLE_ID,
    "prod_name": NAME,
    "product_type_name": PRODUCT_TYPE,
    "product_group_name": PRODUCT_GROUP,
    "department_name": DEPARTMENT,
    "section_name": SECTION,
    "colour_group_name": VARIANT,
    "detail_desc": DESCRIPTION,
}
HM_CUSTOMER_MAP: Final = {
    "customer_id": CUSTOMER_ID,
    "age": AGE,
    "club_member_status": SEGMENT,
    "fashion_news_frequency": HOUSEHOLD,
    "postal_code": POSTAL_CODE,
}
HM_ARTICLE_ID_DIGITS: Final = 10  # article ids are 10-digit strings with a leading zero

# ---- labelled dataset ------------------------------------------------------------------------
WINDOW: Final = "window"  # int: 0 = test window, 1 = validation, 2.. = training windows
LABEL: Final = "label"  # int8: 1 = purchased in the window, 0 = sampled negative
SPLIT: Final = "split"  # str: "train" | "val" | "test"

# ---- derived customer features (as of a cutoff date, from transactions strictly before it) ---
N_PURCHASES: Final = "n_purchases"
N_PURCHASES_28D: Final = "n_purchases_28d"
DAYS_SINCE_LAST: Final = "days_since_last"
DAYS_SINCE_FIRST: Final = "days_since_first"
MEAN_PRICE: Final = "mean_price"
N_DISTINCT_ARTICLES: Final = "n_distinct_articles"
HIST_ARTICLE_IDS: Final = "hist_article_ids"  # list[str]: N distinct past articles (see features)
HIST_COUNTS: Final = "hist_counts"  # list[int]: purchases of each of those articles
HIST_LAST_DAYS: Final = "hist_last_days"  # list[int]: days since the last purchase of each
HIST_FIRST_DAYS: Final = "hist_first_days"  # list[int]: days since the first purchase of each
# The repurchase list: R distinct past articles in the history's order (the history list is its
# first N), what the history candidate source reads (inference/sources.py).
REPURCHASE_ARTICLE_IDS: Final = "repurchase_article_ids"  # list[str]: R distinct past articles
REPURCHASE_COUNTS: Final = "repurchase_counts"  # list[int]: purchases of each of those articles
CUSTOMER_DENSE: Final = (
    AGE, N_PURCHASES, N_PURCHASES_28D, DAYS_SINCE_LAST, DAYS_SINCE_FIRST, MEAN_PRICE,
    N_DISTINCT_ARTICLES,
)  # fmt: skip
CUSTOMER_SPARSE: Final = CUSTOMER_ATTRIBUTES

# ---- derived article features (as of a cutoff date) ------------------------------------------
SALES_7D: Final = "sales_7d"
SALES_28D: Final = "sales_28d"
ARTICLE_MEAN_PRICE: Final = "article_mean_price"
DAYS_SINCE_FIRST_SALE: Final = "days_since_first_sale"
SALES_ALL: Final = "sales_all"  # purchase lines before the cutoff, all time (popularity)
SALES_TREND: Final = "sales_trend"  # log((1 + last week) / (1 + weekly mean of the 3 before))
ARTICLE_DENSE: Final = (
    SALES_7D, SALES_28D, ARTICLE_MEAN_PRICE, DAYS_SINCE_FIRST_SALE, SALES_ALL, SALES_TREND,
)  # fmt: skip
# What the Two-Tower item tower reads of ARTICLE_DENSE: not the ranker's all-time sales and
# trend (with them the item tower learned popularity, and the no-repurchase regime's served
# MAP@12 fell from 2.19x to 1.78x the best baseline, README "Candidate sources ...").
ITEM_TOWER_DENSE: Final = (SALES_7D, SALES_28D, ARTICLE_MEAN_PRICE, DAYS_SINCE_FIRST_SALE)
ARTICLE_SPARSE: Final = (ARTICLE_ID, *ARTICLE_ATTRIBUTES)

# ---- customer x article features (from the customer's history list) -------------------------
HIST_SAME_ARTICLE: Final = "hist_same_article"  # purchases of this article (0 if not in list)
HIST_SAME_ARTICLE_RANK: Final = "hist_same_article_rank"  # 1/(1+position) in list, 0 if absent
HIST_SAME_PRODUCT_TYPE: Final = "hist_same_product_type"
HIST_SAME_PRODUCT_GROUP: Final = "hist_same_product_group"
HIST_SAME_DEPARTMENT: Final = "hist_same_department"
HIST_ARTICLE_RECENCY: Final = "hist_article_recency"  # log1p(days since its last purchase)
HIST_ARTICLE_CYCLE: Final = "hist_article_cycle"  # log1p(mean days between its purchases)
HIST_ARTICLE_DUE: Final = "hist_article_due"  # days since last / cycle (1 = due again now)
HISTORY_CROSS_DENSE: Final = (
    HIST_SAME_ARTICLE, HIST_SAME_ARTICLE_RANK, HIST_SAME_PRODUCT_TYPE, HIST_SAME_PRODUCT_GROUP,
    HIST_SAME_DEPARTMENT, HIST_ARTICLE_RECENCY, HIST_ARTICLE_CYCLE, HIST_ARTICLE_DUE,
)  # fmt: skip
# log(candidate's mean price / customer's mean price), 0 when either is unknown
PRICE_RELATIVE: Final = "price_relative"
CROSS_DENSE: Final = (*HISTORY_CROSS_DENSE, PRICE_RELATIVE)

# ---- candidate sources (inference/sources.py), in the order of their ranker features -------
SOURCE_ANN: Final = "ann"  # Two-Tower item-index ANN
SOURCE_HISTORY: Final = "history"  # the customer's own purchases (repurchase)
SOURCE_COPURCHASE: Final = "copurchase"  # bought the same day as a history article
SOURCE_POPULAR: Final = "popular"  # most sold in the last 7 days
CANDIDATE_SOURCES: Final = (SOURCE_ANN, SOURCE_HISTORY, SOURCE_COPURCHASE, SOURCE_POPULAR)
SOURCE_DENSE: Final = tuple(
    f"{src}_{what}" for src in CANDIDATE_SOURCES for what in ("score", "reciprocal_rank")
)

# ---- online serving contract: Triton models and tensors ----------------------------------
# B = requests in a batch, Fc/Fdc = customer sparse/dense widths, N = history length,
# R = repurchase-list length,
# D = embedding dim, C = candidates, K = results (the exported maximum k).
TRITON_RECOMMEND: Final = "recommend"  # ensemble: query_tower -> retrieval -> ranking
TRITON_QUERY_TOWER: Final = "query_tower"
TRITON_RETRIEVAL: Final = "retrieval"
TRITON_RANKING: Final = "ranking"
TRITON_SIMILAR_ITEMS: Final = "similar_items"
TRITON_ARTICLE_ENCODER: Final = "article_encoder"  # item tower + text encoder of new articles
T_CUSTOMER_SPARSE: Final = "customer_sparse"  # INT64 (B, Fc) encoded CUSTOMER_SPARSE
T_CUSTOMER_DENSE: Final = "customer_dense"  # FP32 (B, Fdc) encoded CUSTOMER_DENSE
T_HIST_IDS: Final = "hist_ids"  # INT64 (B, N) article vocabulary ids, 0 = padding
T_HIST_COUNTS: Final = "hist_counts"  # FP32 (B, N)
T_HIST_LAST_DAYS: Final = "hist_last_days"  # FP32 (B, N) days since each one's last purchase
T_HIST_FIRST_DAYS: Final = "hist_first_days"  # FP32 (B, N) days since each one's first purchase
T_REPURCHASE_IDS: Final = "repurchase_ids"  # INT64 (B, R) article vocabulary ids, 0 = padding
T_REPURCHASE_COUNTS: Final = "repurchase_counts"  # FP32 (B, R)
T_QUERY_EMBEDDING: Final = "query_embedding"  # FP32 (B, D)
T_CANDIDATES: Final = "candidates"  # INT64 (B, C) rows of the served article table, -1 = none
T_SOURCE_FEATURES: Final = "source_features"  # FP32 (B, C * len(SOURCE_DENSE)) per candidate
NO_CANDIDATE: Final = -1  # the padding of candidate and result rows ("none")
T_ARTICLE_ID: Final = "article_id"  # BYTES (B, 1) input of similar_items
T_ARTICLE_IDS: Final = "article_ids"  # BYTES (B, K) output, best first, b"" = none
T_SCORES: Final = "scores"  # FP32 (B, K) output, -inf where none
T_ARTICLE_FIELDS: Final = "article_fields"  # BYTES (B, AF) ARTICLE_FIELDS, b"" = null
T_ITEM_EMBEDDING: Final = "item_embedding"  # FP32 (B, D) item-tower embedding
T_TEXT_EMBEDDING: Final = "text_embedding"  # FP32 (B, Dt) text embedding
T_ARTICLE_SPARSE: Final = "article_sparse"  # INT64 (B, Fa) encoded ARTICLE_SPARSE
T_ARTICLE_DENSE: Final = "article_dense"  # FP32 (B, Fda) encoded ARTICLE_DENSE
T_KNOWN: Final = "known"  # BOOL (B, 1) the served model has the article (no delta row needed)
T_EXPORT_ID: Final = "export_id"  # BYTES (B, 1) the repository export that computed the row
# What the ``article_encoder`` step returns, in order (the step and its gRPC client).
ARTICLE_ENCODER_OUTPUTS: Final = (
    T_ITEM_EMBEDDING, T_TEXT_EMBEDDING, T_ARTICLE_SPARSE, T_ARTICLE_DENSE, T_KNOWN, T_EXPORT_ID,
)  # fmt: skip
ARTICLE_FIELDS: Final = ARTICLE_COLUMNS[1:]  # what article_fields carries, in this order
ENCODED_CUSTOMER_FEATURES: Final = (
    T_CUSTOMER_SPARSE, T_CUSTOMER_DENSE, T_HIST_IDS, T_HIST_COUNTS, T_HIST_LAST_DAYS,
    T_HIST_FIRST_DAYS, T_REPURCHASE_IDS, T_REPURCHASE_COUNTS,
)  # fmt: skip


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the serving contract, spelled for numpy, Triton and Feast.

    Attributes:
        name: the tensor name (Triton input/output, Feast feature of the customer view).
        triton: Triton's data type as the client API spells it (``INT64``, ``FP32``,
            ``BYTES``); ``config.pbtxt`` writes :attr:`config_type`.
        numpy: the numpy dtype name (``int64``, ``float32``, ``object`` for BYTES).
        width: the shape letter of the trailing dimension (shapes are (B, width)).
        description: what one row holds (also the Feast feature's description).
    """

    name: str
    triton: str
    numpy: str
    width: str
    description: str

    @property
    def config_type(self) -> str:
        """The ``data_type`` of ``config.pbtxt`` (``TYPE_INT64``; BYTES is ``TYPE_STRING``)."""
        return "TYPE_STRING" if self.triton == "BYTES" else f"TYPE_{self.triton}"


TENSORS: Final = {
    spec.name: spec
    for spec in (
        TensorSpec(
            T_CUSTOMER_SPARSE,
            "INT64",
            "int64",
            "Fc",
            "workflow ids of the customer's categorical attributes",
        ),
        TensorSpec(
            T_CUSTOMER_DENSE,
            "FP32",
            "float32",
            "Fdc",
            "normalised numeric features and missing indicators",
        ),
        TensorSpec(
            T_HIST_IDS,
            "INT64",
            "int64",
            "N",
            "article vocabulary ids of past purchases, 0 = padding",
        ),
        TensorSpec(
            T_HIST_COUNTS,
            "FP32",
            "float32",
            "N",
            "purchases of each history article, 0 for padding",
        ),
        TensorSpec(
            T_HIST_LAST_DAYS,
            "FP32",
            "float32",
            "N",
            "days from the last purchase of each history article to the cutoff, 0 for padding",
        ),
        TensorSpec(
            T_HIST_FIRST_DAYS,
            "FP32",
            "float32",
            "N",
            "days from the first purchase of each history article to the cutoff, 0 for padding",
        ),
        TensorSpec(
            T_REPURCHASE_IDS,
            "INT64",
            "int64",
            "R",
            "article vocabulary ids of the repurchase list (history order), 0 = padding",
        ),
        TensorSpec(
            T_REPURCHASE_COUNTS,
            "FP32",
            "float32",
            "R",
            "purchases of each repurchase-list article, 0 for padding",
        ),
        TensorSpec(
            T_QUERY_EMBEDDING, "FP32", "float32", "D", "L2-normalised query-tower embedding"
        ),
        TensorSpec(
            T_CANDIDATES, "INT64", "int64", "C", "rows of the served article table, -1 = none"
        ),
        TensorSpec(
            T_SOURCE_FEATURES,
            "FP32",
            "float32",
            "CS",
            "per candidate (C of them) its SOURCE_DENSE values, flattened row-major",
        ),
        TensorSpec(T_ARTICLE_ID, "BYTES", "object", "1", "UTF-8 article id"),
        TensorSpec(
            T_ARTICLE_IDS, "BYTES", "object", "K", "UTF-8 article ids, best first, b'' = none"
        ),
        TensorSpec(T_SCORES, "FP32", "float32", "K", "scores of those articles, -inf = none"),
        TensorSpec(
            T_ARTICLE_FIELDS,
            "BYTES",
            "object",
            "AF",
            "UTF-8 name, attributes and description (ARTICLE_FIELDS), b'' = null",
        ),
        TensorSpec(T_ITEM_EMBEDDING, "FP32", "float32", "D", "L2-normalised item-tower embedding"),
        TensorSpec(T_TEXT_EMBEDDING, "FP32", "float32", "Dt", "L2-normalised text embedding"),
        TensorSpec(T_ARTICLE_SPARSE, "INT64", "int64", "Fa", "workflow ids of ARTICLE_SPARSE"),
        TensorSpec(
            T_ARTICLE_DENSE,
            "FP32",
            "float32",
            "Fda",
            "normalised ARTICLE_DENSE and missing indicators",
        ),
        TensorSpec(T_KNOWN, "BOOL", "bool", "1", "the served model has this article"),
        TensorSpec(
            T_EXPORT_ID, "BYTES", "object", "1", "export_id of the repository (manifest.json)"
        ),
    )
}

# ---- online serving contract: Feast objects ------------------------------------------------
FEAST_CUSTOMER_ENTITY: Final = "customer"
FEAST_ARTICLE_ENTITY: Final = "article"
EVENT_TIMESTAMP: Final = "event_timestamp"
CUSTOMER_FEATURE_VIEW: Final = "customer_encoded_fv"  # ENCODED_CUSTOMER_FEATURES as arrays
ARTICLE_FEATURE_VIEW: Final = "article_display_fv"  # NAME, ARTICLE_ATTRIBUTES, DESCRIPTION
RECOMMEND_FEATURE_SERVICE: Final = "recommend_v1"  # what the gateway reads for a customer
ARTICLE_FEATURE_SERVICE: Final = "article_display_v1"  # display fields of returned articles
