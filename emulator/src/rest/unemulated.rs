//! What Salesforce serves under `/services/data/vNN.N/` and the emulator does not: a clear 501
//! `NOT_IMPLEMENTED` naming the feature, never the 404 or 400 Salesforce would not give
//! (the rule in the crate documentation). A path Salesforce has no resource for is still a 404
//! `NOT_FOUND`, as Salesforce answers it.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

use super::{ApiError, AppState, bearer, check_version};

/// Top-level resources of a Salesforce API version that the emulator does not serve, with the
/// feature each one is.
const RESOURCES: &[(&str, &str)] = &[
    ("actions", "Invocable actions (actions)"),
    ("analytics", "Reports and dashboards (analytics)"),
    ("appMenu", "The app menu (appMenu)"),
    ("async-queries", "Async SOQL (async-queries)"),
    ("chatter", "Connect REST API (chatter)"),
    ("commerce", "Commerce APIs (commerce)"),
    ("connect", "Connect REST API (connect)"),
    ("consent", "Consent API (consent)"),
    ("dedupe", "Duplicate management (dedupe)"),
    ("eclair", "Maps (eclair)"),
    ("emailConnect", "Email connect (emailConnect)"),
    ("folders", "Folders (folders)"),
    ("jobs", "Bulk API 2.0 (jobs)"),
    ("jsonxform", "JSON transformation (jsonxform)"),
    (
        "knowledgeManagement",
        "Knowledge management (knowledgeManagement)",
    ),
    ("licensing", "Licensing (licensing)"),
    ("localizedvalue", "Localized values (localizedvalue)"),
    ("metadata", "Metadata (metadata)"),
    (
        "parameterizedSearch",
        "Parameterized search (parameterizedSearch)",
    ),
    ("process", "Approval processes and workflow rules (process)"),
    (
        "queryAll",
        "queryAll, queries that include deleted records (queryAll)",
    ),
    ("quickActions", "Quick actions (quickActions)"),
    ("recent", "Recently viewed items (recent)"),
    ("scheduling", "Scheduling (scheduling)"),
    ("search", "SOSL search (search)"),
    (
        "smartdatadiscovery",
        "Einstein Discovery (smartdatadiscovery)",
    ),
    ("support", "Support (support)"),
    ("tabs", "Tabs (tabs)"),
    ("theme", "Themes (theme)"),
    ("tooling", "The Tooling API (tooling)"),
    ("ui-api", "The User Interface API (ui-api)"),
    ("wave", "CRM Analytics (wave)"),
];

/// The sObject sub-resources a client could name where a record id goes
/// (`sobjects/{type}/updated`), routed here before `sobjects/{type}/{id}` takes them for ids.
const SOBJECT_SUBRESOURCES: [&str; 5] = [
    "updated",
    "deleted",
    "listviews",
    "quickActions",
    "eventSchema",
];

/// The routes answered here: every path under a version that the emulated routes do not take,
/// and the sObject sub-resources.
pub(super) fn routes() -> Router<AppState> {
    let mut routes = Router::new()
        .route("/services/data/{version}/{resource}", any(answer))
        .route("/services/data/{version}/{resource}/{*rest}", any(answer));
    for sub in SOBJECT_SUBRESOURCES {
        routes = routes.route(
            &format!("/services/data/{{version}}/sobjects/{{sobject}}/{sub}"),
            any(answer),
        );
    }
    routes
}

/// The Salesforce feature a request under `/services/data/vNN.N/` asks for that the emulator
/// does not serve (`segments` are the path after the version), or `None` if Salesforce has no
/// such resource either. `Err` is the 404 of an object the org does not have.
pub(super) fn feature(
    method: &Method,
    segments: &[&str],
    known_object: impl Fn(&str) -> bool,
) -> Result<Option<&'static str>, ApiError> {
    Ok(Some(match segments {
        ["sobjects", object, rest @ ..] => {
            if !known_object(object) {
                return Err(ApiError::not_found());
            }
            match rest {
                ["updated", ..] => "sObject Get Updated (sobjects/{type}/updated)",
                ["deleted", ..] => "sObject Get Deleted (sobjects/{type}/deleted)",
                ["describe", _, ..] => "Layouts (sobjects/{type}/describe/…)",
                ["listviews", ..] => "List views (sobjects/{type}/listviews)",
                ["quickActions", ..] => "Quick actions (sobjects/{type}/quickActions)",
                ["eventSchema", ..] => "Platform event schemas (sobjects/{type}/eventSchema)",
                [_, _, ..] => {
                    "Relationship traversal, blob fields and records by external id (sobjects/{type}/{id}/{field}, sobjects/{type}/{field}/{value})"
                }
                _ => return Ok(None),
            }
        }
        ["composite"] if method != Method::GET => "Composite requests (POST composite)",
        ["composite", "sobjects"] if method != Method::PATCH && method != Method::POST => {
            "sObject Collections retrieve and delete (composite/sobjects)"
        }
        ["composite", "sobjects", _, ..] => {
            "sObject Collections by type and upsert (composite/sobjects/{type})"
        }
        ["composite", "tree", ..] => "sObject Tree (composite/tree)",
        ["composite", "batch", ..] => "Composite batch (composite/batch)",
        ["composite", "graph", ..] => "Composite graph (composite/graph)",
        ["limits", _, ..] => "Record counts and other limits resources (limits/…)",
        [resource, ..] => match RESOURCES.iter().find(|(r, _)| r == resource) {
            Some((_, feature)) => feature,
            None => return Ok(None),
        },
        [] => return Ok(None),
    }))
}

