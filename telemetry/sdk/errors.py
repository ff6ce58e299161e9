"""The one exception type the SDK raises for server, network and state problems."""

from __future__ import annotations


class TelemetryError(Exception):
    """A request, a batch or the local state could not be handled.

    ``code`` is the server's machine-readable code for a 4xx (``http_<status>``
    when the body has none), or one of the SDK's own: ``network_error`` (one
    failed request), ``retries_exhausted``, ``bad_response``, ``state_corrupt``,
    ``flush_failed``. ``retained`` is True when the batch concerned is still in
    the spool and will be resent by a later flush.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        batch_id: str | None = None,
        retained: bool = False,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.batch_id = batch_id
        self.retained = retained


class FlushError(TelemetryError):
    """Some batches of a flush failed; the others were delivered.

    ``responses`` holds the server's answers for the delivered batches and
    ``errors`` one :class:`TelemetryError` per failed batch.
    """

    def __init__(self, responses: list[dict], errors: list[TelemetryError]) -> None:
        kept = sum(error.retained for error in errors)
        super().__init__(
            "flush_failed",
            f"{len(errors)} batch(es) failed ({kept} kept in the spool for a later flush); "
            f"first: {errors[0]}",
        )
        self.responses = responses
        self.errors = errors


class PrivacyRefused(TelemetryError):
    """``record()`` refused a metric definition on privacy grounds, before spending anything.

    ``code``: ``epsilon_above_ceiling`` (its ε is above the client's ``max_local_epsilon``),
    ``change_epsilon_above_ceiling`` (its per-change ε is above ``max_change_epsilon``) or
    ``epsilon_raised`` (its ε or per-report ε rose above what this client accepted before for
    that metric; ``TelemetryClient.accept_epsilon`` accepts it).
    """
