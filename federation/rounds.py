"""Aggregation rounds: the accepted, not yet aggregated exports of one domain -> AggregateWeights, logged.

``run_round`` (an admin's ``POST /api/v1/federation/rounds``, or the Celery task
``federation.tasks.run_aggregation_round``) takes, in one transaction under the log's append lock:

1. every export of the domain not yet in a round that carries a ``lora_weights`` segment, locked;
2. checks each one's log entry: the stored entry is the export's body and its inclusion proof verifies
   against the log's current root (else ``409 log_integrity_failed``, spec ``WitnessChainBroken``);
3. keeps one export per contributor, its newest (one vote each: robust rules count contributors), and of
   those the ones whose weights are a finite vector of the round's dimension (the most common); the others
   are named in the entry (``superseded``, ``excluded``), so a malformed export cannot hold up the rounds;
4. runs the strategy (``federation.aggregation``) over their weight vectors, with ``manifest.observations``
   as the trajectory count and ``manifest.quality`` as the quality; fewer than ``min_contributions``
   (before or after the optional z-score pre-filter) is ``409 insufficient_contributions``;
5. pools the used exports' ``transfer_prior`` segments per (bucket, arm) (``privacy.federated.priors``);
6. stores the AggregateWeights entry (round number, participation count, confidences, the digests of the
   exports used, the pseudonyms dropped as outliers) and appends its canonical bytes to the transparency log.

Every export offered to the round is marked as taken by it, used, dropped, superseded or excluded, so none
is offered again. Aggregates are post-processing of DP exports: they cost no budget and are public.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from deploy.api.errors import ApiError
from federation import aggregation, log
from federation.models import AggregateRound, Export
from privacy.federated import transparency
from privacy.federated.canonical import canonical_bytes, loads
from privacy.federated.priors import BetaPrior, InvalidPrior, merge_priors

AGGREGATE_KIND = "aggregate_weights"
FORMAT_VERSION = 1
WEIGHTS_KIND = "lora_weights"
PRIOR_KIND = "transfer_prior"
DEFAULT_MIN_CONTRIBUTIONS = 3


@dataclass(frozen=True)
class _Param:
    name: str
    parse: Callable[[object], object]


def _number(low: float, high: float, *, integer: bool = False, closed_high: bool = True):
    def parse(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError
        if integer and not float(value).is_integer():
            raise ValueError
        if not (low <= value and (value <= high if closed_high else value < high)):
            raise ValueError
        return int(value) if integer else float(value)
    return parse


# name -> (strategy class, its parameters the request may set)
STRATEGIES: dict[str, tuple[type, tuple[_Param, ...]]] = {
    "fedavg": (aggregation.FedAvg, ()),
    "fedprox": (aggregation.FedProx, (_Param("mu", _number(0, 1e6)),)),
    "weighted_average": (aggregation.WeightedAverage, ()),
    "median": (aggregation.CoordinateMedian, ()),
    "trimmed_mean": (aggregation.TrimmedMean, (_Param("beta", _number(0, 0.5, closed_high=False)),)),
    "norm_bounding": (aggregation.NormBounding, (_Param("bound", _number(1e-12, 1e12)),)),
    "multi_krum": (aggregation.MultiKrum, (_Param("f", _number(0, 10**6, integer=True)),
                                           _Param("m", _number(1, 10**6, integer=True)),
                                           _Param("byzantine_fraction", _number(0, 0.5, closed_high=False)))),
    "spectral": (aggregation.SpectralFilter, (_Param("max_fraction", _number(0, 0.5, closed_high=False)),
                                              _Param("spike_factor", _number(1, 1e6)))),
}
DEFAULT_STRATEGY = "spectral"


def _bad(message: str, field: str) -> ApiError:
    return ApiError("invalid_round_parameter", message, field=field)


def build_strategy(name: str, parameters: dict, *, min_contributions: int, zscore_filter: float | None):
    """The strategy object for a round request; ``invalid_round_parameter`` on an unknown name or bad value."""
    if name not in STRATEGIES:
        raise _bad(f"strategy must be one of {sorted(STRATEGIES)}.", "strategy")
    cls, allowed = STRATEGIES[name]
    if unknown := sorted(parameters.keys() - {p.name for p in allowed}):
        raise _bad(f"{name} takes no parameter {unknown[0]!r} (it takes {[p.name for p in allowed]}).", unknown[0])
    values = {}
    for param in allowed:
        if param.name in parameters:
            try:
                values[param.name] = param.parse(parameters[param.name])
            except ValueError:
                raise _bad(f"{param.name} is out of range for {name}.", param.name) from None
    prefilter = None if zscore_filter is None else aggregation.ZScoreNormFilter(threshold=zscore_filter)
    return cls(min_contributions=min_contributions, prefilter=prefilter, **values)


def _weights(body: dict) -> list[float] | None:
    for segment in body["segments"]:
        if segment.get("kind") == WEIGHTS_KIND:
            return segment.get("values")
    return None


def _priors(body: dict) -> dict[tuple[str, str], BetaPrior]:
    found = {}
    for segment in body["segments"]:
        if segment.get("kind") == PRIOR_KIND:
            try:
                prior = BetaPrior(segment.get("alpha"), segment.get("beta"))
            except InvalidPrior:
                continue  # a prior the merge cannot use is left out of the pool, not the round
            key = (str(segment.get("bucket")), str(segment.get("arm")))
            found = merge_priors(found, {key: prior}, FORMAT_VERSION, FORMAT_VERSION)
    return found


def _check_logged(export: Export, root: bytes, size: int) -> None:
    """The export's log entry is its body, and the log's tree proves it (spec WitnessChainBroken otherwise)."""
    entry = export.log_entry
    leaf = transparency.leaf_hash(export.canonical_json.encode())
    path = transparency.inclusion_path(log.subtree, entry.index, size)
    if bytes(entry.entry) != export.canonical_json.encode() or bytes(entry.leaf_hash) != leaf \
            or not transparency.verify_inclusion(leaf, entry.index, size, path, root):
        raise ApiError("log_integrity_failed", f"Export {export.pk} does not match its transparency-log entry "
                       f"{entry.index}: the stored log was edited. Run manage.py verify_log.", http_status=409)


@dataclass(frozen=True)
class _Selection:
    used: list[Export]
    contributions: list[aggregation.Contribution]
    superseded: list[Export]  # an older pending export of a contributor that has a newer one
    excluded: list[Export]  # weights that are no finite vector of the round's dimension


def _select(exports: list[Export]) -> _Selection:
    """The newest pending export of each contributor (one vote per contributor and round), and of those the ones
    whose weights are a finite vector of the round's dimension (the most common one; ties: the earliest). A
    malformed export is left out and named, so that it cannot hold up the domain's rounds."""
    newest = {export.contributor_id: export for export in exports}  # ordered by id: the last one wins
    superseded = [export for export in exports if newest[export.contributor_id] is not export]
    candidates, excluded = [], []
    for export in newest.values():
        manifest = loads(export.canonical_json)["manifest"]
        try:
            candidates.append((export, aggregation.Contribution(
                vector=_weights(loads(export.canonical_json)), trajectory_count=manifest["observations"],
                quality=min(1.0, max(0.0, float(manifest.get("quality", 1.0)))),
                contributor=export.contributor.pseudonym)))
        except (aggregation.AggregationError, TypeError, ValueError):
            excluded.append(export)
    dimensions = Counter(contribution.vector.size for _, contribution in candidates)
    dimension = dimensions.most_common(1)[0][0] if dimensions else None
    excluded += [export for export, contribution in candidates if contribution.vector.size != dimension]
    kept = [(export, contribution) for export, contribution in candidates if contribution.vector.size == dimension]
    return _Selection([export for export, _ in kept], [contribution for _, contribution in kept], superseded,
                      sorted(excluded, key=lambda export: export.pk))