/// Answers a request under `/services/data/vNN.N/` that no emulated route serves: 501 for a
/// Salesforce feature the emulator does not have (after the session and version checks any data
/// API call gets), 404 for a path Salesforce does not have either.
pub(super) async fn answer(
    State(shared): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = uri
        .path()
        .strip_prefix("/services/data/")
        .unwrap_or_default();
    let mut segments = path.split('/');
    let version = segments.next().unwrap_or_default();
    let segments: Vec<&str> = segments.collect();
    let feature = {
        let world = shared.world.lock().expect("world lock");
        feature(&method, &segments, |name| {
            super::describe::Described::find(&world.org, name).is_some()
        })?
    };
    let Some(feature) = feature else {
        return Err(ApiError::not_found());
    };
    bearer(&shared, &headers)?;
    check_version(version)?;
    Err(ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "NOT_IMPLEMENTED",
        format!("{feature} is not emulated"),
    ))
}

/// A 405 in the data API's error shape, naming the methods the `Allow` header lists, as
/// Salesforce words it.
pub(super) fn method_not_allowed(method: &Method, allow: Option<&str>) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!(
            "HTTP Method '{method}' not allowed. Allowed are {}",
            allow.unwrap_or_default()
        ),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feature_of(method: Method, path: &str) -> Option<&'static str> {
        let segments: Vec<&str> = path.split('/').collect();
        feature(&method, &segments, |o| o == "Order").unwrap_or(Some("404"))
    }

    #[test]
    fn salesforce_features_are_named_and_unknown_paths_are_not() {
        for (method, path, says) in [
            (Method::GET, "search", "SOSL"),
            (Method::GET, "tooling/query", "Tooling"),
            (Method::POST, "jobs/ingest", "Bulk API 2.0"),
            (Method::GET, "queryAll", "queryAll"),
            (Method::POST, "composite", "Composite requests"),
            (Method::POST, "composite/tree/Order", "sObject Tree"),
            (Method::POST, "composite/batch", "Composite batch"),
            (Method::DELETE, "composite/sobjects", "retrieve and delete"),
            (Method::POST, "composite/sobjects/Order", "by type"),
            (Method::GET, "sobjects/Order/updated", "Get Updated"),
            (Method::GET, "sobjects/Order/deleted", "Get Deleted"),
            (Method::GET, "sobjects/Order/describe/layouts", "Layouts"),
            (
                Method::GET,
                "sobjects/Order/801Hs0000000Q0vIAE/OrderItems",
                "Relationship",
            ),
            (
                Method::GET,
                "sobjects/Order/WHMCS_Order_ID__c/WH-1",
                "external id",
            ),
            (Method::GET, "limits/recordCount", "Record counts"),
        ] {
            let got = feature_of(method.clone(), path);
            assert!(
                got.is_some_and(|f| f.contains(says)),
                "{method} {path}: {got:?}"
            );
        }
        for (method, path) in [
            (Method::GET, "nonsense"),
            (Method::GET, "nonsense/deeper"),
            (Method::GET, "composite"),
            (Method::PATCH, "composite/sobjects"),
            (Method::POST, "composite/sobjects"),
            (Method::GET, "composite/nonsense"),
            (Method::GET, "sobjects/Order/801Hs0000000Q0vIAE"),
            (Method::GET, "sobjects/Order/describe"),
            (Method::GET, "limits"),
        ] {
            assert_eq!(feature_of(method.clone(), path), None, "{method} {path}");
        }
        assert_eq!(
            feature_of(Method::GET, "sobjects/Widget__c/updated"),
            Some("404")
        );
    }
}
