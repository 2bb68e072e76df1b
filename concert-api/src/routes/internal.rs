//! Service-to-service calls, never routed by the gateway: payment-api reads a reservation
//! before paying, and settles a payment directly when the broker has not (DESIGN §6).

use actix_web::{HttpResponse, web};
use chrono::Utc;
use common::ApiError;
use common::events::PaymentCompleted;
use common::http::Json;
use common::kafka::Envelope;

use crate::domain::reservation::ReservationView;
use crate::domain::settlement::{self, Verdict};
use crate::routes::AppState;
use crate::store::reservations;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/internal/reservations/{id}", web::get().to(reservation))
        .route("/internal/settlements", web::post().to(settle));
}

/// payment-api asks this for a reservation's owner, status, `held_until` and amount.
#[utoipa::path(get, path = "/internal/reservations/{id}", responses((status = 200, body = ReservationView), (status = 404)))]
pub async fn reservation(
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let row = reservations::find(&state.db, id).await?.ok_or_else(|| {
        ApiError::not_found(
            "RESERVATION_NOT_FOUND",
            format!("reservation {id} does not exist"),
        )
    })?;
    Ok(HttpResponse::Ok().json(ReservationView::at(row, state.stale_before(Utc::now()))))
}

/// payment-api's backstop: the `payment.completed` event (same envelope, same id as the one
/// in its outbox) settled exactly as the consumer settles it. Asking again, or after the
/// consumer, changes nothing and answers the same verdict.
#[utoipa::path(post, path = "/internal/settlements",
    request_body(content = Object, description = "the `payment.completed` event envelope (DESIGN §6)"),
    responses((status = 200, body = Verdict), (status = 400)))]
pub async fn settle(
    state: web::Data<AppState>,
    body: Json<Envelope<PaymentCompleted>>,
) -> Result<HttpResponse, ApiError> {
    let event = body.into_inner();
    settlement::check_event(&event)?;
    let settled = settlement::settle_payment(&state.db, &event).await?;
    tracing::info!(event_id = %event.id, first = settled.first, verdict = ?settled.verdict, "settled directly");
    Ok(HttpResponse::Ok().json(settled.verdict))
}
