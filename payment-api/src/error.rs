//! The codes only payment-api answers with, declared once (the platform's own —
//! `INVALID_REQUEST`, `NOT_FOUND`, `QUEUE_TOKEN_INVALID`, `DEPENDENCY_UNAVAILABLE`, … — are
//! `common::error::Code`). The domain's typed errors name one of these; nothing else spells a
//! code.

common::error_codes! {
    /// payment-api's error catalogue (API.md, payment-api).
    pub enum PaymentCode {
        /// The wallet holds less than the reservation's amount.
        InsufficientBalance = PAYMENT_REQUIRED "INSUFFICIENT_BALANCE",
        /// This user's payment of the reservation stands, or concert-api has it confirmed.
        AlreadyPaid = CONFLICT "ALREADY_PAID",
        /// The hold has ended, or ends within the payment cutoff.
        HoldExpired = CONFLICT "HOLD_EXPIRED",
        /// A cancelled or rejected reservation.
        ReservationNotPayable = CONFLICT "RESERVATION_NOT_PAYABLE",
        /// A charge would take the wallet past `WALLET_MAX_BALANCE`.
        BalanceLimit = CONFLICT "BALANCE_LIMIT",
        /// The first request with this key is still running; sent with `Retry-After`.
        IdempotencyKeyInUse = CONFLICT "IDEMPOTENCY_KEY_IN_USE",
        /// The key came with a different request.
        IdempotencyKeyReused = UNPROCESSABLE_ENTITY "IDEMPOTENCY_KEY_REUSED",
    }
}
