//! The admin server as an outsider meets it: which routes answer without a token, what the
//! viewer and the operator may do, the audit trail of operator actions, and the console.

use serde_json::Value;
use sfcdc::store::Store;

use crate::common::*;

pub(crate) const ADMIN_TOKEN: &str = "admin-token-for-console-0123456789";
pub(crate) const READ_TOKEN: &str = "read-token-for-console-0123456789";

/// A service with both tokens, on a SQLite file, against a fresh emulator.
pub(crate) async fn service(org: &Org, extra: &[(&str, &str)]) -> Running {
    let mut env = vec![
        ("SFCDC_ADMIN_TOKEN", ADMIN_TOKEN),
        ("SFCDC_READ_TOKEN", READ_TOKEN),
        ("SFCDC_CHANNELS", ORDERS),
    ];
    env.extend_from_slice(extra);
    run_app(org, tempfile::tempdir().unwrap(), &env).await
}

/// `method path` with `token` as a bearer token: the status and the body (JSON, or text).
pub(crate) async fn call(
    r: &Running,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let addr = r.app.admin_addr().expect("the admin API listens");
    let mut req = reqwest::Client::new().request(method, format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("admin call");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

#[tokio::test]
async fn only_the_probes_and_metrics_answer_without_a_token() {
    let org = Org::start().await;
    let r = service(&org, &[]).await;
    live(&**r.app.store(), &[ORDERS]).await;
    use reqwest::Method as M;
    for open in ["/healthz", "/readyz", "/metrics"] {
        let (status, body) = call(&r, M::GET, open, None).await;
        assert!(status == 200 || status == 503, "{open}: {status} {body}");
    }
    let reads = [
        "/jobs",
        "/jobs/1",
        "/deliveries",
        "/deliveries/1",
        "/channels",
        "/quarantine",
        "/quarantine/1",
        "/orders/801000000000001",
        "/accounts/001000000000001/orders",
    ];
    let changes = [
        "/jobs/1/retry",
        "/jobs/1/cancel",
        "/deliveries/1/retry",
        "/deliveries/1/cancel",
    ];
    for path in reads {
        let (status, body) = call(&r, M::GET, path, None).await;
        assert_eq!(status, 401, "GET {path} without a token: {body}");
        let (status, body) = call(&r, M::GET, path, Some("not-a-token-not-a-token")).await;
        assert_eq!(status, 401, "GET {path} with a wrong token: {body}");
        for token in [READ_TOKEN, ADMIN_TOKEN] {
            let (status, body) = call(&r, M::GET, path, Some(token)).await;
            assert!(
                status != 401 && status != 403,
                "GET {path} with a token: {status} {body}"
            );
        }
    }
    for path in changes {
        let (status, body) = call(&r, M::POST, path, None).await;
        assert_eq!(status, 401, "POST {path} without a token: {body}");
        let (status, body) = call(&r, M::POST, path, Some(READ_TOKEN)).await;
        assert_eq!(status, 403, "POST {path} as a viewer: {body}");
        let (status, body) = call(&r, M::POST, path, Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 404, "POST {path} as the operator: {body}");
    }
    // The channel view and the quarantine read as the CLI shows them.
    let (status, body) = call(&r, M::GET, "/channels", Some(READ_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["channel"], ORDERS);
    assert_eq!(body[0]["role"], "holder");
    let (status, body) = call(&r, M::GET, "/quarantine?state=all", Some(READ_TOKEN)).await;
    assert_eq!((status, body.as_array().map(Vec::len)), (200, Some(0)));
    let (status, body) = call(&r, M::GET, "/quarantine?state=bad", Some(READ_TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    r.stop().await;
}

#[tokio::test]
async fn metrics_need_their_own_token_when_one_is_set() {
    let org = Org::start().await;
    let metrics = "metrics-token-for-console-0123456789";
    let r = service(&org, &[("SFCDC_METRICS_TOKEN", metrics)]).await;
    use reqwest::Method as M;
    assert_eq!(call(&r, M::GET, "/metrics", None).await.0, 401);
    assert_eq!(call(&r, M::GET, "/metrics", Some(READ_TOKEN)).await.0, 401);
    assert_eq!(call(&r, M::GET, "/metrics", Some(metrics)).await.0, 200);
    assert_eq!(call(&r, M::GET, "/healthz", None).await.0, 200);
    // The metrics token reads nothing else.
    assert_eq!(call(&r, M::GET, "/jobs", Some(metrics)).await.0, 401);
    let _ = r.app.store().backend();
    r.stop().await;
}
