"""The live drift profile per model version, kept in shared Prometheus counters (one per bin).

Counts go through the same multiprocess files as every metric, so every worker sees the sum of
all workers' observations: the live profile is shared without another store. The report and the
`drift_psi` gauge cover traffic since the service started (the metrics directory is wiped at
start-up). The recent window is Prometheus's: a recording rule takes `increase()` of the bin
counters over it and compares it with `drift_reference_share` by the same formula
(deploy/prometheus/alerts.yml), and the alert compares that with `drift_psi_threshold`.
"""

from __future__ import annotations

import bisect

from prometheus_client.core import GaugeMetricFamily

from service.observability import metrics
from shared_features import LoadedModel
from shared_features.drift import FEATURES, bin_counts, drift_report, feature_values, reference_counts, smoothed_shares


class DriftMonitor:
    def __init__(self, models: dict[str, LoadedModel]) -> None:
        self._children = {}
        self._reference_shares: dict[tuple[str, str], list[float]] = {}  # exported for windowed PSI
        self.set_models(models)

    def set_models(self, models: dict[str, LoadedModel]) -> None:
        """The models to watch (the rollout loads and unloads them while serving)."""
        for version, model in models.items():
            profile = model.manifest.get("reference_profile")
            if not profile or (version, FEATURES[0]) in self._children:
                continue
            # Counter children resolved once: labels() per text would dominate the cost.
            for feature in FEATURES:
                bins = len(profile["features"][feature]["edges"]) + 1
                self._children[(version, feature)] = [
                    metrics.DRIFT_OBSERVATIONS.labels(version, feature, str(i)) for i in range(bins)
                ]
                # fixed by the artifact: computed once, not at every scrape
                shares = smoothed_shares(reference_counts(profile, feature))
                self._reference_shares[(version, feature)] = [float(share) for share in shares]
        self.models = models

    def observe(self, model: LoadedModel, raw: list[str], normalised: list[str], scores, oov=None) -> None:
        profile = model.manifest.get("reference_profile")
        if not profile:
            return
        if len(raw) == 1 and oov is not None:
            # The common case, one text: plain floats and bisect (the same bins as searchsorted's
            # side="left"); building three numpy arrays for one value each cost more than the rest.
            one = {"text_length": float(len(raw[0])), "oov_rate": float(oov[0]), "score": float(scores[0])}
            for feature in FEATURES:
                edges = profile["features"][feature]["edges"]
                self._children[(model.version, feature)][bisect.bisect_left(edges, one[feature])].inc()
            return
        values = feature_values(model, raw, normalised, scores, oov)
        for feature in FEATURES:
            children = self._children[(model.version, feature)]
            edges = profile["features"][feature]["edges"]
            for index, count in enumerate(bin_counts(values[feature], edges)):
                if count:
                    children[index].inc(int(count))

    def live_counts(self, version: str) -> dict[str, list[float]]:
        totals = metrics.read_counter("drift_observations")
        counts: dict[str, list[float]] = {}
        for (feature_version, feature), children in self._children.items():
            if feature_version != version:
                continue
            row = [0.0] * len(children)
            for labels, value in totals.items():
                found = dict(labels)
                if found["model_version"] == version and found["feature"] == feature:
                    row[int(found["bin"])] = value
            counts[feature] = row
        return counts

    def report(self, model: LoadedModel, threshold: float) -> dict:
        profile = model.manifest.get("reference_profile")
        if not profile:
            return {
                "model_version": model.version,
                "available": False,
                "message": "this model's manifest has no reference profile (retrain to add one)",
            }
        return {
            "model_version": model.version,
            "available": True,
            **drift_report(profile, self.live_counts(model.version), threshold),
        }

    def collector(self, threshold: float):
        monitor = self

        class DriftCollector:
            def collect(self):
                family = GaugeMetricFamily(
                    "drift_psi",
                    "Population stability index of live data since start vs the training "
                    "reference (absent below the minimum sample)",
                    labels=["model_version", "feature"],
                )
                shares = GaugeMetricFamily(
                    "drift_reference_share",
                    "Training share of each drift bin, smoothed as the PSI smooths it (for windowed PSI in PromQL)",
                    labels=["model_version", "feature", "bin"],
                )
                for version, model in monitor.models.items():
                    report = monitor.report(model, threshold)
                    for feature, result in report.get("features", {}).items():
                        if result["psi"] is not None:
                            family.add_metric([version, feature], result["psi"])
                    for feature in FEATURES:
                        for index, share in enumerate(monitor._reference_shares.get((version, feature), ())):
                            shares.add_metric([version, feature, str(index)], share)
                yield family
                yield shares
                yield GaugeMetricFamily("drift_psi_threshold", "TOXISERVE_DRIFT_PSI_THRESHOLD", value=threshold)

        return DriftCollector()
