//! The console in a real browser: headless Chromium, driven over WebDriver by chromedriver,
//! against the service and the emulator in this process. An operator logs in, sees the
//! overview, filters the dead jobs, retries one and watches it complete, re-drives a
//! quarantined event, and finds both in the audit trail; a viewer sees no button and a forged
//! form is refused; a hostile reason shows as text. The pages of the overview, a job and the
//! quarantine are saved as PNGs (in `$CARGO_TARGET_TMPDIR/console-screenshots`, or in
//! `SFCDC_SCREENSHOTS` when set: `SFCDC_SCREENSHOTS=docs` refreshes the README's).
//!
//! Without chromium and chromedriver the test prints a loud SKIPPED line, unless `CI` or
//! `SFCDC_REQUIRE_BROWSER=1` is set, where it fails.

use std::time::Duration;

use serde_json::json;
use sfcdc::store::queue::Queue;
use sfcdc::store::{JobState, Store};

use crate::common::webdriver::Driver;
use crate::common::*;
use crate::console::{ADMIN_TOKEN, READ_TOKEN};

const HOSTILE: &str =
    "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\"> decoded nothing";

fn screenshot_dir() -> std::path::PathBuf {
    match std::env::var("SFCDC_SCREENSHOTS") {
        Ok(d) if !d.is_empty() => {
            let p = std::path::PathBuf::from(d);
            if p.is_absolute() {
                p
            } else {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
            }
        }
        _ => std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"),
    }
}

