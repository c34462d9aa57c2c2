"""shoprec's Feast declarations: entities, sources, feature views and feature services.

Declarations only: importing this module reads no file and touches no store.

Source paths are relative (``data/customers.parquet``). Feast resolves a relative FileSource
path against the repo path it is given (``FileSource.get_uri_for_file_path(repo_path, uri)``,
feast 0.49), so one set of declarations serves every dataset: each dataset gets its own repo
directory ``models/<name>/feature_repo/`` (written by ``shoprec.featurestore.materialize``)
holding ``feature_store.yaml``, a verbatim copy of this file and ``data/`` with the exported
tables, registry and SQLite online store. The alternatives were worse: an environment variable
read at import is hidden global state (the same import gives different objects in the same
process), and absolute paths written into code would mean generating code per dataset.

Feature services are the contract between a model and the store; a model that needs other
features gets a new versioned service (``recommend_v2``), never an edited one.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float32, Int64, String

from shoprec import schema as s
from shoprec.featurestore.tables import (
    ARTICLES_FILE,
    CUSTOMERS_FILE,
    DISPLAY_FIELDS,
    ONLINE_DATA_DIR,
)

FEAST_TYPES = {"INT64": Int64, "FP32": Float32}  # schema.TensorSpec.triton -> Feast type
NEVER_EXPIRES = timedelta(0)  # Feast: ttl 0 = no expiry; the next materialization replaces rows

customer = Entity(
    name=s.FEAST_CUSTOMER_ENTITY,
    join_keys=[s.CUSTOMER_ID],
    value_type=ValueType.STRING,
    description="A shop customer (canonical customer id).",
)

article = Entity(
    name=s.FEAST_ARTICLE_ENTITY,
    join_keys=[s.ARTICLE_ID],
    value_type=ValueType.STRING,
    description="A catalog article (canonical article id).",
)

customer_encoded_source = FileSource(
    name="customer_encoded_source",
    path=f"{ONLINE_DATA_DIR}/{CUSTOMERS_FILE}",
    timestamp_field=s.EVENT_TIMESTAMP,
    description="Encoded customer features of the serving snapshot (shoprec export).",
)

article_display_source = FileSource(
    name="article_display_source",
    path=f"{ONLINE_DATA_DIR}/{ARTICLES_FILE}",
    timestamp_field=s.EVENT_TIMESTAMP,
    description="Display fields of every catalog article (shoprec export).",
)

customer_encoded_fv = FeatureView(
    name=s.CUSTOMER_FEATURE_VIEW,
    entities=[customer],
    ttl=NEVER_EXPIRES,
    schema=[
        Field(name=s.CUSTOMER_ID, dtype=String),
        *[
            Field(
                name=name,
                dtype=Array(FEAST_TYPES[s.TENSORS[name].triton]),
                description=f"({s.TENSORS[name].width},) {s.TENSORS[name].description}",
            )
            for name in s.ENCODED_CUSTOMER_FEATURES
        ],
    ],
    source=customer_encoded_source,
    online=True,
    description="Inputs of the Triton recommend ensemble, ready to send.",
)

article_display_fv = FeatureView(
    name=s.ARTICLE_FEATURE_VIEW,
    entities=[article],
    ttl=NEVER_EXPIRES,
    schema=[
        Field(name=s.ARTICLE_ID, dtype=String),
        *[Field(name=name, dtype=String) for name in DISPLAY_FIELDS],
    ],
    source=article_display_source,
    online=True,
    description="What the gateway shows for a recommended article.",
)

recommend_v1 = FeatureService(
    name=s.RECOMMEND_FEATURE_SERVICE,
    features=[customer_encoded_fv],
    description="Everything the recommend ensemble needs for one customer.",
)

article_display_v1 = FeatureService(
    name=s.ARTICLE_FEATURE_SERVICE,
    features=[article_display_fv],
    description="Display fields of the articles a response returns.",
)
