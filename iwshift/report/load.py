"""Every results folder under a root, read through the one loader (:func:`iwshift.results.load_runs`) into one
table whose rows also say where they come from: the study, the data, the preset and the device (never pooled
across), and the strength of the run's regularisation."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import results
from ..checks import ConfigError
from ..config import (BINARY_PRESETS, EXTENSION_PRESETS, BinaryConfig, ExtensionConfig, SyntheticConfig,
                      with_preset)

STUDIES = ("synthetic", "synthetic_extreme", "cifar_binary", "cifar_extension")


@dataclass
class Results:
    """Every run under a root: ``table`` (each run's metrics rows, with ``source``, ``study`` and the provenance
    columns ``_data``, ``_preset``, ``_device``, ``_l2`` and ``_dropout``) and each run's record by (source, run)."""

    table: pd.DataFrame
    records: dict[tuple[str, str], dict[str, Any]]

    def study(self, name: str, source: str | None = None) -> pd.DataFrame:
        """The rows of one study (of one source folder, when given)."""
        if self.table.empty:
            return self.table
        rows = self.table[self.table["_study"] == name]
        return rows if source is None else rows[rows["source"] == source]

    def sources(self, study: str) -> list[str]:
        return sorted(self.study(study)["source"].unique()) if not self.table.empty else []

    def substitute(self, source: str, other: str) -> Results:
        """These results with the runs of ``other`` in place of those of ``source`` (a rerun, as if it were the
        original)."""
        table = self.table[self.table["source"] != source]
        table = table.assign(source=table["source"].replace({other: source}))
        return Results(table, self.records)


def preset_label(config: dict[str, Any], presets: dict[str, dict[str, Any]], keys: Sequence[str]) -> str:
    """The preset whose ``keys`` match ``config``; else ``custom (<closest> with k=v, ...)``."""
    def plain(x: Any) -> Any:  # JSON lists and tuples, ints and floats compare equal
        if isinstance(x, (list, tuple)):
            return [plain(y) for y in x]
        return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x

    differ = {name: [k for k in keys if plain(config.get(k)) != plain(preset.get(k))]
              for name, preset in presets.items()}
    best = min(differ, key=lambda name: len(differ[name]))
    if not differ[best]:
        return best
    return f"custom ({best} with " + ", ".join(f"{k}={config.get(k)}" for k in differ[best]) + ")"


def device_label(record: dict[str, Any]) -> str:
    device = str(record.get("device", "unknown"))
    return f"{device} ({record['device_name']})" if record.get("device_name") else device


def data_label(source: str) -> str:
    if source.startswith("2-D"):
        return source
    return "official CIFAR-10 (torchvision)" if "official" in source else f"other copy ({source})"


PRESETS = {
    "cifar_binary": ({name: asdict(with_preset(BinaryConfig, name, BINARY_PRESETS)) for name in BINARY_PRESETS},
                     ("width", "per_class", "epochs")),
    "cifar_extension": ({name: asdict(with_preset(ExtensionConfig, name, EXTENSION_PRESETS))
                         for name in EXTENSION_PRESETS}, ("width", "epochs", "source_counts")),
    "synthetic": ({"paper": asdict(SyntheticConfig())},
                  ("epochs", "n_per_class", "n_moons", "lr_scale", "batch_size", "hidden")),
}
PRESETS["synthetic_extreme"] = PRESETS["synthetic"]


def load(root: str | Path) -> Results:
    """Every run under ``root`` (a bad results file is a one-line ConfigError naming it)."""
    try:
        table, records = results.load_runs(root)
    except results.BadResultFile as err:
        raise ConfigError("results", f"bad results file {err}") from None
    if table.empty:
        return Results(table, records)
    keys = list(zip(table["source"], table["run"].astype(str)))
    per_run: dict[tuple[str, str], dict[str, Any]] = {}
    for key, record in records.items():
        study = record.get("study", "unknown")
        config = record.get("config", {})
        presets, fields = PRESETS.get(study, ({}, ()))
        row = record["run"]
        per_run[key] = {
            "_study": study, "_data": data_label(str(record.get("data", "unknown"))),
            "_preset": preset_label(config, presets, fields) if presets else "—", "_device": device_label(record),
            "_l2": float(config.get("l2", 0.0)) if row.get("regime") == "l2" else 0.0,
            "_dropout": float(config.get("dropout", 0.0)) if row.get("regime") == "dropout" else 0.0}
    extra = pd.DataFrame([per_run[k] for k in keys], index=table.index)
    return Results(pd.concat([table, extra], axis=1), records)


def last_epoch(table: pd.DataFrame) -> pd.DataFrame:
    """Each run's last evaluated row."""
    return table[table["epoch"] == table.groupby(["source", "run"])["epoch"].transform("max")]


def final_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Each run's reported row: the last evaluated epoch, or for early stopping the evaluated epoch with the
    lowest importance-weighted validation loss (the best checkpoint)."""
    last = table["epoch"] == table.groupby(["source", "run"])["epoch"].transform("max")
    stopping = table["remedy"] == "early_stop" if "remedy" in table else pd.Series(False, index=table.index)
    if not stopping.any():
        return table[last]
    best = table[stopping].loc[lambda t: t.groupby(["source", "run"])["val_loss_weighted"].idxmin()]
    return pd.concat([table[last & ~stopping], best]).sort_index()


def provenance_groups(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """``rows`` split by (data, preset, device): never pooled; each with a tag for its row label ("" for the
    first, the most common, ``cpu``-preset group)."""
    if rows.empty:
        return []
    groups = list(rows.groupby(["_preset", "_data", "_device"], sort=True))
    groups.sort(key=lambda g: (g[0][0] != "cpu", -g[1]["run"].nunique()))
    return [("" if i == 0 else f" ({key[0]}; {key[2]})", part) for i, (key, part) in enumerate(groups)]


def n_seeds(rows: pd.DataFrame) -> int:
    return int(rows["seed"].nunique()) if len(rows) else 0


def finite(values: pd.Series) -> pd.Series:
    return values[np.isfinite(values.astype(float))]
