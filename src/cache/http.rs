//! The read API on the admin server: `GET /orders/{id}` and `GET /accounts/{id}/orders`, served
//! from the [`OrderCache`](super::OrderCache).
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
