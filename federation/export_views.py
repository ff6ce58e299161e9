"""The export registry API: contributors (admins), exports (signed posts; reads for analysts and admins),
and the transparency log (public: anyone may check a head or a proof)."""

from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounting.models import PartitionCap, PartitionSpend
from deploy.api.auth import IsAdmin, IsAnalyst
from deploy.api.errors import ApiError
from deploy.api.parsing import object_body, parse_epsilon_micro
from federation import exports, log, rounds, selectors
from privacy.federated.canonical import loads
from federation.models import AggregateRound, Contributor, Export
from privacy.epsilon import from_micro


def _epsilon(micro: int) -> float:
    return float(from_micro(micro))


def contributor_json(row: Contributor) -> dict:
    cap = PartitionCap.objects.filter(scope=row.scope).values_list("lifetime_epsilon_micro", flat=True).first()
    spent = PartitionSpend.objects.filter(scope=row.scope, key="").values_list("spent_micro", flat=True).first()
    return {"id": row.pk, "name": row.name, "pseudonym": row.pseudonym, "public_key": bytes(row.public_key).hex(),
            "lifetime_epsilon": _epsilon(cap or 0), "epsilon_spent": _epsilon(spent or 0), "active": row.active,
            "created_at": row.created_at.isoformat()}


def export_json(row: Export, *, full: bool) -> dict:
    data = {"id": row.pk, "digest": row.digest, "contributor": row.contributor.pseudonym, "domain": row.domain,
            "segment_kinds": row.segment_kinds, "observations": row.observations,
            "epsilon": _epsilon(row.epsilon_claimed_micro), "delta": row.proof_delta,
            "epsilon_charged": _epsilon(row.epsilon_charged_micro), "log_index": row.log_entry.index,
            "received_at": row.received_at.isoformat()}
    if full:
        body = loads(row.canonical_json)
        data |= {key: body[key] for key in ("manifest", "proof", "redaction_log", "segments", "signature")}
    return data


def _contributor(contributor_id: int) -> Contributor:
    row = Contributor.objects.filter(pk=contributor_id).first()
    if row is None:
        raise ApiError("unknown_contributor", f"No contributor {contributor_id}.", http_status=404)
    return row


class ContributorsView(APIView):
    permission_classes = [IsAdmin]

    def get(self, request):
        return Response({"contributors": [contributor_json(row) for row in Contributor.objects.order_by("id")]})

    def post(self, request):
        body = object_body(request.data)
        if unknown := sorted(body.keys() - {"name", "public_key", "lifetime_epsilon"}):
            raise ApiError("unknown_field", f"Unknown field(s): {', '.join(unknown)}.", field=unknown[0])
        if not isinstance(body.get("public_key"), str):
            raise ApiError("invalid_public_key", "public_key must be a string (hex, base64 or PEM).",
                           field="public_key")
        row = exports.register_contributor(name=body.get("name"), public_key=body["public_key"],
                                           lifetime_epsilon_micro=parse_epsilon_micro(body.get("lifetime_epsilon"),
                                                                                      "lifetime_epsilon"))
        return Response(contributor_json(row), status=201)


class ContributorDeactivateView(APIView):
    permission_classes = [IsAdmin]

    def post(self, request, contributor_id: int):
        return Response(contributor_json(exports.deactivate_contributor(contributor=_contributor(contributor_id))))


class ExportsView(APIView):
    """POST takes no user credentials (a token sent is ignored): the contributor's signature authenticates it."""

    def get_permissions(self):
        return [AllowAny()] if self.request.method == "POST" else [IsAnalyst()]

    def get_authenticators(self):
        return [] if self.request.method == "POST" else super().get_authenticators()

    def get(self, request):
        rows = Export.objects.select_related("contributor", "log_entry").order_by("-id")[:500]
        return Response({"exports": [export_json(row, full=False) for row in rows]})

    def post(self, request):
        export = exports.submit_export(body=request.data)
        return Response(export_json(export, full=True), status=201)


class ExportView(APIView):
    permission_classes = [IsAnalyst]

    def get(self, request, export_id: int):
        row = Export.objects.select_related("contributor", "log_entry").filter(pk=export_id).first()
        if row is None:
            raise ApiError("unknown_export", f"No export {export_id}.", http_status=404)
        return Response(export_json(row, full=True))


class LogHeadView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get(self, request):
        return Response(log.signed_head().to_json())


class LogInclusionView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get(self, request):
        return Response(log.inclusion_proof(request.query_params.get("index"), request.query_params.get("size")))


class LogConsistencyView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get(self, request):
        return Response(log.consistency_proof(request.query_params.get("old"), request.query_params.get("new")))


# --- aggregation rounds --------------------------------------------------------------------------------


def aggregate_json(row: AggregateRound) -> dict:
    """The round's logged AggregateWeights entry, its log index, and the entry's exact canonical text."""
    return {"id": row.pk, "log_index": row.log_entry.index, "entry": loads(row.canonical_json),
            "canonical_json": row.canonical_json}


def _round_request(body: dict) -> dict:
    allowed = {"domain", "strategy", "parameters", "min_contributions", "zscore_filter"}
    if unknown := sorted(body.keys() - allowed):
        raise ApiError("unknown_field", f"Unknown field(s): {', '.join(unknown)}.", field=unknown[0])
    domain, parameters = body.get("domain"), body.get("parameters", {})
    minimum, zscore = body.get("min_contributions", rounds.DEFAULT_MIN_CONTRIBUTIONS), body.get("zscore_filter")
    if not isinstance(domain, str) or not 1 <= len(domain) <= 200:
        raise ApiError("invalid_round_parameter", "domain must be a string of 1-200 characters.", field="domain")
    if not isinstance(parameters, dict):
        raise ApiError("invalid_round_parameter", "parameters must be an object.", field="parameters")
    if isinstance(minimum, bool) or not isinstance(minimum, int) or not 2 <= minimum <= 10_000:
        raise ApiError("invalid_round_parameter", "min_contributions must be an integer in [2, 10000].",
                       field="min_contributions")
    if zscore is not None and (isinstance(zscore, bool) or not isinstance(zscore, (int, float)) or not zscore > 0):
        raise ApiError("invalid_round_parameter", "zscore_filter must be null or a positive number (the spec's "
                       "threshold is 2).", field="zscore_filter")
    return {"domain": domain, "strategy": body.get("strategy", rounds.DEFAULT_STRATEGY), "parameters": parameters,
            "min_contributions": minimum, "zscore_filter": None if zscore is None else float(zscore)}


class RoundsView(APIView):
    """POST (admin) runs a round now; GET (public) lists a domain's rounds, newest first."""

    def get_permissions(self):
        return [AllowAny()] if self.request.method == "GET" else [IsAdmin()]

    def get(self, request):
        rows = selectors.aggregate_rounds(request.query_params.get("domain"))
        return Response({"rounds": [aggregate_json(row) for row in rows]})

    def post(self, request):
        row = rounds.run_round(**_round_request(object_body(request.data)))
        return Response(aggregate_json(row), status=201)


class LatestAggregateView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get(self, request):
        domain = request.query_params.get("domain")
        row = selectors.latest_aggregate(domain)
        if row is None:
            raise ApiError("unknown_aggregate", f"No aggregation round for domain {domain!r} yet.", http_status=404)
        return Response(aggregate_json(row))
