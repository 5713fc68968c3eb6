//! The emulator's REST side: OAuth grants, user info, records, queries and error shapes.

use reqwest::Method;
use serde_json::{Value, json};
use sfcdc_emulator::EmulatorConfig;

use crate::common::*;

async fn token_request(org: &Org, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = org
        .http
        .post(org.url("/services/oauth2/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn sign_assertion(iss: &str, sub: &str, aud: &str, exp_offset: i64) -> String {
    let key = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jwt-test-key.pem"
    ))
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({"iss": iss, "sub": sub, "aud": aud, "exp": now + exp_offset});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&key).unwrap(),
    )
    .unwrap()
}

async fn jwt_org() -> Org {
    let mut config = test_config();
    config.credentials.jwt_public_key = Some(
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/jwt-test-key.pub.pem"
        ))
        .unwrap(),
    );
    Org::start_with(config).await
}

#[tokio::test]
async fn oauth_grants_issue_tokens_that_work_everywhere() {
    let org = jwt_org().await;
    let jwt = sign_assertion(
        "sfcdc-demo",
        "demo@sfcdc.test",
        "https://login.salesforce.com",
        300,
    );
    let grants: Vec<Vec<(&str, &str)>> = vec![
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", "sfcdc-demo"),
            ("client_secret", "sfcdc-demo-secret"),
        ],
        vec![
            ("grant_type", "password"),
            ("client_id", "sfcdc-demo"),
            ("client_secret", "sfcdc-demo-secret"),
            ("username", "demo@sfcdc.test"),
            ("password", "sfcdc-demo-password"),
        ],
        vec![
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", jwt.as_str()),
        ],
    ];
    for form in grants {
        let (status, body) = token_request(&org, &form).await;
        assert_eq!(status, 200, "{form:?}: {body}");
        let token = body["access_token"].as_str().unwrap();
        let (org_part, _) = token.split_once('!').expect("token is <org>!<random>");
        assert_eq!(org_part, &org.emu.org_id()[..15]);
        assert_eq!(body["instance_url"], org.emu.instance_url());
        assert_eq!(body["token_type"], "Bearer");
        assert!(
            body["id"]
                .as_str()
                .unwrap()
                .contains(&format!("/id/{}/", org.emu.org_id()))
        );
        assert!(!body["signature"].as_str().unwrap().is_empty());

        let info: Value = org
            .http
            .get(org.url("/services/oauth2/userinfo"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(info["organization_id"], org.emu.org_id());
        assert_eq!(info["preferred_username"], "demo@sfcdc.test");

        // The same token works on gRPC.
        let mut client = org
            .client_with(Auth {
                token: Some(token.to_owned()),
                ..org.auth()
            })
            .await;
        client
            .get_topic(sfcdc_emulator::proto::TopicRequest {
                topic_name: "/data/OrderChangeEvent".into(),
            })
            .await
            .expect("token accepted by gRPC");
    }
}

#[tokio::test]
async fn oauth_failures_use_the_oauth_error_shape() {
    let org = jwt_org().await;
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "sfcdc-demo"),
                ("client_secret", "wrong"),
            ],
            "invalid_client",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "nobody"),
                ("client_secret", "x"),
            ],
            "invalid_client_id",
        ),
        (
            vec![
                ("grant_type", "password"),
                ("client_id", "sfcdc-demo"),
                ("client_secret", "sfcdc-demo-secret"),
                ("username", "demo@sfcdc.test"),
                ("password", "nope"),
            ],
            "invalid_grant",
        ),
        (
            vec![("grant_type", "authorization_code")],
            "unsupported_grant_type",
        ),
    ];
    for (form, error) in cases {
        let (status, body) = token_request(&org, &form).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], error, "{form:?}");
        assert!(body["error_description"].is_string());
    }
    let expired = sign_assertion(
        "sfcdc-demo",
        "demo@sfcdc.test",
        "https://login.salesforce.com",
        -3600,
    );
    let wrong_sub = sign_assertion(
        "sfcdc-demo",
        "someone@else",
        "https://login.salesforce.com",
        300,
    );
    let wrong_aud = sign_assertion("sfcdc-demo", "demo@sfcdc.test", "https://evil.example", 300);
    let wrong_iss = sign_assertion(
        "other-app",
        "demo@sfcdc.test",
        "https://login.salesforce.com",
        300,
    );
    for jwt in [
        expired,
        wrong_sub,
        wrong_aud,
        wrong_iss,
        "not.a.jwt".to_owned(),
    ] {
        let (status, body) = token_request(
            &org,
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &jwt),
            ],
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_grant", "{body}");
    }
    let resp = org
        .http
        .get(org.url("/services/oauth2/userinfo"))
        .bearer_auth("bogus")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn jwt_grant_is_refused_without_a_configured_key() {
    let org = Org::start().await;
    let jwt = sign_assertion(
        "sfcdc-demo",
        "demo@sfcdc.test",
        "https://login.salesforce.com",
        300,
    );
    let (status, body) = token_request(
        &org,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &jwt),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_client");
}

