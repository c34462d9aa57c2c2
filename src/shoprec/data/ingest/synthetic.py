"""Synthetic data in the exact H&M Kaggle file format, with signal a recommender can learn.

:func:`generate_synthetic` writes ``articles.csv``, ``customers.csv`` and
``transactions_train.csv`` with the public Kaggle columns
(:data:`shoprec.schema.HM_ARTICLE_COLUMNS` etc.) and plausible values, so that the H&M
ingest, and everything after it, can run without the 3.5 GB Kaggle download.

Generative model (all vectorised numpy, one ``numpy.random.Generator`` seeded once):

* Catalogue: product codes (6 digits) with 1-5 colour variants each; ``article_id`` is the
  10-digit ``0<product_code><3-digit variant>`` string, written with its leading zero in both
  files. Every product belongs to one of 13 sections (the taste clusters), which fixes its index
  and index group; its product type, department, garment group and appearance are drawn
  within the section's product groups.
* Popularity: a Zipf law over articles (weight ``rank ** -ZIPF_EXPONENT``, ranks a random
  permutation) times a life cycle: an article sells from its launch day on, and its weight
  decays as ``exp(-age / tau)`` (tau ~ 45 days, lognormal; 15 % evergreen basics never
  decay). 30 % of articles are already in the catalogue on the first day, the rest launch
  during the period, so popularity drifts and new articles keep appearing.
* Customers: age bimodal (about 25 and 50 years); a primary and a secondary section drawn
  with a preference for sections whose typical customer age is near their own; a lognormal
  activity level; a propensity to shop online; four favourite articles in those sections
  (drawn with the flattened weight ``base ** FAVOURITE_POPULARITY``, so repeat purchases are
  personal rather than of the best sellers).
* Transactions: the total is split over days by weekday (weekends busier), a yearly cycle
  and slow growth; each week is generated in one chunk. Baskets (geometric size, mean 2.9)
  of one customer on one day and one channel; each item is a favourite (repeat purchase,
  12 %), from the primary (57 %) or secondary (22 %) section, or from the whole catalogue,
  by the day's popularity; 6 % of items repeat the previous item of the basket (H&M writes a
  quantity of n as n rows). Prices are SEK price points (25 % off for articles on sale
  past twice their tau) divided by 590, like H&M's scaled prices (~0.01-0.6).

Same ``seed`` and scale give byte-identical files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Final

import numpy as np
import polars as pl
from tqdm import tqdm

from shoprec import schema
from shoprec.features.workflow import ragged_positions

(
    _A_ARTICLE_ID, _A_PRODUCT_CODE, _A_PROD_NAME, _A_TYPE_NO, _A_TYPE_NAME, _A_GROUP_NAME,
    _A_APPEARANCE_NO, _A_APPEARANCE_NAME, _A_COLOUR_CODE, _A_COLOUR_NAME, _A_VALUE_ID,
    _A_VALUE_NAME, _A_MASTER_ID, _A_MASTER_NAME, _A_DEPARTMENT_NO, _A_DEPARTMENT_NAME,
    _A_INDEX_CODE, _A_INDEX_NAME, _A_INDEX_GROUP_NO, _A_INDEX_GROUP_NAME, _A_SECTION_NO,
    _A_SECTION_NAME, _A_GARMENT_NO, _A_GARMENT_NAME, _A_DETAIL_DESC,
) = schema.HM_ARTICLE_COLUMNS  # fmt: skip
(_C_ID, _C_FN, _C_ACTIVE, _C_CLUB, _C_NEWS, _C_AGE, _C_POSTAL) = schema.HM_CUSTOMER_COLUMNS
(_T_DAT, _T_CUSTOMER, _T_ARTICLE, _T_PRICE, _T_CHANNEL) = schema.HM_TRANSACTION_COLUMNS


@dataclass(frozen=True)
class SyntheticScale:
    """Size of a synthetic data set: exact row counts and the inclusive date range."""

    n_customers: int
    n_articles: int
    n_transactions: int
    start: date
    end: date

    @property
    def n_days(self) -> int:
        """Days from ``start`` to ``end``, both included."""
        return (self.end - self.start).days + 1


SCALES: Final[dict[str, SyntheticScale]] = {
    # Tests: 70 days, well under a second.
    "tiny": SyntheticScale(300, 200, 20_000, date(2020, 7, 15), date(2020, 9, 22)),
    # Development: half a year, a few seconds.
    "small": SyntheticScale(20_000, 5_000, 1_000_000, date(2020, 3, 26), date(2020, 9, 22)),
    # A fifth of the Kaggle data over the same two years: profiling the H&M-size build.
    "mid": SyntheticScale(274_396, 21_108, 6_357_665, date(2018, 9, 20), date(2020, 9, 22)),
    # The size of the Kaggle data (2018-09-20..2020-09-22), about a minute.
    "hm": SyntheticScale(1_371_980, 105_542, 31_788_324, date(2018, 9, 20), date(2020, 9, 22)),
}

REGIMES: Final = ("default", "grocery", "fashion")
# P(favourite) per regime: grocery customers mostly rebuy their favourites; "fashion" never
# buys an article twice (every repeat of a (customer, article) pair is dropped).
_P_FAVOURITE_OF: Final = {"default": 0.12, "grocery": 0.55, "fashion": 0.0}

ZIPF_EXPONENT: Final = 0.7
FAVOURITE_POPULARITY: Final = 0.3  # favourites drawn with weight base ** this (flatter)
PRICE_SCALE: Final = 590.0  # H&M prices look like SEK / 590
CHUNK_DAYS: Final = 7
N_FAVOURITES: Final = 4
P_PRIMARY: Final = 0.57
P_SECONDARY: Final = 0.22
P_SAME_AS_PREVIOUS: Final = 0.06
MEAN_BASKET: Final = 2.9
WEEKDAY_FACTOR: Final = (0.9, 0.88, 0.92, 0.97, 1.08, 1.3, 1.2)  # Monday .. Sunday

# ---- catalogue taxonomy (values, not column names) -------------------------------------------
_GROUPS: Final[dict[str, tuple[tuple[tuple[int, str], ...], tuple[str, ...]]]] = {
    # product group: ((product_type_no, product_type_name), ...), department names
    "Garment Upper body": (
        ((255, "T-shirt"), (252, "Sweater"), (254, "Top"), (253, "Vest top"), (258, "Blouse"),
         (259, "Shirt"), (245, "Hoodie"), (257, "Cardigan"), (264, "Jacket")),
        ("Jersey Basic", "Jersey Fancy", "Knitwear", "Blouse & Shirt"),
    ),
    "Garment Lower body": (
        ((272, "Trousers"), (274, "Shorts"), (275, "Skirt"), (273, "Leggings/Tights")),
        ("Trousers", "Denim", "Shorts & Skirts"),
    ),
    "Garment Full body": (
        ((265, "Dress"), (267, "Jumpsuit/Playsuit"), (268, "Dungarees")),
        ("Dresses",),
    ),
    "Underwear": (
        ((306, "Bra"), (286, "Underwear bottom"), (296, "Underwear body")),
        ("Casual Lingerie", "Expressive Lingerie"),
    ),
    "Nightwear": (((77, "Pyjama set"), (78, "Night gown")), ("Nightwear",)),
    "Socks & Tights": (((302, "Socks"), (304, "Underwear Tights")), ("Socks", "Tights")),
    "Accessories": (
        ((66, "Bag"), (67, "Earring"), (68, "Necklace"), (72, "Hat/beanie"), (80, "Scarf"),
         (83, "Sunglasses"), (87, "Hair clip")),
        ("Bags", "Jewellery", "Small Accessories"),
    ),
    "Shoes": (((93, "Sneakers"), (94, "Boots"), (95, "Sandals"), (96, "Ballerinas")), ("Shoes",)),
    "Swimwear": (
        ((59, "Bikini top"), (298, "Swimwear bottom"), (60, "Swimsuit")),
        ("Swimwear",),
    ),
}  # fmt: skip
_GARMENT_GROUP: Final[dict[str, tuple[int, str]]] = {
    "Jersey Basic": (1002, "Jersey Basic"),
    "Jersey Fancy": (1005, "Jersey Fancy"),
    "Knitwear": (1003, "Knitwear"),
    "Blouse & Shirt": (1010, "Blouses"),
    "Trousers": (1009, "Trousers"),
    "Denim": (1016, "Trousers Denim"),
    "Shorts & Skirts": (1025, "Shorts"),
    "Dresses": (1013, "Dresses Ladies"),
    "Casual Lingerie": (1017, "Under-, Nightwear"),
    "Expressive Lingerie": (1017, "Under-, Nightwear"),
    "Nightwear": (1017, "Under-, Nightwear"),
    "Socks": (1021, "Socks and Tights"),
    "Tights": (1021, "Socks and Tights"),
    "Bags": (1019, "Accessories"),
    "Jewellery": (1019, "Accessories"),
    "Small Accessories": (1019, "Accessories"),
    "Shoes": (1020, "Shoes"),
    "Swimwear": (1018, "Swimwear"),
}
_UPPER, _LOWER, _FULL = "Garment Upper body", "Garment Lower body", "Garment Full body"


@dataclass(frozen=True)
class _Section:
    no: int
    name: str
    index_code: str
    index_name: str
    index_group_no: int
    index_group_name: str
    weight: float  # share of products
    age: float  # typical customer age, years
    groups: tuple[str, ...]


_SECTIONS: Final = (
    _Section(16, "Womens Everyday Collection", "A", "Ladieswear", 1, "Ladieswear", 0.13, 42,
             (_UPPER, _LOWER, _FULL)),
    _Section(15, "Womens Everyday Basics", "A", "Ladieswear", 1, "Ladieswear", 0.08, 48,
             (_UPPER, _LOWER)),
    _Section(61, "Womens Lingerie", "B", "Lingeries/Tights", 1, "Ladieswear", 0.08, 35,
             ("Underwear", "Nightwear", "Socks & Tights")),
    _Section(57, "Womens Swimwear, beachwear", "B", "Lingeries/Tights", 1, "Ladieswear", 0.04,
             31, ("Swimwear",)),
    _Section(66, "Womens Small accessories", "C", "Ladies Accessories", 1, "Ladieswear", 0.08,
             33, ("Accessories",)),
    _Section(64, "Womens Shoes", "C", "Ladies Accessories", 1, "Ladieswear", 0.04, 36,
             ("Shoes",)),
    _Section(53, "Divided Collection", "D", "Divided", 2, "Divided", 0.12, 22,
             (_UPPER, _LOWER, _FULL)),
    _Section(52, "Divided Basics", "D", "Divided", 2, "Divided", 0.06, 21, (_UPPER, _LOWER)),
    _Section(21, "Contemporary Casual", "F", "Menswear", 3, "Menswear", 0.09, 34,
             (_UPPER, _LOWER)),
    _Section(26, "Men Underwear", "F", "Menswear", 3, "Menswear", 0.03, 38,
             ("Underwear", "Socks & Tights")),
    _Section(44, "Baby Essentials & Complements", "G", "Baby Sizes 50-98", 4, "Baby/Children",
             0.07, 31, (_UPPER, _LOWER, _FULL, "Nightwear")),
    _Section(46, "Kids Girl", "H", "Children Sizes 92-140", 4, "Baby/Children", 0.09, 39,
             (_UPPER, _LOWER, _FULL)),
    _Section(5, "Ladies H&M Sport", "S", "Sport", 26, "Sport", 0.05, 29,
             (_UPPER, _LOWER, "Shoes")),
)  # fmt: skip

_COLOURS: Final = (
    # code, name, perceived value id/name, perceived master id/name, weight
    (9, "Black", 4, "Dark", 5, "Black", 0.20),
    (10, "White", 3, "Light", 9, "White", 0.09),
    (11, "Off White", 1, "Dusty Light", 9, "White", 0.05),
    (13, "Beige", 1, "Dusty Light", 11, "Beige", 0.06),
    (7, "Grey", 2, "Medium Dusty", 12, "Grey", 0.05),
    (73, "Dark Blue", 4, "Dark", 2, "Blue", 0.09),
    (71, "Light Blue", 3, "Light", 2, "Blue", 0.06),
    (72, "Blue", 2, "Medium Dusty", 2, "Blue", 0.05),
    (42, "Red", 5, "Bright", 18, "Red", 0.05),
    (52, "Pink", 5, "Bright", 4, "Pink", 0.05),
    (51, "Light Pink", 3, "Light", 4, "Pink", 0.06),
    (62, "Dark Green", 4, "Dark", 19, "Green", 0.05),
    (22, "Yellow", 5, "Bright", 8, "Yellow", 0.04),
    (32, "Orange", 5, "Bright", 3, "Orange", 0.03),
    (17, "Dark Beige", 4, "Dark", 11, "Beige", 0.07),
)
_APPEARANCES: Final = (
    (1010016, "Solid", 0.47),
    (1010001, "All over pattern", 0.14),
    (1010017, "Stripe", 0.07),
    (1010010, "Melange", 0.06),
    (1010023, "Denim", 0.05),
    (1010008, "Front print", 0.06),
    (1010014, "Placement print", 0.07),
    (1010004, "Check", 0.04),
    (1010021, "Lace", 0.04),
)
_NAME_STEMS: Final = (
    "Tilly", "Ellie", "Jade", "Luna", "Bibi", "Mercury", "Denver", "Skinny", "Slim", "Relaxed",
    "Wide", "Basic", "Premium", "Linen", "Cotton", "Rib", "Oversized", "Sienna", "Mia", "Joy",
    "Kim", "Ada", "Nora", "Alva", "Tove", "Ebba", "Vera", "Hudson", "Dallas", "Austin", "Rio",
    "Pluto", "Coco", "Dixie", "Greta", "Moa", "Sally", "Timmy", "Lola", "Penny",
)  # fmt: skip
_GARMENT_WORDS: Final = (
    ("soft cotton jersey", "ribbed jersey", "fine-knit viscose", "woven fabric", "washed denim",
     "stretch twill", "airy linen", "recycled polyester", "soft fleece", "organic cotton"),
    ("a round neckline", "a V-neck", "long sleeves", "short sleeves", "an elasticated waist",
     "side pockets", "a concealed zip", "narrow shoulder straps", "a regular fit",
     "a relaxed fit", "buttons down the front", "a drawstring hem", "dropped shoulders",
     "a high waist"),
)  # fmt: skip
# product group -> (materials, features) for the detail_desc sentences
_DESCRIPTION_WORDS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "Accessories": (
        ("metal", "imitation leather", "woven straw", "glass beads", "soft knit", "satin"),
        ("a clasp fastening", "an adjustable strap", "a lined inside", "a zipped pocket",
         "decorative stones", "a matte finish", "a gold-coloured finish"),
    ),
    "Shoes": (
        ("imitation leather", "suede", "canvas", "mesh", "rubber"),
        ("a rubber sole", "a padded footbed", "lacing at the front", "a block heel",
         "a pull-on loop", "a round toe", "an elasticated gusset"),
    ),
    "Underwear": (
        ("lace", "microfibre", "cotton jersey", "satin"),
        ("moulded cups", "adjustable shoulder straps", "a lined gusset", "a low waist",
         "a scalloped trim", "a hook-and-eye fastening"),
    ),
}  # fmt: skip


def _description(type_name: str, group: str, u: np.ndarray) -> str:
    """A detail_desc sentence from three uniforms ``u`` (shape (3,)); two distinct features."""
    materials, features = _DESCRIPTION_WORDS.get(group, _GARMENT_WORDS)
    first = int(u[1] * len(features))
    second = (first + 1 + int(u[2] * (len(features) - 1))) % len(features)
    material = materials[int(u[0] * len(materials))]
    return f"{type_name} in {material} with {features[first]} and {features[second]}."


_PRICE_POINTS_SEK: Final = (
    9.99, 12.99, 14.99, 17.99, 19.99, 24.99, 29.99, 34.99, 39.99, 49.99, 59.99, 69.99, 79.99,
    99.99, 129.99, 149.99, 199.99, 249.99, 299.99, 349.99,
)  # fmt: skip
_CLUB_STATUS: Final = (("ACTIVE", 0.9266), ("PRE-CREATE", 0.0674), ("LEFT CLUB", 0.0004))
_HEX: Final = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _normalised(weights: object) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    out: np.ndarray = w / w.sum()
    return out


def _hex_strings(rng: np.random.Generator, n: int, n_bytes: int = 32) -> np.ndarray:
    """``n`` random lowercase hex strings of ``2 * n_bytes`` characters; shape (n,), dtype S."""
    raw = rng.integers(0, 256, size=(n, n_bytes), dtype=np.uint8)
    chars = np.empty((n, 2 * n_bytes), dtype=np.uint8)
    chars[:, 0::2] = _HEX[raw >> 4]
    chars[:, 1::2] = _HEX[raw & 15]
    out: np.ndarray = chars.view(f"S{2 * n_bytes}").ravel()
    return out


def _utf8(values: np.ndarray) -> pl.Series:
    """Byte strings (dtype S) as a polars String series."""
    return pl.Series(values).cast(pl.String)


def _pick(values: tuple[str, ...], idx: np.ndarray) -> pl.Series:
    return pl.Series(values, dtype=pl.String).gather(idx)


def _null_where(series: pl.Series, mask: np.ndarray) -> pl.Series:
    """``series`` with nulls where the boolean ``mask`` (same length) is True."""
    return series.scatter(np.flatnonzero(mask), None)


def _sample_cdf(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Indices drawn from an (unnormalised) cumulative weight array with uniforms ``u``."""
    idx = np.searchsorted(cdf, u * cdf[-1], side="right")
    out: np.ndarray = np.minimum(idx, len(cdf) - 1)
    return out


