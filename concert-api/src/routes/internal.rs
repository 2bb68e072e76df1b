//! Service-to-service calls, never routed by the gateway and left out of the public OpenAPI
//! document: payment-api reads a reservation before paying, and settles a payment directly
//! when the broker has not (DESIGN §6). Every route here requires the service credential
//! (`X-Internal-Token`, common's `require_internal_token`): 401 `INTERNAL_UNAUTHENTICATED`
//! without it.

use actix_web::http::Method;
use actix_web::middleware::from_fn;
use actix_web::{HttpResponse, web};
use common::ApiError;
use common::events::PaymentCompleted;
use common::http::internal::require_internal_token;
use common::http::{Json, UnlistedRoutes};
use common::kafka::Envelope;

use crate::domain::settlement;
use crate::error::ConcertCode;
use crate::routes::AppState;
use crate::store::reservations;

const RESERVATION: &str = "/internal/reservations/{id}";
const SETTLEMENTS: &str = "/internal/settlements";

pub fn configure(cfg: &mut web::ServiceConfig) {
    // One scope for all of `/internal`: the guard also covers a path or method that matches
    // no route here, so nothing about the internal surface is told to an unauthenticated
    // caller.
    cfg.service(
        web::scope("/internal")
            .wrap(from_fn(require_internal_token))
            .route(
                RESERVATION.trim_start_matches("/internal"),
                web::get().to(reservation),
            )
            .route(
                SETTLEMENTS.trim_start_matches("/internal"),
                web::post().to(settle),
            ),
    )
    // Not in the public document, so the 405 fallback learns their methods here.
    .app_data(web::Data::new(UnlistedRoutes::new(&[
        (RESERVATION, Method::GET),
        (SETTLEMENTS, Method::POST),
    ])));
}

/// payment-api asks this for a reservation's owner, status, `held_until` and amount.
pub async fn reservation(
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let r = reservations::find(&state.db, id).await?.ok_or_else(|| {
        ConcertCode::ReservationNotFound.err(format!("reservation {id} does not exist"))
    })?;
    Ok(HttpResponse::Ok().json(state.view(r, state.clock.now())))
}

/// payment-api's backstop: the `payment.completed` event (same envelope, same id as the one
/// in its outbox) settled exactly as the consumer settles it. Asking again, or after the
/// consumer, changes nothing and answers the same verdict.
pub async fn settle(
    state: web::Data<AppState>,
    body: Json<Envelope<PaymentCompleted>>,
) -> Result<HttpResponse, ApiError> {
    let event = body.into_inner();
    settlement::check_event(&event)?;
    let now = state.clock.now();
    let settled = settlement::settle_payment(
        &state.db,
        &state.office.inventory,
        &state.office.confirmed,
        &event,
        now,
    )
    .await?;
    state
        .sale
        .settled(&settled, &event, crate::metrics::SettledBy::Direct, now);
    tracing::info!(event_id = %event.id, first = settled.first, verdict = ?settled.verdict, "settled directly");
    Ok(HttpResponse::Ok().json(settled.verdict))
}
