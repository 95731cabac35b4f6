"""A silo's labelled data, read from its own folder or S3 prefix (spec.data.sources).

A source holds `.npz` files (arrays `x`, one row per sample, and `y`, integer labels) and/or
`.csv` files (numbers only, an optional header line, the label in the last column); every file
under the location is read, in key order, and the rows concatenated. Other files are ignored.
"""

from __future__ import annotations

import io

import numpy as np

from fedkube.spec.model import DataSourceSpec
from fedkube.spec.sources import data_uri
from fedkube.stores import Store, open_store

SUFFIXES = (".npz", ".csv")


class SourceDataError(ValueError):
    """A data source that holds no readable data; the message names the object's URI."""


def open_source(source: DataSourceSpec) -> Store:
    """The store rooted at one partition's data: its mounted claim, its folder or its S3 prefix."""
    endpoint = source.object_store.endpoint_url if source.object_store is not None else None
    return open_store(data_uri(source), endpoint)


def _npz(url: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        missing = {"x", "y"} - set(arrays.files)
        if missing:
            raise SourceDataError(f"{url}: no array {' or '.join(sorted(missing))} (an .npz source holds x and y)")
        return arrays["x"], arrays["y"]


def _numeric(line: str) -> bool:
    try:
        [float(v) for v in line.split(",")]
    except ValueError:
        return False
    return True


def _csv(url: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    lines = data.decode().splitlines()
    if lines and not _numeric(lines[0]):
        lines = lines[1:]  # a header
    try:
        table = np.loadtxt(lines, delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise SourceDataError(f"{url}: not a numeric CSV: {exc}") from exc
    if table.shape[1] < 2:
        raise SourceDataError(f"{url}: a CSV source needs feature columns and a label column")
    return table[:, :-1], table[:, -1]


def read_labelled_arrays(store: Store) -> tuple[np.ndarray, np.ndarray]:
    """Features (float64, one row per sample) and integer labels from every data file in `store`."""
    keys = [k for k in store.list() if k.endswith(SUFFIXES)]
    if not keys:
        raise SourceDataError(f"no {' or '.join(SUFFIXES)} files under {store.uri}")
    parts = [(_npz if key.endswith(".npz") else _csv)(store.url(key), store.get(key)) for key in keys]
    rows = [np.asarray(x, dtype=np.float64).reshape(len(x), -1) for x, _ in parts]
    widths = {key: r.shape[1] for key, r in zip(keys, rows, strict=True)}
    if len(set(widths.values())) > 1:
        raise SourceDataError(f"{store.uri}: files disagree on the number of features: {widths}")
    features = np.concatenate(rows)
    labels = np.concatenate([np.asarray(y).reshape(-1) for _, y in parts])
    if len(features) != len(labels):
        raise SourceDataError(f"{store.uri}: {len(features)} feature rows but {len(labels)} labels")
    if not np.array_equal(labels, np.round(labels)):
        raise SourceDataError(f"{store.uri}: labels must be integer class numbers")
    return features, labels.astype(np.int64)