async fn save(driver: &Driver, name: &str) {
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let png = driver.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = dir.join(format!("console-{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

async fn login(driver: &Driver, base: &str, token: &str) {
    driver.goto(&format!("{base}/console/login")).await;
    let field = driver.find("input[name=token]").await;
    driver.type_into(&field, token).await;
    driver
        .click(&driver.find("form button[type=submit]").await)
        .await;
    driver.find("body[data-live]").await;
}

/// Waits until the page holds `css`, reloading nothing: the console's own refresh brings it.
async fn appears(driver: &Driver, css: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while driver.all(css).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{css} never appeared on {}:\n{}",
            driver.url().await,
            driver.source().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the browser has navigated to a URL containing `part` (a form's submit returns
/// before the next page has loaded; until then the page before is still the one shown).
async fn navigated(driver: &Driver, part: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let url = driver.url().await;
        if url.contains(part) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never navigated to {part}: still on {url}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_operator_and_a_viewer_use_the_console_in_a_browser() {
    // The emulator first: it installs the TLS provider every HTTP client here uses.
    let org = Org::start().await;
    let Some(driver) = Driver::start().await else {
        return;
    };
    // Demo data: approvals that complete, two that die in a 503 storm, a corrupt event, and a
    // re-drivable event quarantined with a hostile reason.
    let env = crate::worker::worker_env(
        &org,
        &[
            ("SFCDC_ADMIN_TOKEN", ADMIN_TOKEN),
            ("SFCDC_READ_TOKEN", READ_TOKEN),
            ("SFCDC_ADMIN_INSECURE_COOKIES", "true"),
            ("SFCDC_MAX_ATTEMPTS", "2"),
        ],
    );
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = run_app(&org, tempfile::tempdir().unwrap(), &pairs).await;
    let store = r.app.store().clone();
    live(&*store, &[ORDERS]).await;
    let d = drafts(&org).await;
    assert!(d.len() >= 5, "{d:?}");
    for o in &d[..3] {
        org.patch_order(o, json!({"Status": "Approved"})).await;
    }
    eventually("three completed jobs", async || {
        let done = store
            .jobs(&sfcdc::store::JobFilter {
                state: Some(JobState::Completed),
                ..Default::default()
            })
            .await
            .unwrap();
        (done.len() == 3).then_some(())
    })
    .await;
    org.emu.fulfilment().update(|c| {
        c.error_rate = 1.0;
        c.sync_rate = 1.0;
    });
    for o in &d[3..5] {
        org.patch_order(o, json!({"Status": "Approved"})).await;
    }
    let dead = eventually("two dead jobs", async || {
        let dead = store
            .jobs(&sfcdc::store::JobFilter {
                state: Some(JobState::Dead),
                ..Default::default()
            })
            .await
            .unwrap();
        (dead.len() == 2).then_some(dead)
    })
    .await;
    org.fault(json!({"kind": "corrupt_next"})).await;
    org.patch_order(&d[0], json!({"Description": "touched"}))
        .await;
    caught_up(&org, &*store, &[ORDERS]).await;
    let good = org.emu.with_world(|w| {
        w.bus
            .read_after(ORDERS, 0, usize::MAX, usize::MAX)
            .into_iter()
            .rfind(|e| e.payload.len() > 100)
            .unwrap()
    });
    store
        .commit_batch(&sfcdc::store::StoreBatch {
            channel: ORDERS.into(),
            quarantine: vec![sfcdc::store::NewQuarantine {
                channel: ORDERS.into(),
                replay_id: vec![0, 0, 0, 0, 0, 0, 0x0f, 0xff],
                schema_id: good.schema_id.clone(),
                event_id: good.event_id.clone(),
                payload: good.payload.to_vec(),
                reason: HOSTILE.into(),
                kind: "rule".into(),
            }],
            now_ms: sfcdc::clock::now_ms(),
            ..Default::default()
        })
        .await
        .unwrap();
    let quarantined = store.quarantined(true).await.unwrap();
    assert_eq!(quarantined.len(), 2, "{quarantined:?}");
    let planted = quarantined.iter().find(|q| q.reason == HOSTILE).unwrap().id;
    let corrupt = quarantined.iter().find(|q| q.reason != HOSTILE).unwrap().id;
    let base = format!("http://{}", r.app.admin_addr().unwrap());

    // The operator logs in and sees the overview: the channel, the counts, the chart.
    login(&driver, &base, ADMIN_TOKEN).await;
    assert_eq!(driver.url().await, format!("{base}/console"));
    let overview = driver.source().await;
    assert!(overview.contains(ORDERS), "the channel row");
    let dead_tile = driver
        .find("a.tile[href='/console/jobs?state=dead'] b")
        .await;
    assert_eq!(driver.text(&dead_tile).await, "2");
    let q_tile = driver.find("a.tile[href='/console/quarantine'] b").await;
    assert_eq!(driver.text(&q_tile).await, "2");
    assert!(!driver.all("svg.chart rect.events").await.is_empty());
    save(&driver, "overview").await;

    // Filter the dead jobs with the form, open one, retry it, and watch it complete.
    driver.goto(&format!("{base}/console/jobs")).await;
    driver
        .click(&driver.find("select[name=state] option[value=dead]").await)
        .await;
    driver
        .click(&driver.find("form.filters button[type=submit]").await)
        .await;
    navigated(&driver, "state=dead").await;
    appears(&driver, "b.count").await;
    assert_eq!(driver.all("tr[data-job]").await.len(), 2);
    let target = dead[0].id;
    driver
        .click(&driver.find(&format!("tr[data-job='{target}'] a")).await)
        .await;
    driver.find("#retry").await;
    assert!(
        driver
            .url()
            .await
            .ends_with(&format!("/console/jobs/{target}"))
    );
    save(&driver, "job").await;
    org.emu.fulfilment().update(|c| c.error_rate = 0.0);
    driver.click(&driver.find("#retry").await).await;
    appears(&driver, "div.notice.ok").await;
    appears(&driver, "#live .state.completed").await;
    let job = store.job(target).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.generation, 1, "a new operation");

    // The quarantine: the hostile reason is text, and the good event re-drives.
    driver.goto(&format!("{base}/console/quarantine")).await;
    appears(&driver, "table.quarantine").await;
    let shown: Vec<String> = {
        let mut v = Vec::new();
        for e in driver.all("td.reason").await {
            v.push(driver.text(&e).await);
        }
        v
    };
    assert!(
        shown
            .iter()
            .any(|t| t.contains("<script>window.__pwned=1</script>")),
        "{shown:?}"
    );
    assert_eq!(
        driver
            .script("return window.__pwned === undefined", json!([]))
            .await,
        true
    );
    save(&driver, "quarantine").await;
    driver
        .goto(&format!("{base}/console/quarantine/{planted}"))
        .await;
    let reason = driver.find("p.reason").await;
    assert_eq!(driver.text(&reason).await, HOSTILE);
    assert_eq!(
        driver
            .script("return window.__pwned === undefined", json!([]))
            .await,
        true
    );
    assert!(driver.source().await.contains("00000000  "), "the hex view");
    save(&driver, "quarantined-event").await;
    driver.click(&driver.find("#redrive").await).await;
    appears(&driver, "div.notice.ok").await;
    assert_eq!(
        store
            .quarantine_entry(planted)
            .await
            .unwrap()
            .unwrap()
            .state,
        "resolved"
    );

    // Both actions are in the audit trail, under this session.
    driver.goto(&format!("{base}/console/audit")).await;
    appears(&driver, "table.audit").await;
    let trail = driver.text(&driver.find("table.audit").await).await;
    assert!(
        trail.contains(&format!("job.retry job {target}")),
        "{trail}"
    );
    assert!(
        trail.contains(&format!("quarantine.redrive quarantined event {planted}")),
        "{trail}"
    );
    let entries = sfcdc::store::audit::Audit::audit_trail(&*store, 10, None)
        .await
        .unwrap();
    assert!(
        entries
            .iter()
            .take(2)
            .all(|a| a.via == "console" && a.outcome == "ok" && a.role == "operator")
    );

    // Log out; the viewer sees no button, and a forged form is refused.
    driver.click(&driver.find("header form button").await).await;
    driver.find("input[name=token]").await;
    login(&driver, &base, READ_TOKEN).await;
    let other = dead[1].id;
    driver.goto(&format!("{base}/console/jobs/{other}")).await;
    driver.find("#live").await;
    assert!(driver.all("#retry").await.is_empty() && driver.all("#cancel").await.is_empty());
    driver
        .goto(&format!("{base}/console/quarantine/{corrupt}"))
        .await;
    driver.find("pre.hex").await;
    assert!(driver.all("#redrive").await.is_empty());
    driver
        .goto(&format!("{base}/console/jobs?state=dead"))
        .await;
    appears(&driver, "tr[data-job]").await;
    assert!(driver.all("#bulk-retry").await.is_empty());
    let status = driver
        .script_async(
            "const done = arguments[arguments.length - 1];
             const csrf = document.querySelector('input[name=csrf]').value;
             fetch('/console/jobs/' + arguments[0] + '/retry', {method: 'POST',
                 headers: {'Content-Type': 'application/x-www-form-urlencoded'},
                 body: 'csrf=' + encodeURIComponent(csrf)})
               .then(r => done(r.status), e => done(String(e)));",
            json!([other]),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        store.job(other).await.unwrap().unwrap().state,
        JobState::Dead
    );
    let refused = sfcdc::store::audit::Audit::audit_trail(&*store, 1, None)
        .await
        .unwrap();
    assert_eq!(
        (refused[0].role.as_str(), refused[0].outcome.as_str()),
        ("viewer", "refused")
    );
    driver.quit().await;
    r.stop().await;
}
