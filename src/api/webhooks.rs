//! `POST /v1/pushes/{id}/webhooks/retry`: re-queue a push's given-up webhook events (issue 11).

use axum::{
    Extension, Json,
    extract::{Path, State},
};
use serde::Serialize;

use super::{Problem, SharedState, Tenant};

/// How many given-up events went back into the outbox.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookRetry {
    pub requeued: u64,
}

#[utoipa::path(post, path = "/v1/pushes/{id}/webhooks/retry", params(("id" = String, Path)),
    description = "Puts the push's given-up webhook events back into the outbox, due now; their \
                   age (webhooks.max_age_seconds) counts again from now. 0 when none was given up.",
    responses((status = 200, body = WebhookRetry), (status = 404, body = Problem),
              (status = 503, body = Problem)),
    security(("bearer" = [])))]
pub async fn retry(
    State(st): State<SharedState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<Json<WebhookRetry>, Problem> {
    let Some(outbox) = st.store.outbox() else {
        return Err(Problem::not_found("push", &id));
    };
    match outbox
        .requeue_webhooks(&tenant, &id, crate::domain::now_ms())
        .await?
    {
        Some(requeued) => Ok(Json(WebhookRetry { requeued })),
        None => Err(Problem::not_found("push", &id)),
    }
}
