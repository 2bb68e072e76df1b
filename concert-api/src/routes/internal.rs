//! Service-to-service reads, never routed by the gateway.

use actix_web::{HttpResponse, web};
use chrono::Utc;
use common::ApiError;

use crate::domain::reservation::ReservationView;
use crate::routes::AppState;
use crate::store::reservations;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/internal/reservations/{id}", web::get().to(reservation));
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