@dataclass
class _Catalogue:
    """Per-article arrays (shape (A,)) the transaction generator needs."""

    article_id: pl.Series  # String, 10 digits
    section: np.ndarray  # int, index into _SECTIONS
    base: np.ndarray  # float, Zipf weight
    launch: np.ndarray  # int, day offset from scale.start (may be negative)
    tau: np.ndarray  # float, days
    price_sek: np.ndarray  # float


@dataclass
class _Population:
    """Per-customer arrays (shape (C,)) the transaction generator needs."""

    customer_id: pl.Series  # String, 64 hex, sorted
    primary: np.ndarray  # int, section index
    secondary: np.ndarray  # int, section index
    activity_cdf: np.ndarray  # float, cumulative activity
    p_online: np.ndarray  # float in (0, 1)
    favourites: np.ndarray  # int, shape (C, N_FAVOURITES), article indices


def _articles(rng: np.random.Generator, sc: SyntheticScale) -> tuple[pl.DataFrame, _Catalogue]:
    """The articles.csv frame (A rows, Kaggle columns) and the catalogue arrays."""
    n = sc.n_articles
    # Products with 1-5 colour variants; enough products to cover n articles.
    variants = rng.integers(1, 6, size=n)
    n_products = int(np.searchsorted(np.cumsum(variants), n)) + 1
    variants = variants[:n_products]
    variants[-1] -= int(variants.sum()) - n
    codes = np.sort(rng.choice(np.arange(100_000, 1_000_000), size=n_products, replace=False))
    product_of, variant_rank = ragged_positions(variants)  # each article's product, its rank
    variant_no = 1 + variant_rank * 2 + rng.integers(0, 2, size=n)  # e.g. 001, 004, 005
    article_no = codes[product_of].astype(np.int64) * 1000 + variant_no

    sec_of_product = rng.choice(len(_SECTIONS), size=n_products, p=_normalised(
        [s.weight for s in _SECTIONS]))  # fmt: skip
    group_names = tuple(_GROUPS)
    group_of_product = np.empty(n_products, dtype=np.int64)
    for s, section in enumerate(_SECTIONS):
        mask = sec_of_product == s
        allowed = [group_names.index(g) for g in section.groups]
        group_of_product[mask] = rng.choice(allowed, size=int(mask.sum()))
    # Product types and departments: flat tables over all groups.
    types = [(g, no, name) for g, name_ in enumerate(group_names) for no, name in _GROUPS[name_][0]]
    depts = [(g, d) for g, name_ in enumerate(group_names) for d in _GROUPS[name_][1]]
    type_of_product = np.empty(n_products, dtype=np.int64)
    dept_of_product = np.empty(n_products, dtype=np.int64)
    for g in range(len(group_names)):
        mask = group_of_product == g
        k = int(mask.sum())
        type_of_product[mask] = rng.choice([i for i, t in enumerate(types) if t[0] == g], size=k)
        dept_of_product[mask] = rng.choice([i for i, d in enumerate(depts) if d[0] == g], size=k)
    appearance = rng.choice(len(_APPEARANCES), size=n_products, p=_normalised(
        [a[2] for a in _APPEARANCES]))  # fmt: skip
    stem = rng.integers(0, len(_NAME_STEMS), size=n_products)
    desc_u = rng.random((n_products, 3))
    has_desc = rng.random(n_products) >= 0.004
    colour = rng.choice(len(_COLOURS), size=n, p=_normalised([c[6] for c in _COLOURS]))

    type_names = tuple(t[2] for t in types)
    type_groups = tuple(group_names[t[0]] for t in types)
    names = [f"{_NAME_STEMS[stem[p]]} {type_names[type_of_product[p]].lower()}"
             for p in range(n_products)]  # fmt: skip
    descs = [
        _description(type_names[t], type_groups[t], desc_u[p]) if has_desc[p] else None
        for p, t in enumerate(type_of_product)
    ]

    sec = sec_of_product[product_of]
    typ = type_of_product[product_of]
    dep = dept_of_product[product_of]
    app = appearance[product_of]
    section_table = pl.DataFrame(
        {
            _A_INDEX_CODE: [s.index_code for s in _SECTIONS],
            _A_INDEX_NAME: [s.index_name for s in _SECTIONS],
            _A_INDEX_GROUP_NO: [s.index_group_no for s in _SECTIONS],
            _A_INDEX_GROUP_NAME: [s.index_group_name for s in _SECTIONS],
            _A_SECTION_NO: [s.no for s in _SECTIONS],
            _A_SECTION_NAME: [s.name for s in _SECTIONS],
        }
    )[sec]
    dept_names = tuple(d[1] for d in depts)
    columns = {
        _A_ARTICLE_ID: pl.Series(article_no).cast(pl.String).str.zfill(
            schema.HM_ARTICLE_ID_DIGITS),
        _A_PRODUCT_CODE: codes[product_of],
        _A_PROD_NAME: pl.Series(names, dtype=pl.String).gather(product_of),
        _A_TYPE_NO: np.array([t[1] for t in types])[typ],
        _A_TYPE_NAME: _pick(type_names, typ),
        _A_GROUP_NAME: _pick(group_names, np.array([t[0] for t in types])[typ]),
        _A_APPEARANCE_NO: np.array([a[0] for a in _APPEARANCES])[app],
        _A_APPEARANCE_NAME: _pick(tuple(a[1] for a in _APPEARANCES), app),
        _A_COLOUR_CODE: np.array([c[0] for c in _COLOURS])[colour],
        _A_COLOUR_NAME: _pick(tuple(c[1] for c in _COLOURS), colour),
        _A_VALUE_ID: np.array([c[2] for c in _COLOURS])[colour],
        _A_VALUE_NAME: _pick(tuple(c[3] for c in _COLOURS), colour),
        _A_MASTER_ID: np.array([c[4] for c in _COLOURS])[colour],
        _A_MASTER_NAME: _pick(tuple(c[5] for c in _COLOURS), colour),
        _A_DEPARTMENT_NO: 1000 + 16 * dep + sec,
        _A_DEPARTMENT_NAME: _pick(dept_names, dep),
        **section_table.to_dict(),
        _A_GARMENT_NO: np.array([_GARMENT_GROUP[d][0] for d in dept_names])[dep],
        _A_GARMENT_NAME: _pick(tuple(_GARMENT_GROUP[d][1] for d in dept_names), dep),
        _A_DETAIL_DESC: pl.Series(descs, dtype=pl.String).gather(product_of),
    }  # fmt: skip
    frame = pl.DataFrame(columns).select(schema.HM_ARTICLE_COLUMNS)

    # Popularity and life cycle: per product, with a per-variant factor.
    rank = rng.permutation(n) + 1
    base = rank.astype(np.float64) ** -ZIPF_EXPONENT
    launch_p = np.where(
        rng.random(n_products) < 0.3,
        rng.integers(-180, 1, size=n_products),
        rng.integers(0, sc.n_days, size=n_products),
    )
    tau_p = np.exp(rng.normal(np.log(45.0), 0.7, size=n_products))
    tau_p[rng.random(n_products) < 0.15] = np.inf
    price_p = np.asarray(_PRICE_POINTS_SEK)[
        np.clip(
            np.round(rng.normal(6.5, 3.0, size=n_products)), 0, len(_PRICE_POINTS_SEK) - 1
        ).astype(np.int64)
    ]
    catalogue = _Catalogue(
        article_id=frame[_A_ARTICLE_ID],
        section=sec,
        base=base,
        launch=launch_p[product_of] + rng.integers(0, 8, size=n),
        tau=tau_p[product_of],
        price_sek=price_p[product_of],
    )
    return frame, catalogue


