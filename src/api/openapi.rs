//! The OpenAPI document, generated from the handlers and DTOs (utoipa).

use axum::Json;
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use super::{admin, devices, problem::Problem, pushes, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(title = "dmpushd", description = "OMA DM push gateway REST API (DESIGN §5)"),
    paths(
        devices::put, devices::get, devices::delete, devices::list,
        pushes::create, pushes::batch, pushes::raw_push, pushes::preview, pushes::get, pushes::list,
        pushes::cancel, webhooks::retry,
        admin::status, admin::suspend, admin::resume,
    ),
    components(schemas(
        Problem, devices::DeviceBody, devices::DeviceView, devices::DeviceList,
        pushes::PushRequest, pushes::Submitted, pushes::PushView, pushes::EventView, pushes::PushList,
        pushes::BatchItem, pushes::BatchResult, pushes::PreviewResult, pushes::BindingPreview,
        crate::domain::DeviceBinding, crate::domain::HmacCredentials, crate::domain::DmCredentials,
        webhooks::WebhookRetry,
    )),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
