from app.core.errors import Conflict, NotFound, PaymentRequired


class InsufficientCreditsError(PaymentRequired):
    code, detail = "insufficient_credits", "Not enough credits."


class IdempotencyKeyReusedError(Conflict):
    code, detail = (
        "idempotency_key_reused",
        "This Idempotency-Key was already used for a different request (another amount or reason).",
    )


class BalanceLimitError(Conflict):
    code, detail = "balance_limit_exceeded", "The balance would exceed the maximum a profile may hold."


class CreditProfileNotFoundError(NotFound):
    code, detail = "profile_not_found", "This user has no profile yet, so no credit balance to adjust."
