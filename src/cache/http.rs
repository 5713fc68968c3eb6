//! The read API on the admin server: `GET /orders/{id}` and `GET /accounts/{id}/orders`, served
//! from the [`OrderCache`].
//!
//! Order data is customer data, so every read needs the viewer token (`SFCDC_READ_TOKEN`) or the
//! operator token (`SFCDC_ADMIN_TOKEN`): 401 without one or with a wrong one, 403 when neither
//! is configured (see `api::auth`). The token is
//! checked first and the id second, both before the cache is touched: a refused request never
//! reaches Salesforce. Ids must be Salesforce ids of the right object (15 or 18 letters and
//! digits, the checksum of an 18-character id matching, `801` for an order and `001` for an
//! account); anything else is a 400 that says why. Answers show only the configured read fields.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value as Json, json};

use super::{LoadError, OrderCache, OrderSource};
use crate::api::ApiError;
use crate::api::auth::{Access, Role};
use crate::sfid::SfId;

/// Key prefix of Order ids.
const ORDER_PREFIX: &str = "801";
/// Key prefix of Account ids.
const ACCOUNT_PREFIX: &str = "001";

struct ReadState<S> {
    cache: Arc<OrderCache<S>>,
    access: Access,
}

impl<S> Clone for ReadState<S> {
    fn clone(&self) -> Self {
        ReadState {
            cache: self.cache.clone(),
            access: self.access.clone(),
        }
    }
}

/// The read routes, to merge into the admin router, guarded by `access`.
pub fn router<S: OrderSource>(cache: Arc<OrderCache<S>>, access: Access) -> Router {
    Router::new()
        .route("/orders/{id}", get(order::<S>))
        .route("/accounts/{id}/orders", get(account_orders::<S>))
        .with_state(ReadState { cache, access })
}

/// Parses a path id of the object with key prefix `prefix`.
fn parse_id(raw: &str, prefix: &str, object: &str) -> Result<SfId, ApiError> {
    let id = SfId::parse(raw).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the {object} id is not a Salesforce id: {e}"),
        )
    })?;
    if id.key_prefix() != prefix {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{id} is not an {object} id: {object} ids begin with {prefix}, this one with {}",
                id.key_prefix()
            ),
        ));
    }
    Ok(id)
}

fn load_error(e: &LoadError) -> ApiError {
    if e.is_retryable() {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{e}; try again shortly"),
        )
    } else {
        ApiError::new(StatusCode::BAD_GATEWAY, e.to_string())
    }
}

fn project(record: &Map<String, Json>, fields: &[String]) -> Json {
    let mut out = Map::with_capacity(fields.len() + 1);
    if let Some(id) = record.get("Id") {
        out.insert("Id".into(), id.clone());
    }
    for f in fields {
        out.insert(f.clone(), record.get(f).cloned().unwrap_or(Json::Null));
    }
    Json::Object(out)
}

/// An order and its items, as `GET /orders/{id}` answers.
#[derive(utoipa::ToSchema)]
pub struct OrderRead {
    /// The order's configured fields (`SFCDC_ORDER_FIELDS`), with its `Id`.
    #[schema(value_type = Object)]
    pub order: Json,
    /// Its items' configured fields.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Json>,
    /// When it was read from Salesforce (RFC 3339).
    pub loaded_at: String,
}

/// An account's orders, as `GET /accounts/{id}/orders` answers.
#[derive(utoipa::ToSchema)]
pub struct AccountOrders {
    /// The account.
    pub account_id: String,
    /// Its orders, newest `EffectiveDate` first.
    #[schema(value_type = Vec<Object>)]
    pub orders: Vec<Json>,
    /// Whether there are more than `SFCDC_ACCOUNT_ORDERS_LIMIT`.
    pub truncated: bool,
    /// When the list was read from Salesforce (RFC 3339).
    pub loaded_at: String,
}

/// The read API's part of the admin server's OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(order, account_orders))]
pub struct ReadApi;

#[utoipa::path(get, path = "/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path, pattern = r"^801[0-9A-Za-z]{12}([0-9A-Za-z]{3})?$",
        description = "An Order id: 15 or 18 characters beginning 801 (an 18-character id's last three are its checksum; a wrong one is 400)")),
    responses(
        (status = 200, description = "The order, from the cache or Salesforce", body = OrderRead),
        (status = 404, description = "There is no such order", body = crate::api::openapi::ErrorBody),
        (status = 400, description = "Not a Salesforce id of the right object", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No token, or one that is neither role's", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "No role's token is configured", body = crate::api::openapi::ErrorBody),
        (status = 502, description = "Salesforce refused the read", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "Salesforce is unavailable for now; try again", body = crate::api::openapi::ErrorBody)))]
async fn order<S: OrderSource>(
    State(state): State<ReadState<S>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    if let Err(e) = state.access.require(&headers, Role::Viewer) {
        return e.into_response();
    }
    let id = match parse_id(&raw, ORDER_PREFIX, "Order") {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let entry = match state.cache.order(&id).await {
        Ok(e) => e,
        Err(e) => return load_error(&e).into_response(),
    };
    let Some(record) = &entry.record else {
        return ApiError::new(StatusCode::NOT_FOUND, format!("there is no order {id}"))
            .into_response();
    };
    let config = state.cache.config();
    axum::Json(json!({
        "order": project(record, &config.order_fields),
        "items": entry.items.iter().map(|i| project(i, &config.item_fields)).collect::<Vec<_>>(),
        "loaded_at": crate::clock::rfc3339(entry.loaded_at_ms),
    }))
    .into_response()
}

#[utoipa::path(get, path = "/accounts/{id}/orders", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path, pattern = r"^001[0-9A-Za-z]{12}([0-9A-Za-z]{3})?$",
        description = "An Account id: 15 or 18 characters beginning 001 (an 18-character id's last three are its checksum; a wrong one is 400)")),
    responses(
        (status = 200, description = "The account's orders (empty for an unknown account)", body = AccountOrders),
        (status = 400, description = "Not a Salesforce id of the right object", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No token, or one that is neither role's", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "No role's token is configured", body = crate::api::openapi::ErrorBody),
        (status = 502, description = "Salesforce refused the read", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "Salesforce is unavailable for now; try again", body = crate::api::openapi::ErrorBody)))]
async fn account_orders<S: OrderSource>(
    State(state): State<ReadState<S>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    if let Err(e) = state.access.require(&headers, Role::Viewer) {
        return e.into_response();
    }
    let id = match parse_id(&raw, ACCOUNT_PREFIX, "Account") {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let list = match state.cache.account_orders(&id).await {
        Ok(l) => l,
        Err(e) => return load_error(&e).into_response(),
    };
    let config = state.cache.config();
    axum::Json(json!({
        "account_id": id,
        "orders": list.orders.iter().map(|o| project(o, &config.order_fields)).collect::<Vec<_>>(),
        "truncated": list.truncated,
        "loaded_at": crate::clock::rfc3339(list.loaded_at_ms),
    }))
    .into_response()
}