#[tokio::test]
async fn records_can_be_read_created_updated_and_deleted() {
    let org = Org::start().await;
    let id = org
        .create_order(json!({"BillingCity": "Bath", "PoNumber": "PO-1"}))
        .await;
    let (status, rec) = org
        .rest(
            Method::GET,
            &format!("/services/data/v60.0/sobjects/Order/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(rec["attributes"]["type"], "Order");
    assert_eq!(rec["Id"], id);
    assert_eq!(rec["Status"], "Draft");
    assert_eq!(rec["BillingCity"], "Bath");
    assert_eq!(rec["BillingAddress"]["city"], "Bath");
    assert_eq!(rec["EffectiveDate"], "2024-06-01");
    assert!(rec["CreatedDate"].as_str().unwrap().ends_with("+0000"));
    assert_eq!(rec["Activation_Status__c"], Value::Null);
    assert_eq!(rec["OrderNumber"].as_str().unwrap().len(), 8);

    // 15-character ids are accepted, and ?fields= limits the answer.
    let (status, rec) = org
        .rest(
            Method::GET,
            &format!(
                "/services/data/v60.0/sobjects/Order/{}?fields=Status,PoNumber",
                &id[..15]
            ),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        rec.as_object().unwrap().len(),
        3,
        "attributes + 2 fields: {rec}"
    );

    org.patch_order(
        &id,
        json!({"Status": "Approved", "Activation_Status__c": "Activating"}),
    )
    .await;
    let (_, rec) = org
        .rest(
            Method::GET,
            &format!("/services/data/v60.0/sobjects/Order/{id}"),
            None,
        )
        .await;
    assert_eq!(rec["Status"], "Approved");
    assert_eq!(rec["Activation_Status__c"], "Activating");

    let (status, _) = org
        .rest(
            Method::DELETE,
            &format!("/services/data/v60.0/sobjects/Order/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = org
        .rest(
            Method::GET,
            &format!("/services/data/v60.0/sobjects/Order/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(body[0]["errorCode"], "NOT_FOUND");
}

#[tokio::test]
async fn errors_use_the_salesforce_shape() {
    let org = Org::start().await;
    let id = org.create_order(json!({})).await;
    let path = format!("/services/data/v60.0/sobjects/Order/{id}");
    let cases: Vec<(Method, String, Option<Value>, u16, &str)> = vec![
        (
            Method::PATCH,
            path.clone(),
            Some(json!({"Nope__c": 1})),
            400,
            "INVALID_FIELD",
        ),
        (
            Method::PATCH,
            path.clone(),
            Some(json!({"OrderNumber": "1"})),
            400,
            "INVALID_FIELD_FOR_INSERT_UPDATE",
        ),
        (
            Method::PATCH,
            path.clone(),
            Some(json!({"Status": "Exploded"})),
            400,
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        ),
        (
            Method::PATCH,
            path.clone(),
            Some(json!({"EffectiveDate": 5})),
            400,
            "JSON_PARSER_ERROR",
        ),
        (
            Method::PATCH,
            path.clone(),
            Some(json!([1, 2])),
            400,
            "JSON_PARSER_ERROR",
        ),
        (
            Method::GET,
            "/services/data/v60.0/sobjects/Order/bad-id".into(),
            None,
            400,
            "MALFORMED_ID",
        ),
        (
            Method::GET,
            "/services/data/v60.0/sobjects/Widget__c/801Hs0000000Q0vIAE".into(),
            None,
            404,
            "NOT_FOUND",
        ),
        (
            Method::POST,
            "/services/data/v60.0/sobjects/Order".into(),
            Some(json!({"Status": "Draft"})),
            400,
            "REQUIRED_FIELD_MISSING",
        ),
        (
            Method::POST,
            "/services/data/v60.0/sobjects/Order".into(),
            Some(
                json!({"AccountId": "001Hs0000000000AAA", "EffectiveDate": "2024-01-01", "Status": "Draft"}),
            ),
            400,
            "FIELD_INTEGRITY_EXCEPTION",
        ),
        (
            Method::GET,
            "/services/data/latest/sobjects/Order/x".into(),
            None,
            404,
            "NOT_FOUND",
        ),
        (
            Method::GET,
            "/services/data/v60.0/query?q=DELETE+FROM+Order".into(),
            None,
            400,
            "MALFORMED_QUERY",
        ),
        (
            Method::GET,
            "/services/data/v60.0/query?q=SELECT+Id+FROM+Widget".into(),
            None,
            400,
            "INVALID_TYPE",
        ),
        (
            Method::GET,
            "/services/data/v60.0/query?q=SELECT+Nope+FROM+Order".into(),
            None,
            400,
            "INVALID_FIELD",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let (got, resp) = org.rest(method.clone(), &path, body).await;
        assert_eq!(got, status, "{method} {path}: {resp}");
        assert_eq!(resp[0]["errorCode"], code, "{method} {path}: {resp}");
        assert!(resp[0]["message"].is_string());
    }
    // No token, or an expired one: 401 INVALID_SESSION_ID.
    let resp = org.http.get(org.url(&path)).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body[0]["errorCode"], "INVALID_SESSION_ID");
}

#[tokio::test]
async fn queries_by_id_id_list_account_and_last_modified() {
    let org = Org::start().await;
    let account = org.first_account().await;
    let a = org.create_order(json!({"Name": "A"})).await;
    let b = org.create_order(json!({"Name": "B"})).await;

    let r = org
        .query(&format!(
            "SELECT Id, Name, Status FROM Order WHERE Id = '{a}'"
        ))
        .await;
    assert_eq!(r["totalSize"], 1);
    assert_eq!(r["done"], true);
    assert_eq!(r["records"][0]["Name"], "A");
    assert!(
        r["records"][0]["attributes"]["url"]
            .as_str()
            .unwrap()
            .ends_with(&a)
    );

    let r = org
        .query(&format!(
            "SELECT Id FROM Order WHERE Id IN ('{a}', '{}')",
            &b[..15]
        ))
        .await;
    assert_eq!(r["totalSize"], 2, "15-character ids match too");

    let r = org
        .query(&format!(
            "SELECT Id, AccountId FROM Order WHERE AccountId = '{account}'"
        ))
        .await;
    let n = r["totalSize"].as_u64().unwrap();
    assert!(n >= 2);
    assert!(
        r["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["AccountId"] == account.as_str())
    );

    org.patch_order(&a, json!({"Description": "touched"})).await;
    let (_, rec) = org
        .rest(
            Method::GET,
            &format!("/services/data/v60.0/sobjects/Order/{a}"),
            None,
        )
        .await;
    let a_modified = rec["LastModifiedDate"].as_str().unwrap().to_owned();
    let ids = |r: &Value| -> Vec<String> {
        r["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["Id"].as_str().unwrap().to_owned())
            .collect()
    };
    let r = org.query(&format!("SELECT Id FROM Order WHERE LastModifiedDate >= {a_modified} ORDER BY LastModifiedDate DESC")).await;
    assert_eq!(ids(&r)[0], a);
    let r = org
        .query(&format!(
            "SELECT Id FROM Order WHERE LastModifiedDate > {a_modified}"
        ))
        .await;
    assert!(!ids(&r).contains(&a));
    let r = org
        .query("SELECT Id FROM Order WHERE LastModifiedDate < 2000-01-01T00:00:00Z")
        .await;
    assert_eq!(r["totalSize"], 0);
}

#[tokio::test]
async fn long_query_results_are_paged() {
    let org = Org::start().await;
    org.emu.bulk(8000);
    let mut r = org.query("SELECT Id FROM Order").await;
    let total = r["totalSize"].as_u64().unwrap() as usize;
    assert!(total > 2000);
    let mut seen = r["records"].as_array().unwrap().len();
    assert_eq!(seen, 2000);
    while let Some(next) = r["nextRecordsUrl"].as_str() {
        assert_eq!(r["done"], false);
        let (status, page) = org.rest(Method::GET, next, None).await;
        assert_eq!(status, 200);
        seen += page["records"].as_array().unwrap().len();
        r = page;
    }
    assert_eq!(r["done"], true);
    assert_eq!(seen, total);
}

#[tokio::test]
async fn control_api_rejects_bad_requests_clearly() {
    let org = Org::start_with(EmulatorConfig { ..test_config() }).await;
    for body in [
        json!({"kind": "explode"}),
        json!({"kind": "delay"}),
        json!({"kind": "gap", "change_type": "UPDATE"}),
        json!("x"),
    ] {
        let resp = org
            .http
            .post(org.url("/emulator/faults"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"].is_string());
    }
    let resp = org
        .http
        .post(org.url("/emulator/faults"))
        .json(&json!({"kind": "schema_change", "field": "Bad Name"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = org
        .http
        .post(org.url("/emulator/bulk"))
        .json(&json!({"count": "many"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let info: Value = org
        .http
        .get(org.url("/emulator/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["org_id"], org.emu.org_id());
    assert!(
        info.get("client_secret").is_none(),
        "the info endpoint does not echo secrets"
    );
}

#[tokio::test]
async fn soap_login_returns_a_session_and_faults_on_bad_passwords() {
    let org = Org::start().await;
    let envelope = |password: &str| {
        format!(
            r#"<?xml version="1.0" encoding="utf-8" ?><env:Envelope xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:env="http://schemas.xmlsoap.org/soap/envelope/"><env:Body><n1:login xmlns:n1="urn:partner.soap.sforce.com"><n1:username>demo@sfcdc.test</n1:username><n1:password>{password}</n1:password></n1:login></env:Body></env:Envelope>"#
        )
    };
    let resp = org
        .http
        .post(org.url("/services/Soap/u/60.0"))
        .header("SOAPAction", "login")
        .header("Content-Type", "text/xml")
        .body(envelope("sfcdc-demo-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let xml = resp.text().await.unwrap();
    let between = |a: &str, b: &str| {
        xml.split(a)
            .nth(1)
            .unwrap()
            .split(b)
            .next()
            .unwrap()
            .to_owned()
    };
    let session = between("<sessionId>", "</sessionId>");
    assert!(between("<serverUrl>", "</serverUrl>").starts_with(org.emu.instance_url()));
    assert_eq!(
        between("<organizationId>", "</organizationId>"),
        org.emu.org_id()
    );
    assert_eq!(
        between("<sessionSecondsValid>", "</sessionSecondsValid>"),
        "7200"
    );
    let mut client = org
        .client_with(Auth {
            token: Some(session),
            ..org.auth()
        })
        .await;
    client
        .get_topic(sfcdc_emulator::proto::TopicRequest {
            topic_name: "/data/OrderChangeEvent".into(),
        })
        .await
        .expect("the session id is an access token");

    let resp = org
        .http
        .post(org.url("/services/Soap/u/60.0"))
        .body(envelope("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    let xml = resp.text().await.unwrap();
    assert!(
        xml.contains("<faultcode>sf:INVALID_LOGIN</faultcode>"),
        "{xml}"
    );
}

/// Salesforce accepts a trailing slash on its REST paths, and clients send one:
/// simple-salesforce's `query()` and `query_all()` (`…/query/?q=`) and its `create`
/// (`POST …/sobjects/Order/`), and the official Pub/Sub examples' SOAP login
/// (`POST /services/Soap/u/62.0/`).
#[tokio::test]
async fn trailing_slashes_are_accepted_as_salesforce_accepts_them() {
    let org = Org::start().await;
    let account = org.first_account().await;
    let resp = org
        .http
        .get(org.url("/services/data/v62.0/query/"))
        .query(&[("q", "SELECT Id, Name FROM Account")])
        .bearer_auth(&org.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let page: Value = resp.json().await.unwrap();
    assert!(page["totalSize"].as_u64().unwrap() >= 1, "{page}");
    assert!(
        page["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["Id"] == account.as_str())
    );

    let (status, created) = org
        .rest(
            Method::POST,
            "/services/data/v62.0/sobjects/Order/",
            Some(json!({"AccountId": account, "EffectiveDate": "2024-06-01", "Status": "Draft"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["success"], true);
    let id = created["id"].as_str().unwrap();
    let (status, rec) = org
        .rest(
            Method::GET,
            &format!("/services/data/v62.0/sobjects/Order/{id}/"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{rec}");
    assert_eq!(rec["Id"], id);

    let resp = org
        .http
        .post(org.url("/services/Soap/u/62.0/"))
        .header("content-type", "text/xml")
        .header("SOAPAction", "Login")
        .body(r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:urn="urn:partner.soap.sforce.com"><soapenv:Body><urn:login><urn:username>demo@sfcdc.test</urn:username><urn:password>sfcdc-demo-password</urn:password></urn:login></soapenv:Body></soapenv:Envelope>"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("<sessionId>"));

    // An unknown path is still unknown, with or without the slash.
    let (status, body) = org.rest(Method::GET, "/nowhere/", None).await;
    assert_eq!(status, 404);
    assert_eq!(body[0]["errorCode"], "NOT_FOUND");
}

/// An HTTP/2 POST with a body to a route that does not exist gets a complete 404, never a reset
/// stream (curl's error 92): the emulator reads the whole body before it answers. The client here
/// sends the body in two parts with a pause between them, which is when a server that answers
/// early resets the stream under the client.
#[tokio::test]
async fn an_http2_post_with_a_body_to_an_unknown_route_is_a_complete_404() {
    let org = Org::start_with(EmulatorConfig {
        tls: false,
        ..test_config()
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(org.emu.rest_addr())
        .await
        .unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    for path in ["/nope/route", "/services/data/v62.0/nonsense"] {
        let mut client = client.clone().ready().await.unwrap();
        let request = axum::http::Request::post(org.url(path))
            .header("authorization", format!("Bearer {}", org.token))
            .header("content-type", "application/json")
            .body(())
            .unwrap();
        let (response, mut body) = client.send_request(request, false).unwrap();
        body.send_data(bytes::Bytes::from(vec![b' '; 8_192]), false)
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        body.send_data(bytes::Bytes::from_static(b"{}"), true)
            .unwrap_or_else(|e| panic!("POST {path}: the stream was reset mid-body: {e}"));
        let response = tokio::time::timeout(PATIENCE, response)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let mut answer = response.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = answer.data().await {
            let chunk = chunk.unwrap_or_else(|e| panic!("{path}: the answer was cut: {e}"));
            let _ = answer.flow_control().release_capacity(chunk.len());
            text.extend_from_slice(&chunk);
        }
        let answer: Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(answer[0]["errorCode"], "NOT_FOUND", "{path}: {answer}");
        let reset = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            std::future::poll_fn(|cx| body.poll_reset(cx)),
        )
        .await;
        assert!(
            reset.is_err(),
            "{path}: the server reset the stream: {reset:?}"
        );
    }
}

/// Positions of the children of the first `<parent>` element, as a client reading them by index
/// sees them (every child here is a leaf).
fn child_names(xml: &str, parent: &str) -> Vec<String> {
    let open = format!("<{parent}>");
    let inner = xml.split(&open).nth(1).unwrap();
    let inner = inner.split(&format!("</{parent}>")).next().unwrap();
    inner
        .split('<')
        .filter(|t| !t.is_empty() && !t.starts_with('/'))
        .map(|t| t.split(['>', ' ', '/']).next().unwrap().to_owned())
        .collect()
}

/// The official Pub/Sub API quick start logs in with its credentials in CDATA sections, posts to
/// `/services/Soap/u/<v>/` and reads the answer by position; jsforce escapes them as entities.
#[tokio::test]
async fn soap_login_accepts_cdata_and_entities_and_answers_in_salesforce_order() {
    let mut config = test_config();
    config.credentials.username = "ops+cdc@example.test".into();
    config.credentials.password = "p&ss<w>rd]\"'".into();
    let org = Org::start_with(config).await;
    let login = |username: String, password: String| {
        let envelope = format!(
            "<soapenv:Envelope xmlns:soapenv='http://schemas.xmlsoap.org/soap/envelope/' xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance' xmlns:urn='urn:partner.soap.sforce.com'><soapenv:Body><urn:login><urn:username>{username}</urn:username><urn:password>{password}</urn:password></urn:login></soapenv:Body></soapenv:Envelope>"
        );
        org.http
            .post(org.url("/services/Soap/u/62.0/"))
            .header("content-type", "text/xml")
            .header("SOAPAction", "Login")
            .body(envelope)
            .send()
    };
    let cdata = |s: &str| format!("<![CDATA[{s}]]>");
    let resp = login(cdata("ops+cdc@example.test"), cdata("p&ss<w>rd]\"'"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let xml = resp.text().await.unwrap();
    let result = child_names(&xml, "result");
    assert_eq!(result[3], "serverUrl", "{result:?}");
    assert_eq!(result[4], "sessionId", "{result:?}");
    assert_eq!(result[6], "userInfo", "{result:?}");
    let user_info = child_names(&xml, "userInfo");
    assert_eq!(user_info[8], "organizationId", "{user_info:?}");
    assert_eq!(
        user_info,
        [
            "accessibilityMode",
            "chatterExternal",
            "currencySymbol",
            "orgAttachmentFileSizeLimit",
            "orgDefaultCurrencyIsoCode",
            "orgDefaultCurrencyLocale",
            "orgDisallowHtmlAttachments",
            "orgHasPersonAccounts",
            "organizationId",
            "organizationMultiCurrency",
            "organizationName",
            "profileId",
            "roleId",
            "sessionSecondsValid",
            "userDefaultCurrencyIsoCode",
            "userEmail",
            "userFullName",
            "userId",
            "userLanguage",
            "userLocale",
            "userName",
            "userTimeZone",
            "userType",
            "userUiSkin",
        ]
    );
    assert!(
        xml.contains(&format!(
            "<organizationId>{}</organizationId>",
            org.emu.org_id()
        )),
        "{xml}"
    );

    // jsforce's form: the same credentials as entity and character references.
    let resp = login(
        "ops+cdc@example.test".into(),
        "p&amp;ss&lt;w&#62;rd]&quot;&#x27;".into(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);

    let resp = login(cdata("ops+cdc@example.test"), cdata("p&amp;ss<w>rd]\"'"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 500, "CDATA content is literal");
    assert!(resp.text().await.unwrap().contains("INVALID_LOGIN"));
}

/// Salesforce's token endpoint takes the client id and secret in an `Authorization: Basic` header
/// as well as in the form body.
#[tokio::test]
async fn client_credentials_accept_the_client_in_a_basic_header() {
    use base64::Engine;
    let org = Org::start().await;
    let basic = |id: &str, secret: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        )
    };
    let grant = |authorization: String| {
        org.http
            .post(org.url("/services/oauth2/token"))
            .header("authorization", authorization)
            .form(&[("grant_type", "client_credentials")])
            .send()
    };
    let resp = grant(basic("sfcdc-demo", "sfcdc-demo-secret"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    let info = org
        .http
        .get(org.url("/services/oauth2/userinfo"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), 200);

    for (authorization, error) in [
        (basic("sfcdc-demo", "wrong"), "invalid_client"),
        (basic("nobody", "sfcdc-demo-secret"), "invalid_client_id"),
        ("Basic not-base64!".to_owned(), "invalid_client_id"),
    ] {
        let resp = grant(authorization.clone()).await.unwrap();
        assert_eq!(resp.status(), 400, "{authorization}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], error, "{authorization}");
    }
}

/// Salesforce always returns the system fields of a record, typed: `IsDeleted` a boolean, the
/// dates date-times, the user fields user ids. Seeded and created records alike, of every object.
#[tokio::test]
async fn system_fields_are_always_present_and_typed() {
    let org = Org::start().await;
    let account = org.first_account().await;
    let created = org.create_order(json!({})).await;
    let seeded = org
        .query("SELECT Id FROM Order WHERE Status = 'Activated' LIMIT 1")
        .await["records"][0]["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    let item = org
        .query(&format!(
            "SELECT Id FROM OrderItem WHERE OrderId = '{seeded}' LIMIT 1"
        ))
        .await["records"][0]["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    org.patch_order(&created, json!({"Description": "touched"}))
        .await;
    let user = org.emu.with_world(|w| w.org.user_id.to_string());
    let check = |what: &str, rec: &Value| {
        assert_eq!(rec["IsDeleted"], false, "{what}: {rec}");
        for f in ["CreatedDate", "LastModifiedDate", "SystemModstamp"] {
            let v = rec[f]
                .as_str()
                .unwrap_or_else(|| panic!("{what}.{f}: {rec}"));
            assert!(
                v.len() == 28 && v.ends_with("+0000") && v.as_bytes()[10] == b'T',
                "{what}.{f} = {v}"
            );
        }
        for f in ["CreatedById", "LastModifiedById"] {
            assert_eq!(rec[f], user.as_str(), "{what}.{f}: {rec}");
        }
    };
    for (sobject, id) in [
        ("Account", &account),
        ("Order", &created),
        ("Order", &seeded),
        ("OrderItem", &item),
    ] {
        let (status, rec) = org
            .rest(
                Method::GET,
                &format!("/services/data/v62.0/sobjects/{sobject}/{id}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{rec}");
        check(&format!("{sobject} {id}"), &rec);
        let rows = org
            .query(&format!(
                "SELECT IsDeleted, CreatedDate, CreatedById, LastModifiedDate, LastModifiedById, SystemModstamp FROM {sobject} WHERE Id = '{id}'"
            ))
            .await;
        check(&format!("SOQL {sobject} {id}"), &rows["records"][0]);
    }
    let (_, rec) = org
        .rest(
            Method::GET,
            &format!("/services/data/v62.0/sobjects/Order/{created}"),
            None,
        )
        .await;
    assert_eq!(rec["SystemModstamp"], rec["LastModifiedDate"]);
    let live = org
        .query("SELECT count() FROM Order WHERE IsDeleted = false")
        .await;
    let all = org.query("SELECT count() FROM Order").await;
    assert_eq!(live["totalSize"], all["totalSize"]);
}

/// `SELECT count()` answers the number of matching records in `totalSize`, with no records.
#[tokio::test]
async fn count_queries_answer_the_number_of_matching_records() {
    let org = Org::start().await;
    let before = org.query("SELECT Id FROM Order").await["totalSize"]
        .as_u64()
        .unwrap();
    let drafts = org
        .query("SELECT Id FROM Order WHERE Status = 'Draft'")
        .await["totalSize"]
        .as_u64()
        .unwrap();
    let id = org.create_order(json!({})).await;
    let r = org.query("SELECT count() FROM Order").await;
    assert_eq!(
        r,
        json!({"totalSize": before + 1, "done": true, "records": []})
    );
    let r = org
        .query("select COUNT() from Order where Status = 'Draft'")
        .await;
    assert_eq!(r["totalSize"], drafts + 1);
    assert_eq!(r["records"], json!([]));
    let r = org
        .query(&format!("SELECT count() FROM Order WHERE Id = '{id}'"))
        .await;
    assert_eq!(r["totalSize"], 1);
    let r = org.query("SELECT count() FROM Order LIMIT 2").await;
    assert_eq!(r["totalSize"], 2);
    let (status, body) = org
        .rest(
            Method::GET,
            "/services/data/v62.0/query?q=SELECT+count()+FROM+Widget",
            None,
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body[0]["errorCode"], "INVALID_TYPE");
}

/// `GET /services/data` lists the versions without a session; `GET /services/data/vNN.N` lists
/// the version's resources, with one; both with or without a trailing slash.
#[tokio::test]
async fn versions_and_resources_are_listed_as_salesforce_lists_them() {
    let org = Org::start().await;
    for path in ["/services/data", "/services/data/"] {
        let resp = org.http.get(org.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let versions: Value = resp.json().await.unwrap();
        let versions = versions.as_array().unwrap();
        let v62 = versions
            .iter()
            .find(|v| v["version"] == "62.0")
            .expect("62.0 is listed");
        assert_eq!(
            v62,
            &json!({"label": "Winter '25", "url": "/services/data/v62.0", "version": "62.0"})
        );
        assert!(versions.iter().any(|v| v["version"] == "60.0"));
    }
    for path in ["/services/data/v62.0", "/services/data/v62.0/"] {
        let (status, list) = org.rest(Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {list}");
        assert_eq!(list["sobjects"], "/services/data/v62.0/sobjects");
        assert_eq!(list["query"], "/services/data/v62.0/query");
        // Every resource listed answers.
        for (name, url) in list.as_object().unwrap() {
            let url = url.as_str().unwrap();
            let url = if name == "query" {
                format!("{url}?q=SELECT+Id+FROM+Account")
            } else {
                url.to_owned()
            };
            let (status, body) = org.rest(Method::GET, &url, None).await;
            assert_eq!(status, 200, "{name}: {body}");
        }
    }
    let resp = org
        .http
        .get(org.url("/services/data/v62.0"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "the resource list needs a session");
}

/// simple-salesforce's `sf.describe()`, `sf.Order.describe()` and `sf.Order.metadata()` (and
/// jsforce's `describeGlobal()` and `describe()`): the objects and fields the emulator really has,
/// typed as Salesforce types them.
#[tokio::test]
async fn describe_serves_the_objects_and_fields_of_the_model() {
    let org = Org::start().await;
    let (status, global) = org
        .rest(Method::GET, "/services/data/v62.0/sobjects", None)
        .await;
    assert_eq!(status, 200, "{global}");
    assert_eq!(global["maxBatchSize"], 200);
    let names: Vec<&str> = global["sobjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Account",
            "Order",
            "OrderItem",
            "Order_Fulfilment_Requested__e"
        ]
    );
    let order_summary = &global["sobjects"][1];
    assert_eq!(order_summary["keyPrefix"], "801");
    assert_eq!(order_summary["labelPlural"], "Orders");
    assert_eq!(
        order_summary["urls"]["describe"],
        "/services/data/v62.0/sobjects/Order/describe"
    );
    let event = &global["sobjects"][3];
    assert_eq!(
        (event["custom"].clone(), event["queryable"].clone()),
        (json!(true), json!(false))
    );

    let (status, info) = org
        .rest(Method::GET, "/services/data/v62.0/sobjects/Order/", None)
        .await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(&info["objectDescribe"], order_summary);
    assert_eq!(info["recentItems"], json!([]));

    let (status, d) = org
        .rest(
            Method::GET,
            "/services/data/v62.0/sobjects/Order/describe",
            None,
        )
        .await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["name"], "Order");
    let fields = d["fields"].as_array().unwrap();
    let field = |name: &str| {
        fields
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no field {name}"))
    };
    for (name, kind) in [
        ("Id", "id"),
        ("AccountId", "reference"),
        ("Status", "picklist"),
        ("Activation_Status__c", "picklist"),
        ("EffectiveDate", "date"),
        ("CreatedDate", "datetime"),
        ("TotalAmount", "currency"),
        ("IsDeleted", "boolean"),
        ("Description", "textarea"),
        ("Provisioning_Error__c", "string"),
        ("BillingAddress", "address"),
        ("BillingCity", "string"),
        ("BillingLatitude", "double"),
        ("SystemModstamp", "datetime"),
    ] {
        assert_eq!(field(name)["type"], kind, "{name}");
        for key in ["label", "nillable", "updateable", "createable", "length"] {
            assert!(!field(name)[key].is_null(), "{name}.{key}");
        }
    }
    let values = |name: &str| -> Vec<String> {
        field(name)["picklistValues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["value"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        values("Status"),
        [
            "Draft",
            "Approved",
            "Activated",
            "Reactivate",
            "Deactivated",
            "Cancelled"
        ]
    );
    assert_eq!(field("Status")["restrictedPicklist"], true);
    assert_eq!(field("Status")["nillable"], false);
    assert!(values("Activation_Status__c").contains(&"Activating".to_owned()));
    assert_eq!(field("Activation_Status__c")["restrictedPicklist"], false);
    assert_eq!(field("Activation_Status__c")["custom"], true);
    assert_eq!(field("Activation_Status__c")["label"], "Activation Status");
    assert_eq!(field("AccountId")["referenceTo"], json!(["Account"]));
    assert_eq!(field("AccountId")["relationshipName"], "Account");
    assert_eq!(
        (
            field("AccountId")["createable"].clone(),
            field("AccountId")["updateable"].clone()
        ),
        (json!(true), json!(false))
    );
    assert_eq!(field("OrderNumber")["createable"], false);
    assert_eq!(field("OrderNumber")["autoNumber"], true);
    assert_eq!(field("Provisioning_Error__c")["length"], 255);
    assert_eq!(field("BillingCity")["compoundFieldName"], "BillingAddress");
    assert_eq!(field("BillingCity")["updateable"], true);
    assert_eq!(field("BillingAddress")["updateable"], false);
    assert_eq!(field("IsDeleted")["nillable"], false);
    assert_eq!(field("Id")["label"], "Order ID");
    assert_eq!(d["childRelationships"][0]["relationshipName"], "OrderItems");

    // Describe and a record agree: every field a record carries is described, and no other.
    let id = org.create_order(json!({})).await;
    let (_, rec) = org
        .rest(
            Method::GET,
            &format!("/services/data/v62.0/sobjects/Order/{id}"),
            None,
        )
        .await;
    let mut in_record: Vec<&str> = rec
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "attributes")
        .collect();
    let mut described: Vec<&str> = fields.iter().map(|f| f["name"].as_str().unwrap()).collect();
    in_record.sort_unstable();
    described.sort_unstable();
    assert_eq!(in_record, described);

    // A field an admin adds is described from then on.
    org.fault(json!({"kind": "schema_change", "field": "Fulfilment_Notes__c"}))
        .await;
    let (_, d) = org
        .rest(
            Method::GET,
            "/services/data/v62.0/sobjects/order/describe",
            None,
        )
        .await;
    assert!(
        d["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "Fulfilment_Notes__c" && f["type"] == "string")
    );

    let (status, d) = org
        .rest(
            Method::GET,
            "/services/data/v62.0/sobjects/Order_Fulfilment_Requested__e/describe",
            None,
        )
        .await;
    assert_eq!(status, 200, "{d}");
    let names: Vec<&str> = d["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "CreatedDate",
            "CreatedById",
            "OrderId__c",
            "RequestedBy__c",
            "Priority__c"
        ]
    );

    for path in [
        "/services/data/v62.0/sobjects/Widget__c",
        "/services/data/v62.0/sobjects/Widget__c/describe",
    ] {
        let (status, body) = org.rest(Method::GET, path, None).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body[0]["errorCode"], "NOT_FOUND");
    }
}

/// Every authenticated data API call counts against the org's daily allocation and says so in
/// `Sforce-Limit-Info` (simple-salesforce reads it into `sf.api_usage`); past the allocation the
/// answer is Salesforce's 403 `REQUEST_LIMIT_EXCEEDED`, until it is raised.
#[tokio::test]
async fn api_requests_are_counted_and_refused_past_the_daily_allocation() {
    let org = Org::start().await;
    let usage = |resp: &reqwest::Response| {
        resp.headers()
            .get("sforce-limit-info")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let get = |path: &str| org.http.get(org.url(path)).bearer_auth(&org.token).send();
    let first = get("/services/data/v62.0/sobjects/Order/describe")
        .await
        .unwrap();
    let used = org.emu.api_usage().used;
    assert_eq!(
        usage(&first),
        Some(format!("api-usage={used}/5000000")),
        "tests get a sandbox's allocation"
    );
    let next = get("/services/data/v62.0/query/?q=SELECT+Id+FROM+Order")
        .await
        .unwrap();
    assert_eq!(
        usage(&next),
        Some(format!("api-usage={}/5000000", used + 1))
    );
    // Errors count too; calls without a session, the versions list, OAuth and the control
    // API do not.
    let bad = get("/services/data/v62.0/query?q=DELETE").await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(usage(&bad).is_some());
    let anonymous = org
        .http
        .get(org.url("/services/data/v62.0/sobjects"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (anonymous.status().as_u16(), usage(&anonymous)),
        (401, None)
    );
    assert!(
        usage(
            &org.http
                .get(org.url("/services/data"))
                .send()
                .await
                .unwrap()
        )
        .is_none()
    );
    assert!(usage(&get("/services/oauth2/userinfo").await.unwrap()).is_none());
    assert!(usage(&get("/emulator/stats").await.unwrap()).is_none());
    assert_eq!(org.emu.api_usage().used, used + 2);

    // The allocation runs out: two more calls, then 403 until it is raised.
    org.fault(json!({"kind": "api_limit", "max": used + 4}))
        .await;
    for _ in 0..2 {
        assert_eq!(
            get("/services/data/v62.0/limits").await.unwrap().status(),
            200
        );
    }
    let refused = get("/services/data/v62.0/sobjects/Order/describe")
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let n = used + 4;
    assert_eq!(usage(&refused), Some(format!("api-usage={n}/{n}")));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(
        body,
        json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    );
    let (status, _) = org
        .rest(
            Method::PATCH,
            "/services/data/v62.0/composite/sobjects",
            Some(json!({"records": []})),
        )
        .await;
    assert_eq!(status, 403, "every data API route");
    // Logging in, the versions list and the control API still answer.
    let (status, _) = token_request(
        &org,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "sfcdc-demo"),
            ("client_secret", "sfcdc-demo-secret"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(org.emu.api_usage().used, n, "refused calls are not counted");

    org.fault(json!({"kind": "api_limit", "max": n + 100}))
        .await;
    let limits = get("/services/data/v62.0/limits").await.unwrap();
    assert_eq!(limits.status(), 200);
    let limits: Value = limits.json().await.unwrap();
    assert_eq!(
        limits["DailyApiRequests"],
        json!({"Max": n + 100, "Remaining": 99})
    );
    // Clearing the faults restores the Developer Edition default, keeping the usage.
    let resp = org
        .http
        .delete(org.url("/emulator/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(org.emu.api_usage().max, 15_000);
    assert_eq!(org.emu.api_usage().used, n + 1);
}

/// What clients send for Salesforce features the emulator does not have gets a clear 501 naming
/// the feature, never a 404 or 400 Salesforce would not give; a path Salesforce has no resource
/// for is still a 404.
#[tokio::test]
async fn salesforce_features_the_emulator_lacks_answer_501_and_unknown_paths_404() {
    let org = Org::start().await;
    let id = org.create_order(json!({})).await;
    let cases: Vec<(Method, String, Option<Value>, &str)> = vec![
        // simple-salesforce: sf.search(), sf.query_all(include_deleted=True), sf.Order.updated(),
        // sf.Order.deleted(), sf.Order.get_by_custom_id(), sf.Order.upsert(), sf.bulk2,
        // sf.toolingexecute().
        (Method::GET, "/services/data/v62.0/search/?q=FIND+%7BAcme%7D".into(), None, "SOSL"),
        (
            Method::GET,
            "/services/data/v62.0/queryAll/?q=SELECT+Id+FROM+Order".into(),
            None,
            "queryAll",
        ),
        (
            Method::GET,
            "/services/data/v62.0/sobjects/Order/updated/?start=2024-01-01T00:00:00%2B00:00&end=2024-01-02T00:00:00%2B00:00".into(),
            None,
            "Get Updated",
        ),
        (
            Method::GET,
            "/services/data/v62.0/sobjects/Order/deleted/?start=2024-01-01T00:00:00%2B00:00&end=2024-01-02T00:00:00%2B00:00".into(),
            None,
            "Get Deleted",
        ),
        (
            Method::GET,
            "/services/data/v62.0/sobjects/Order/WHMCS_Order_ID__c/WH-10004".into(),
            None,
            "external id",
        ),
        (
            Method::PATCH,
            "/services/data/v62.0/sobjects/Order/WHMCS_Order_ID__c/WH-10004".into(),
            Some(json!({"Description": "upserted"})),
            "external id",
        ),
        (
            Method::GET,
            format!("/services/data/v62.0/sobjects/Order/{id}/OrderItems"),
            None,
            "Relationship",
        ),
        (
            Method::POST,
            "/services/data/v62.0/jobs/ingest".into(),
            Some(json!({"object": "Order", "operation": "update"})),
            "Bulk API 2.0",
        ),
        (
            Method::GET,
            "/services/data/v62.0/tooling/query/?q=SELECT+Id+FROM+ApexClass".into(),
            None,
            "Tooling",
        ),
        // jsforce and others: composite requests, trees, batches, collection create/retrieve.
        (
            Method::POST,
            "/services/data/v62.0/composite".into(),
            Some(json!({"compositeRequest": []})),
            "Composite requests",
        ),
        (
            Method::POST,
            "/services/data/v62.0/composite/tree/Account".into(),
            Some(json!({"records": []})),
            "sObject Tree",
        ),
        (
            Method::POST,
            "/services/data/v62.0/composite/batch".into(),
            Some(json!({"batchRequests": []})),
            "Composite batch",
        ),
        (
            Method::DELETE,
            format!("/services/data/v62.0/composite/sobjects?ids={id}"),
            None,
            "retrieve and delete",
        ),
        (
            Method::GET,
            format!("/services/data/v62.0/composite/sobjects/Order?ids={id}&fields=Id"),
            None,
            "by type",
        ),
        (
            Method::GET,
            "/services/data/v62.0/sobjects/Order/describe/layouts".into(),
            None,
            "Layouts",
        ),
        (
            Method::GET,
            "/services/data/v62.0/limits/recordCount?sObjects=Order".into(),
            None,
            "Record counts",
        ),
    ];
    for (method, path, body, says) in cases {
        let (status, answer) = org.rest(method.clone(), &path, body).await;
        assert_eq!(status, 501, "{method} {path}: {answer}");
        assert_eq!(answer[0]["errorCode"], "NOT_IMPLEMENTED", "{method} {path}");
        let message = answer[0]["message"].as_str().unwrap();
        assert!(
            message.contains(says) && message.ends_with("is not emulated"),
            "{method} {path}: {message}"
        );
    }
    for path in [
        "/services/data/v62.0/nonsense",
        "/services/data/v62.0/nonsense/deeper",
        "/services/data/v62.0/composite/nonsense",
        "/services/data/v62.0/sobjects/Widget__c/updated",
        "/services/data/latest/search",
    ] {
        let (status, answer) = org.rest(Method::GET, path, None).await;
        assert_eq!(status, 404, "{path}: {answer}");
        assert_eq!(answer[0]["errorCode"], "NOT_FOUND", "{path}");
    }
    // A feature Salesforce has still needs a session.
    let resp = org
        .http
        .get(org.url("/services/data/v62.0/search?q=FIND+%7Bx%7D"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // A method a route does not take: 405 in Salesforce's shape.
    let (status, answer) = org
        .rest(
            Method::PUT,
            &format!("/services/data/v62.0/sobjects/Order/{id}"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 405, "{answer}");
    assert_eq!(answer[0]["errorCode"], "METHOD_NOT_ALLOWED");
    let message = answer[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("HTTP Method 'PUT' not allowed. Allowed are ")
            && message.contains("PATCH"),
        "{message}"
    );
}

/// Valid SOQL beyond what the emulator evaluates is a 501 naming the construct, not the
/// `MALFORMED_QUERY` Salesforce would not give; text that is not SOQL is still malformed.
#[tokio::test]
async fn valid_soql_beyond_the_subset_answers_501_and_nonsense_400() {
    let org = Org::start().await;
    for (soql, says) in [
        (
            "SELECT Id FROM Order WHERE Status = 'Draft' OR Status = 'Approved'",
            "SOQL OR is not emulated",
        ),
        (
            "SELECT Id, Account.Name FROM Order",
            "SOQL parent relationship fields (Account.Name) is not emulated",
        ),
        (
            "SELECT Status, COUNT(Id) FROM Order GROUP BY Status",
            "SOQL functions (COUNT(…)) is not emulated",
        ),
        (
            "SELECT Id FROM Order WHERE CreatedDate = LAST_N_DAYS:7",
            "SOQL date literals (LAST_N_DAYS:7) is not emulated",
        ),
    ] {
        let resp = org
            .http
            .get(org.url("/services/data/v62.0/query/"))
            .query(&[("q", soql)])
            .bearer_auth(&org.token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 501, "{soql}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body,
            json!([{"message": says, "errorCode": "NOT_IMPLEMENTED"}]),
            "{soql}"
        );
    }
    let (status, body) = org
        .rest(
            Method::GET,
            "/services/data/v62.0/query?q=SELECT+Id+FROM",
            None,
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body[0]["errorCode"], "MALFORMED_QUERY");
}
