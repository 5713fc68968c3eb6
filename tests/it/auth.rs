//! Logging in with every `SF_AUTH` method against the emulator, and refreshing.

use std::sync::Arc;
use std::time::Duration;

use sfcdc::config::Env;
use sfcdc::salesforce::auth::{AuthConfig, AuthError, Authenticator};
use sfcdc::telemetry::metrics::Metrics;
use sfcdc_emulator::EmulatorConfig;

use crate::common::*;

const KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/jwt-test-key.pem"
);
const PUB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/jwt-test-key.pub.pem"
);

async fn jwt_org() -> Org {
    let mut config = test_config();
    config.credentials.jwt_public_key = Some(std::fs::read_to_string(PUB).unwrap());
    Org::start_with(config).await
}

fn authenticator(org: &Org, dir: &std::path::Path, extra: &[(&str, &str)]) -> Authenticator {
    let env: Env = org.subscriber_env(dir, extra);
    let config = AuthConfig::from_env(&env).expect("auth config");
    let ca = env.get("SFCDC_CA_CERT").map(std::path::PathBuf::from);
    let http = sfcdc::salesforce::http::http_client(ca.as_deref()).unwrap();
    Authenticator::new(config, http, Arc::new(Metrics::new()))
}

#[tokio::test]
async fn every_method_logs_in_and_finds_the_org_id() {
    let org = jwt_org().await;
    let dir = tempfile::tempdir().unwrap();
    let token = org.emu.issue_token();
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("SF_AUTH", "client-credentials")],
        vec![
            ("SF_AUTH", "password"),
            ("SF_USERNAME", "demo@sfcdc.test"),
            ("SF_PASSWORD", "sfcdc-demo-password"),
        ],
        vec![
            ("SF_AUTH", "jwt-bearer"),
            ("SF_USERNAME", "demo@sfcdc.test"),
            ("SF_PRIVATE_KEY_FILE", KEY),
        ],
        vec![
            ("SF_AUTH", "token"),
            ("SF_ACCESS_TOKEN", &token),
            ("SF_INSTANCE_URL", org.emu.instance_url()),
        ],
        vec![
            ("SF_AUTH", "token"),
            ("SF_ACCESS_TOKEN", &token),
            ("SF_INSTANCE_URL", org.emu.instance_url()),
            ("SF_ORG_ID", &org.emu.org_id()[..15]),
        ],
    ];
    for extra in cases {
        let auth = authenticator(&org, dir.path(), &extra);
        let session = auth
            .session()
            .await
            .unwrap_or_else(|e| panic!("{extra:?}: {e}"));
        assert_eq!(session.org_id, org.emu.org_id(), "{extra:?}");
        assert_eq!(session.instance_url, org.emu.instance_url());
        assert_eq!(session.generation, 1);
    }
    // Only the token method with SF_ORG_ID skipped userinfo.
    assert_eq!(org.emu.stats().calls("GET /services/oauth2/userinfo"), 4);
}

#[tokio::test]
async fn bad_credentials_are_refused_for_good_without_leaking_them() {
    let org = jwt_org().await;
    let dir = tempfile::tempdir().unwrap();
    let auth = authenticator(
        &org,
        dir.path(),
        &[
            ("SF_AUTH", "password"),
            ("SF_USERNAME", "demo@sfcdc.test"),
            ("SF_PASSWORD", "wrong-password-value"),
        ],
    );
    let err = auth.session().await.unwrap_err();
    assert!(matches!(err, AuthError::Rejected { .. }), "{err:?}");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(
        text.contains("invalid_grant") && !text.contains("wrong-password-value"),
        "{text}"
    );

    // The subscriber stops the channel with that message.
    let s = org
        .subscribe(
            &[
                ("SF_AUTH", "password"),
                ("SF_USERNAME", "demo@sfcdc.test"),
                ("SF_PASSWORD", "wrong-password-value"),
            ],
            Arc::new(MemorySink::new()),
        )
        .await;
    let err = s.finished().await.unwrap_err().to_string();
    assert!(
        err.contains("refused") && !err.contains("wrong-password-value"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_login_is_retryable() {
    let org = Org::start().await;
    let dir = tempfile::tempdir().unwrap();
    let auth = authenticator(&org, dir.path(), &[("SF_LOGIN_URL", "https://127.0.0.1:9")]);
    let err = auth.session().await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn concurrent_refreshes_share_one_login() {
    let org = Org::start().await;
    let dir = tempfile::tempdir().unwrap();
    let auth = Arc::new(authenticator(&org, dir.path(), &[]));
    let first = auth.session().await.unwrap();
    let before = org.emu.stats().calls("POST /services/oauth2/token");
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let auth = auth.clone();
        let seen = first.generation;
        tasks.push(tokio::spawn(async move {
            auth.refresh(seen).await.unwrap().generation
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 2);
    }
    assert_eq!(
        org.emu.stats().calls("POST /services/oauth2/token"),
        before + 1
    );
}

#[tokio::test]
async fn a_static_token_cannot_be_refreshed_and_says_so() {
    let org = Org::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = org.emu.issue_token();
    let auth = authenticator(
        &org,
        dir.path(),
        &[
            ("SF_AUTH", "token"),
            ("SF_ACCESS_TOKEN", &token),
            ("SF_INSTANCE_URL", org.emu.instance_url()),
        ],
    );
    let s = auth.session().await.unwrap();
    let err = auth.refresh(s.generation).await.unwrap_err();
    assert!(matches!(err, AuthError::CannotRefresh));
    assert!(err.to_string().contains("SF_ACCESS_TOKEN"));
}

#[tokio::test]
async fn tokens_with_a_known_lifetime_are_refreshed_before_they_expire() {
    let org = Org::start_with(EmulatorConfig {
        token_lifetime: Duration::from_millis(1500),
        ..test_config()
    })
    .await;
    org.emu.bulk(20);
    let s = org
        .subscribe(
            &[
                ("SFCDC_REPLAY_PRESET", "earliest"),
                ("SF_SESSION_TIMEOUT", "1500ms"),
                ("SFCDC_BATCH_SIZE", "10"),
            ],
            Arc::new(MemorySink::new()),
        )
        .await;
    s.wait_for(20).await;
    eventually("proactive refreshes", async || {
        (s.metric("sfcdc_auth_refreshes_total", &[]) >= 2.0).then_some(())
    })
    .await;
    // The stream keeps working across refreshes: new events still arrive, exactly once.
    org.emu.bulk(30);
    s.wait_for(50).await;
    assert_eq!(committed(&s.sink), org.sequence("/data/OrderChangeEvent"));
    s.stop().await.unwrap();
}