def _aggregate(rule, contributions: list[aggregation.Contribution]) -> aggregation.AggregateResult:
    try:
        return rule.aggregate(contributions)
    except aggregation.InsufficientContributions as exc:  # e.g. left after the pre-filter, or Krum's n >= 2f + 3
        raise ApiError("insufficient_contributions", exc.message, http_status=409) from None
    except aggregation.ZeroTotalWeight as exc:
        raise ApiError("zero_total_weight", exc.message, http_status=409) from None
    except aggregation.AggregationError as exc:  # a parameter that does not fit this round (Krum's m > n)
        raise ApiError("invalid_round_parameter", exc.message) from None


def run_round(*, domain: str, strategy: str = DEFAULT_STRATEGY, parameters: dict | None = None,
              min_contributions: int = DEFAULT_MIN_CONTRIBUTIONS, zscore_filter: float | None = None) -> AggregateRound:
    """Aggregate the domain's pending exports (module docstring) and log the result; or raise, writing nothing."""
    rule = build_strategy(strategy, parameters or {}, min_contributions=min_contributions, zscore_filter=zscore_filter)
    with transaction.atomic():
        log.lock()
        candidates = list(Export.objects.select_for_update(of=("self",)).select_related("contributor", "log_entry")
                          .filter(domain=domain, aggregated_in__isnull=True).order_by("id"))
        exports = [export for export in candidates if _weights(loads(export.canonical_json)) is not None]
        size = log.size()
        root = log.root(size)
        for export in exports:
            _check_logged(export, root, size)
        selection = _select(exports)
        if len(selection.used) < min_contributions:
            raise ApiError("insufficient_contributions", f"A round needs at least {min_contributions} contributors "
                           f"with {WEIGHTS_KIND} weights of one dimension; domain {domain!r} has "
                           f"{len(selection.used)} pending.", http_status=409)
        result = _aggregate(rule, selection.contributions)
        dropped = set(result.dropped)
        used = [export for export in selection.used if export.contributor.pseudonym not in dropped]
        pooled: dict = {}
        for export in used:
            pooled = merge_priors(pooled, _priors(loads(export.canonical_json)), FORMAT_VERSION, FORMAT_VERSION)
        number = (AggregateRound.objects.filter(domain=domain).order_by("-number")
                  .values_list("number", flat=True).first() or 0) + 1
        entry = {
            "kind": AGGREGATE_KIND, "format_version": FORMAT_VERSION, "domain": domain, "round": number,
            "strategy": strategy, "parameters": dict(sorted((parameters or {}).items())),
            "min_contributions": min_contributions, "zscore_filter": zscore_filter,
            "participation_count": result.participation_count,
            "weights": [float(w) for w in result.weights], "confidences": [float(c) for c in result.confidences],
            "contributions": [export.digest for export in used],
            "dropped": sorted(dropped),
            "superseded": [export.digest for export in selection.superseded],
            "excluded": [export.digest for export in selection.excluded],
            "priors": [{"bucket": bucket, "arm": arm, "alpha": prior.alpha, "beta": prior.beta}
                       for (bucket, arm), prior in sorted(pooled.items())],
            "created_at": timezone.now().isoformat(timespec="seconds"),
        }
        text = canonical_bytes(entry).decode()
        row = AggregateRound.objects.create(domain=domain, number=number, strategy=strategy,
                                            participation_count=result.participation_count,
                                            dimension=len(entry["weights"]), canonical_json=text)
        Export.objects.filter(pk__in=[export.pk for export in exports]).update(aggregated_in=row)
        log.append(text.encode(), aggregate=row)
    return row