def _section_sample(
    rng: np.random.Generator, weights: np.ndarray, sections: np.ndarray, catalogue: _Catalogue
) -> np.ndarray:
    """One article index per entry of ``sections``, drawn within that section by ``weights``.

    Args:
        weights: (A,) article weights; a section with zero total weight falls back to the
            whole catalogue.
        sections: (N,) section indices.

    Returns:
        (N,) article indices.
    """
    order = np.argsort(catalogue.section, kind="stable")
    cum = np.cumsum(weights[order])
    bounds = np.searchsorted(catalogue.section[order], np.arange(len(_SECTIONS) + 1))
    lo = np.where(bounds[:-1] > 0, cum[np.maximum(bounds[:-1] - 1, 0)], 0.0)
    hi = np.where(bounds[1:] > 0, cum[np.maximum(bounds[1:] - 1, 0)], 0.0)
    u = rng.random(len(sections))
    empty = (hi - lo)[sections] <= 0
    x = lo[sections] + u * (hi - lo)[sections]
    pos = np.searchsorted(cum, x, side="right")
    pos = np.clip(pos, bounds[:-1][sections], np.maximum(bounds[1:][sections] - 1, 0))
    picked = order[np.minimum(pos, len(order) - 1)]
    if empty.any():
        picked[empty] = _sample_cdf(np.cumsum(weights), u[empty])
    out: np.ndarray = picked
    return out


def _customers(
    rng: np.random.Generator, sc: SyntheticScale, catalogue: _Catalogue
) -> tuple[pl.DataFrame, _Population]:
    """The customers.csv frame (C rows, Kaggle columns) and the population arrays."""
    n = sc.n_customers
    ids = np.sort(_hex_strings(rng, n))
    young = rng.random(n) < 0.55
    age = np.where(young, rng.normal(25.0, 4.0, size=n), rng.normal(50.0, 10.0, size=n))
    age = np.clip(np.round(age), 16, 99)
    age_known = rng.random(n) >= 0.012
    # Section preference: popular sections, closer to one's own age more likely (Gumbel-max).
    pref_age = np.where(age_known, age, 32.0)[:, None]
    sec_age = np.array([s.age for s in _SECTIONS])[None, :]
    logits = np.log(_normalised([s.weight for s in _SECTIONS]))[None, :] - (
        (pref_age - sec_age) ** 2 / (2 * 8.0**2)
    )
    primary = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    logits[np.arange(n), primary] = -np.inf
    secondary = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    activity = np.exp(rng.normal(0.0, 1.0, size=n))
    p_online = rng.beta(2.5, 1.2, size=n)
    fav_sections = np.where(rng.random((n, N_FAVOURITES)) < 0.7, primary[:, None],
                            secondary[:, None])  # fmt: skip
    favourites = _section_sample(
        rng, catalogue.base**FAVOURITE_POPULARITY, fav_sections.ravel(), catalogue
    ).reshape(n, N_FAVOURITES)

    fn = rng.random(n) < 0.35
    active = fn & (rng.random(n) < 0.97)
    club_p = [p for _, p in _CLUB_STATUS]
    club = rng.choice(len(_CLUB_STATUS) + 1, size=n, p=[*club_p, 1.0 - sum(club_p)])
    club_missing = club == len(_CLUB_STATUS)
    news_missing = rng.random(n) < 0.012
    news = np.where(fn, np.where(rng.random(n) < 0.998, 1, 2), 0)
    n_postal = max(1, n // 3)
    postal_pool = _hex_strings(rng, n_postal)
    postal = (rng.random(n) ** 2 * n_postal).astype(np.int64)
    frame = pl.DataFrame(
        {
            _C_ID: _utf8(ids),
            _C_FN: pl.Series(np.where(fn, 1.0, np.nan)).fill_nan(None),
            _C_ACTIVE: pl.Series(np.where(active, 1.0, np.nan)).fill_nan(None),
            _C_CLUB: _null_where(
                _pick(tuple(s for s, _ in _CLUB_STATUS), np.minimum(club, len(_CLUB_STATUS) - 1)),
                club_missing,
            ),
            _C_NEWS: _null_where(_pick(("NONE", "Regularly", "Monthly"), news), news_missing),
            _C_AGE: _null_where(pl.Series(age.astype(np.int64)), ~age_known),
            _C_POSTAL: _utf8(postal_pool[postal]),
        }
    ).select(schema.HM_CUSTOMER_COLUMNS)
    population = _Population(
        customer_id=frame[_C_ID],
        primary=primary,
        secondary=secondary,
        activity_cdf=np.cumsum(activity),
        p_online=p_online,
        favourites=favourites,
    )
    return frame, population


def _day_weights(sc: SyntheticScale) -> np.ndarray:
    """(D,) relative transaction volume per day: weekday x yearly cycle x slow growth."""
    days = np.arange(sc.n_days)
    weekday = (sc.start.weekday() + days) % 7
    day_of_year = (sc.start.timetuple().tm_yday + days) % 365
    yearly = 1.0 + 0.25 * np.sin(2 * np.pi * (day_of_year - 80) / 365)
    growth = 1.0 + 0.2 * days / max(1, sc.n_days - 1)
    out: np.ndarray = np.asarray(WEEKDAY_FACTOR)[weekday] * yearly * growth
    return out


def _transaction_chunks(
    rng: np.random.Generator,
    sc: SyntheticScale,
    catalogue: _Catalogue,
    people: _Population,
    regime: str = "default",
) -> Iterator[pl.DataFrame]:
    """transactions_train.csv rows, one frame per CHUNK_DAYS days, in date order."""
    p_favourite = _P_FAVOURITE_OF[regime]
    seen = np.zeros(0, dtype=np.int64)  # fashion: (customer, article) pairs bought so far
    day_w = _day_weights(sc)
    starts = np.arange(0, sc.n_days, CHUNK_DAYS)
    chunk_w = np.add.reduceat(day_w, starts)
    counts = rng.multinomial(sc.n_transactions, _normalised(chunk_w))
    epoch = (sc.start - date(1970, 1, 1)).days
    for d0, n_rows in zip(starts, counts, strict=True):
        d1 = min(d0 + CHUNK_DAYS, sc.n_days)
        n_rows = int(n_rows)
        if n_rows == 0:
            continue
        # Baskets: sizes, customer, day, channel; sorted by day then customer.
        sizes = np.zeros(0, dtype=np.int64)
        while sizes.sum() < n_rows:
            more = rng.geometric(1.0 / MEAN_BASKET, size=int(n_rows / MEAN_BASKET * 1.2) + 8)
            sizes = np.concatenate([sizes, more])
        cut = int(np.searchsorted(np.cumsum(sizes), n_rows))
        sizes = sizes[: cut + 1]
        sizes[-1] -= int(sizes.sum()) - n_rows
        n_baskets = len(sizes)
        customer = _sample_cdf(people.activity_cdf, rng.random(n_baskets))
        day = d0 + _sample_cdf(np.cumsum(day_w[d0:d1]), rng.random(n_baskets))
        channel = np.where(rng.random(n_baskets) < people.p_online[customer], 2, 1)
        order = np.lexsort((customer, day))
        sizes, customer, day, channel = sizes[order], customer[order], day[order], channel[order]
        basket = np.repeat(np.arange(n_baskets), sizes)
        row_customer = customer[basket]
        row_day = day[basket]

        # Items: favourite, primary/secondary section, or anywhere, by today's popularity.
        age_days = d0 - catalogue.launch
        weight = np.where(
            age_days >= 0, catalogue.base * np.exp(-np.maximum(age_days, 0) / catalogue.tau), 0.0
        )
        u = rng.random(n_rows)
        section = np.where(
            u < p_favourite + P_PRIMARY,
            people.primary[row_customer],
            people.secondary[row_customer],
        )
        article = _section_sample(rng, weight, section, catalogue)
        anywhere = u >= p_favourite + P_PRIMARY + P_SECONDARY
        article[anywhere] = _sample_cdf(np.cumsum(weight), rng.random(int(anywhere.sum())))
        fav = people.favourites[row_customer, rng.integers(0, N_FAVOURITES, size=n_rows)]
        use_fav = (u < p_favourite) & (catalogue.launch[fav] <= d0)
        article[use_fav] = fav[use_fav]
        same = rng.random(n_rows) < P_SAME_AS_PREVIOUS
        same[1:] &= basket[1:] == basket[:-1]
        same[0] = False
        anchor = np.maximum.accumulate(np.where(same, 0, np.arange(n_rows)))
        article = article[anchor]

        keep = np.ones(n_rows, dtype=bool)
        if regime == "fashion":  # nobody buys the same article twice
            key = row_customer.astype(np.int64) * len(catalogue.launch) + article
            _, first = np.unique(key, return_index=True)
            keep[:] = False
            keep[first] = True
            keep &= ~np.isin(key, seen)
            seen = np.union1d(seen, key[keep])
        on_sale = age_days[article] > 2 * catalogue.tau[article]
        price = np.round(catalogue.price_sek[article] * np.where(on_sale, 0.75, 1.0), 2)
        yield pl.DataFrame(
            {
                _T_DAT: pl.Series(epoch + row_day[keep], dtype=pl.Int32).cast(pl.Date),
                _T_CUSTOMER: people.customer_id.gather(row_customer[keep]),
                _T_ARTICLE: catalogue.article_id.gather(article[keep]),
                _T_PRICE: price[keep] / PRICE_SCALE,
                _T_CHANNEL: channel[basket][keep].astype(np.int8),
            }
        ).select(schema.HM_TRANSACTION_COLUMNS)


def _write_csv(path: Path, frames: Iterator[pl.DataFrame]) -> int:
    """Write ``frames`` to ``path`` as one CSV (header once) via a temporary file; rows written."""
    tmp = path.with_name(f".{path.name}.tmp")
    rows = 0
    try:
        with tmp.open("wb") as f:
            for i, frame in enumerate(frames):
                frame.write_csv(f, include_header=i == 0)
                rows += frame.height
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


def generate_synthetic(
    out_dir: Path,
    scale: str = "tiny",
    seed: int = 0,
    *,
    progress: bool = True,
    regime: str = "default",
) -> dict[str, int]:
    """Write synthetic ``articles.csv``, ``customers.csv``, ``transactions_train.csv``.

    The files follow the Kaggle H&M schema exactly (see the module docstring for the
    generative model): ``article_id`` as a 10-digit string with its leading zero in both
    files, ``customer_id`` and ``postal_code`` 64 lowercase hex characters, ``t_dat``
    YYYY-MM-DD, ``price`` in H&M's scaled units (~0.002-0.6), ``sales_channel_id`` 1 or 2,
    ``age`` an integer or empty. Transactions are sorted by date. Peak memory about 1 GB
    at every scale above "small" (transactions are generated and written a week at a time).

    Args:
        out_dir: directory to write into (created if missing; existing files replaced).
        scale: a key of :data:`SCALES`: ``"tiny"`` (tests, < 1 s), ``"small"`` (seconds),
            ``"mid"`` (a fifth of H&M, for profiling), ``"hm"`` (the Kaggle size, 31.8M
            transactions, about a minute, 3.5 GB on disk).
        seed: seed for ``numpy.random.default_rng``; the same seed and scale give
            byte-identical files.
        progress: show a progress bar over the weekly transaction chunks.
        regime: a key of :data:`REGIMES`: ``"default"`` (the H&M-like mix), ``"grocery"``
            (repurchase-heavy: most lines are the customer's favourites) or ``"fashion"``
            (no repurchase: a customer's repeat of an article is dropped, so fewer rows than
            the scale's count are written).

    Returns:
        Rows written per table: ``{"articles": A, "customers": C, "transactions": T}``
        (keys from :data:`shoprec.schema.CANONICAL_TABLES`).

    Raises:
        ValueError: unknown ``scale`` or ``regime`` (the message lists the valid ones) or
            negative ``seed``.
    """
    if regime not in REGIMES:
        raise ValueError(f"unknown synthetic regime {regime!r}; valid regimes: {list(REGIMES)}")
    if scale not in SCALES:
        raise ValueError(f"unknown synthetic scale {scale!r}; valid scales: {sorted(SCALES)}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    sc = SCALES[scale]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    articles, catalogue = _articles(rng, sc)
    customers, people = _customers(rng, sc, catalogue)
    counts = {
        schema.ARTICLES: _write_csv(out_dir / schema.HM_ARTICLES_CSV, iter([articles])),
        schema.CUSTOMERS: _write_csv(out_dir / schema.HM_CUSTOMERS_CSV, iter([customers])),
    }
    chunks = tqdm(
        _transaction_chunks(rng, sc, catalogue, people, regime),
        total=-(-sc.n_days // CHUNK_DAYS),
        desc=f"synthetic {scale} transactions",
        unit="week",
        disable=not progress,
    )
    counts[schema.TRANSACTIONS] = _write_csv(out_dir / schema.HM_TRANSACTIONS_CSV, iter(chunks))
    return counts
