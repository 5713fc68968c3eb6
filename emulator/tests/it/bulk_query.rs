//! Bulk API 2.0 query jobs over HTTPS, as a Bulk client drives them: create, poll to
//! `JobComplete`, read CSV pages by `Sforce-Locator`; quoting and nulls, `maxRecords`, the
//! snapshot taken at completion, 100k orders, the faults that fail or stall a job, abort and
//! delete, and the queries Bulk refuses or the emulator does not answer.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use sfcdc_emulator::schema::FieldValue;

use crate::common::*;

const JOBS: &str = "/services/data/v60.0/jobs/query";

async fn create(org: &Org, soql: &str) -> (u16, Value) {
    create_with(org, json!({"operation": "query", "query": soql})).await
}

async fn create_with(org: &Org, body: Value) -> (u16, Value) {
    org.rest(Method::POST, JOBS, Some(body)).await
}

/// Creates a job that must be accepted; its id.
async fn job(org: &Org, soql: &str) -> String {
    let (status, job) = create(org, soql).await;
    assert_eq!(status, 200, "{soql}: {job}");
    job["id"].as_str().unwrap().to_owned()
}

async fn info(org: &Org, id: &str) -> Value {
    let (status, info) = org.rest(Method::GET, &format!("{JOBS}/{id}"), None).await;
    assert_eq!(status, 200, "{info}");
    info
}

/// Polls a job until it leaves `UploadComplete`/`InProgress`; every state it went through.
async fn wait(org: &Org, id: &str) -> (Value, Vec<String>) {
    let mut seen: Vec<String> = Vec::new();
    let done = eventually("the job to finish", async || {
        let info = info(org, id).await;
        let state = info["state"].as_str().unwrap().to_owned();
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        (!matches!(state.as_str(), "UploadComplete" | "InProgress")).then_some(info)
    })
    .await;
    (done, seen)
}

/// One results page: the status, the CSV body and the two headers.
struct Page {
    status: u16,
    body: String,
    locator: String,
    count: String,
}

async fn page(org: &Org, id: &str, query: &[(&str, &str)]) -> Page {
    let resp = org
        .http
        .get(org.url(&format!("{JOBS}/{id}/results")))
        .query(query)
        .bearer_auth(&org.token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (locator, count) = (header("Sforce-Locator"), header("Sforce-NumberOfRecords"));
    Page {
        status,
        body: resp.text().await.unwrap(),
        locator,
        count,
    }
}

/// Every page of a job's results, following the locator; the header and the rows, each page
/// checked against its `Sforce-NumberOfRecords` and `max_records`.
async fn all_rows(
    org: &Org,
    id: &str,
    max_records: Option<usize>,
) -> (Vec<String>, Vec<Vec<String>>, usize) {
    let max = max_records.map(|m| m.to_string());
    let mut locator = String::new();
    let mut header = None;
    let mut rows = Vec::new();
    let mut pages = 0;
    loop {
        let mut q = Vec::new();
        if let Some(m) = &max {
            q.push(("maxRecords", m.as_str()));
        }
        if !locator.is_empty() {
            q.push(("locator", locator.as_str()));
        }
        let p = page(org, id, &q).await;
        assert_eq!(p.status, 200, "{}", p.body);
        pages += 1;
        let mut parsed = parse_csv(&p.body, ',', "\n");
        let this = parsed.remove(0);
        if let Some(first) = &header {
            assert_eq!(first, &this, "every page has the header");
        }
        header = Some(this);
        assert_eq!(p.count, parsed.len().to_string());
        if let Some(m) = max_records {
            assert!(parsed.len() <= m);
        }
        rows.extend(parsed);
        if p.locator == "null" {
            break;
        }
        assert!(!p.locator.is_empty(), "a page names the next or null");
        locator = p.locator;
    }
    (header.unwrap_or_default(), rows, pages)
}

/// A strict reader of Salesforce's CSV: every value quoted (doubled quotes inside), an empty
/// field for null, `eol` after each row.
fn parse_csv(text: &str, delimiter: char, eol: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut row = Vec::new();
        loop {
            if let Some(after) = rest.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    let (i, c) = chars.next().expect("a closing quote");
                    if c == '"' {
                        if after[i + 1..].starts_with('"') {
                            value.push('"');
                            chars.next();
                        } else {
                            break i + 1;
                        }
                    } else {
                        value.push(c);
                    }
                };
                row.push(value);
                rest = &after[end..];
            } else {
                row.push(String::new());
            }
            if let Some(r) = rest.strip_prefix(delimiter) {
                rest = r;
            } else {
                rest = rest
                    .strip_prefix(eol)
                    .expect("a row ends with the line ending");
                break;
            }
        }
        rows.push(row);
    }
    rows
}

#[test]
fn the_test_csv_reader_reads_what_salesforce_writes() {
    assert_eq!(
        parse_csv("\"a\",\"b\"\n\"x \"\"y\"\"\",\n,\"1\nz\"\n", ',', "\n"),
        [["a", "b"], ["x \"y\"", ""], ["", "1\nz"]]
    );
}

#[tokio::test]
async fn a_query_job_completes_and_its_results_page_by_locator() {
    let org = Org::start().await;
    org.emu.bulk(600);
    let expected = org.query("SELECT Id FROM Order").await["totalSize"]
        .as_u64()
        .unwrap() as usize;
    let (status, job) = create(
        &org,
        "SELECT Id, Status, Description, TotalAmount FROM Order",
    )
    .await;
    assert_eq!(status, 200, "{job}");
    // The creation answer is Salesforce's, field for field.
    let keys: BTreeSet<&str> = job
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "id",
            "operation",
            "object",
            "createdById",
            "createdDate",
            "systemModstamp",
            "state",
            "concurrencyMode",
            "contentType",
            "apiVersion",
            "lineEnding",
            "columnDelimiter"
        ])
    );
    assert_eq!(job["state"], "UploadComplete");
    assert_eq!(
        (job["operation"].as_str(), job["object"].as_str()),
        (Some("query"), Some("Order"))
    );
    assert_eq!(
        (
            job["contentType"].as_str(),
            job["lineEnding"].as_str(),
            job["columnDelimiter"].as_str()
        ),
        (Some("CSV"), Some("LF"), Some("COMMA"))
    );
    assert_eq!(
        (job["concurrencyMode"].as_str(), job["apiVersion"].as_f64()),
        (Some("Parallel"), Some(60.0))
    );
    let id = job["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("750"), "{id}");
    let (done, states) = wait(&org, &id).await;
    assert_eq!(done["state"], "JobComplete", "{done}");
    assert_eq!(
        states.first().map(String::as_str),
        Some("UploadComplete"),
        "{states:?}"
    );
    assert_eq!(done["numberRecordsProcessed"], expected);
    assert_eq!(
        (done["jobType"].as_str(), done["retries"].as_u64()),
        (Some("V2Query"), Some(0))
    );
    assert!(done["totalProcessingTime"].as_u64().is_some(), "{done}");

    let (header, rows, pages) = all_rows(&org, &id, Some(100)).await;
    assert_eq!(header, ["Id", "Status", "Description", "TotalAmount"]);
    assert_eq!(rows.len(), expected);
    assert_eq!(pages, expected.div_ceil(100));
    let ids: BTreeSet<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(ids.len(), expected, "every row once");
    assert!(ids.iter().all(|id| id.starts_with("801")));

    // Without maxRecords, the page is large: here, one page.
    let p = page(&org, &id, &[]).await;
    assert_eq!((p.status, p.locator.as_str()), (200, "null"));
    assert_eq!(p.count, expected.to_string());

    // The job is listed, can be deleted, and is gone after.
    let (_, list) = org.rest(Method::GET, JOBS, None).await;
    assert_eq!(list["done"], true);
    let listed = list["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == id.as_str())
        .expect("listed");
    assert_eq!(
        (listed["state"].as_str(), listed["jobType"].as_str()),
        (Some("JobComplete"), Some("V2Query"))
    );
    let (status, _) = org
        .rest(Method::DELETE, &format!("{JOBS}/{id}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, body) = org.rest(Method::GET, &format!("{JOBS}/{id}"), None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body[0]["errorCode"], "NOT_FOUND");
    assert_eq!(page(&org, &id, &[]).await.status, 404);
}

#[tokio::test]
async fn values_are_quoted_and_nulls_are_empty_fields() {
    let org = Org::start().await;
    let tricky = "He said \"hi, there\"\nthen left";
    let a = org
        .create_order(json!({"Description": tricky, "PoNumber": "PO,1"}))
        .await;
    let b = org.create_order(json!({})).await;
    let soql = format!(
        "SELECT Id, Description, PoNumber, TotalAmount, IsReductionOrder, EffectiveDate, CreatedDate \
         FROM Order WHERE Id IN ('{a}', '{b}') ORDER BY Id"
    );
    let id = job(&org, &soql).await;
    wait(&org, &id).await;
    let p = page(&org, &id, &[]).await;
    assert_eq!(p.status, 200);
    assert!(
        p.body.starts_with(
            "\"Id\",\"Description\",\"PoNumber\",\"TotalAmount\",\"IsReductionOrder\",\"EffectiveDate\",\"CreatedDate\"\n"
        ),
        "{}",
        p.body
    );
    assert!(
        p.body
            .contains("\"He said \"\"hi, there\"\"\nthen left\",\"PO,1\""),
        "quotes doubled, commas and newlines inside the quotes: {}",
        p.body
    );
    let rows = parse_csv(&p.body, ',', "\n");
    assert_eq!(rows.len(), 3);
    let (ra, rb) = (&rows[1], &rows[2]);
    assert_eq!(ra[0], a);
    assert_eq!(ra[1], tricky);
    assert_eq!(ra[2], "PO,1");
    assert_eq!(ra[3], "0.0");
    assert_eq!(ra[4], "false");
    assert_eq!(ra[5], "2024-06-01");
    assert!(ra[6].ends_with("+0000"), "{}", ra[6]);
    assert_eq!(rb[0], b);
    assert_eq!(
        (rb[1].as_str(), rb[2].as_str()),
        ("", ""),
        "null is an empty field"
    );
    let line_b = p.body.lines().last().unwrap();
    assert!(
        line_b.starts_with(&format!("\"{b}\",,,\"0.0\"")),
        "unquoted emptiness: {line_b}"
    );

    // The job's delimiter and line ending are honoured.
    let (status, piped) = create_with(
        &org,
        json!({"operation": "query", "query": format!("SELECT Id, PoNumber FROM Order WHERE Id = '{a}'"),
               "columnDelimiter": "PIPE", "lineEnding": "CRLF"}),
    )
    .await;
    assert_eq!(status, 200, "{piped}");
    assert_eq!(
        (
            piped["columnDelimiter"].as_str(),
            piped["lineEnding"].as_str()
        ),
        (Some("PIPE"), Some("CRLF"))
    );
    let id = piped["id"].as_str().unwrap();
    wait(&org, id).await;
    let p = page(&org, id, &[]).await;
    assert_eq!(
        p.body,
        format!("\"Id\"|\"PoNumber\"\r\n\"{a}\"|\"PO,1\"\r\n")
    );
    // An empty result is the header alone.
    let id = job(&org, "SELECT Id, Name FROM Order WHERE Name = 'nobody'").await;
    assert_eq!(wait(&org, &id).await.0["numberRecordsProcessed"], 0);
    let p = page(&org, &id, &[]).await;
    assert_eq!(
        (p.body.as_str(), p.locator.as_str(), p.count.as_str()),
        ("\"Id\",\"Name\"\n", "null", "0")
    );
}

/// The results are the org when the job completed: a change made while the job ran is in them,
/// one made after it completed is not, however late the pages are read.
#[tokio::test]
async fn results_are_a_snapshot_taken_when_the_job_completes() {
    let org = Org::start().await;
    let a = org
        .create_order(json!({"Description": "at creation"}))
        .await;
    org.fault(json!({"kind": "bulk_stall", "seconds": 0.4}))
        .await;
    let id = job(
        &org,
        "SELECT Id, Description FROM Order WHERE Name = 'Test order'",
    )
    .await;
    let b = org.create_order(json!({})).await;
    org.patch_order(&a, json!({"Description": "while running"}))
        .await;
    let (done, states) = wait(&org, &id).await;
    assert_eq!(done["state"], "JobComplete");
    assert!(states.iter().any(|s| s == "InProgress"), "{states:?}");
    org.patch_order(&a, json!({"Description": "after completion"}))
        .await;
    let c = org.create_order(json!({})).await;
    let (_, rows, _) = all_rows(&org, &id, Some(1)).await;
    let got: BTreeMap<&str, &str> = rows
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str()))
        .collect();
    assert_eq!(
        got,
        BTreeMap::from([(a.as_str(), "while running"), (b.as_str(), "")])
    );
    assert!(!got.contains_key(c.as_str()));
}

async fn abort_job(org: &Org, id: &str) -> (u16, Value) {
    org.rest(
        Method::PATCH,
        &format!("{JOBS}/{id}"),
        Some(json!({"state": "Aborted"})),
    )
    .await
}

/// Plants `n` orders straight into the org, without events.
fn plant_orders(org: &Org, n: usize) {
    org.emu.with_world(|w| {
        let account = w.org.pick("Account", |_| true).unwrap().to_string();
        let now = 1_717_200_000_000;
        for i in 0..n {
            let mut o = BTreeMap::new();
            o.insert("AccountId".into(), FieldValue::Str(account.clone()));
            o.insert(
                "Name".into(),
                FieldValue::Str(format!("Planted \"{i}\", ok")),
            );
            o.insert("EffectiveDate".into(), FieldValue::Long(now));
            let status = if i % 10 == 0 { "Approved" } else { "Draft" };
            o.insert("Status".into(), FieldValue::Str(status.into()));
            w.org.seed_record("Order", o, now);
        }
    });
}

#[tokio::test]
async fn a_hundred_thousand_orders_page_through_by_locator() {
    let org = Org::start().await;
    let started = Instant::now();
    plant_orders(&org, 100_000);
    let total = org.query("SELECT count() FROM Order").await["totalSize"]
        .as_u64()
        .unwrap() as usize;
    assert!(total > 100_000);
    let planted = Instant::now();
    let id = job(
        &org,
        "SELECT Id, Status, Name, LastModifiedDate FROM Order ORDER BY Id",
    )
    .await;
    let (done, _) = wait(&org, &id).await;
    assert_eq!(done["numberRecordsProcessed"], total);
    let completed = Instant::now();
    // The default page size, then a client's.
    let (header, rows, pages) = all_rows(&org, &id, None).await;
    assert_eq!(header, ["Id", "Status", "Name", "LastModifiedDate"]);
    assert_eq!((rows.len(), pages), (total, total.div_ceil(50_000)));
    let ids: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ORDER BY Id, no row twice"
    );
    assert!(
        rows.iter()
            .filter(|r| r[2].starts_with("Planted \""))
            .count()
            == 100_000
    );
    let (_, again, pages) = all_rows(&org, &id, Some(30_000)).await;
    assert_eq!((again.len(), pages), (total, total.div_ceil(30_000)));
    assert_eq!(again, rows, "the same snapshot, however it is paged");
    let approved = job(&org, "SELECT Id FROM Order WHERE Status = 'Approved'").await;
    wait(&org, &approved).await;
    let (_, approved, _) = all_rows(&org, &approved, Some(7_000)).await;
    assert!(approved.len() >= 10_000, "{}", approved.len());
    eprintln!(
        "100k orders: planted in {:.2} s, job complete in {:.2} s, read twice in {:.2} s",
        (planted - started).as_secs_f64(),
        (completed - planted).as_secs_f64(),
        completed.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn a_failed_job_says_why_and_the_next_is_healthy() {
    let org = Org::start().await;
    org.fault(json!({"kind": "bulk_fail"})).await;
    let id = job(&org, "SELECT Id FROM Order").await;
    let (done, _) = wait(&org, &id).await;
    assert_eq!(done["state"], "Failed");
    assert!(
        done["errorMessage"].as_str().is_some_and(|m| !m.is_empty()),
        "{done}"
    );
    let p = page(&org, &id, &[]).await;
    assert_eq!(p.status, 400, "a failed job has no results: {}", p.body);
    let (status, _) = org
        .rest(Method::DELETE, &format!("{JOBS}/{id}"), None)
        .await;
    assert_eq!(status, 204, "a failed job can be deleted");
    // The fault was for one job.
    let id = job(&org, "SELECT Id FROM Order").await;
    assert_eq!(wait(&org, &id).await.0["state"], "JobComplete");
    let p = page(&org, &id, &[("locator", "garbage")]).await;
    assert_eq!(p.status, 400, "{}", p.body);
    let p = page(&org, &id, &[("maxRecords", "0")]).await;
    assert_eq!(p.status, 400, "{}", p.body);
    let p = page(
        &org,
        &id,
        &[("maxRecords", "1"), ("maxRecords", "2"), ("other", "x")],
    )
    .await;
    assert_eq!(
        (p.status, p.count.as_str()),
        (200, "1"),
        "the first of each, others ignored"
    );
    let p = page(&org, &id, &[("maxRecords", "lots")]).await;
    assert_eq!(p.status, 400);
    let error: Value = serde_json::from_str(&p.body).unwrap();
    assert_eq!(
        error[0]["errorCode"], "INVALIDREQUEST",
        "Salesforce-shaped: {error}"
    );
}

#[tokio::test]
async fn a_stalled_job_stays_in_progress_until_its_time_or_until_aborted() {
    let org = Org::start().await;
    // With a duration: in progress that long, then complete by itself.
    org.fault(json!({"kind": "bulk_stall", "seconds": 0.5}))
        .await;
    let started = Instant::now();
    let id = job(&org, "SELECT Id FROM Order").await;
    let (done, states) = wait(&org, &id).await;
    assert_eq!(done["state"], "JobComplete");
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(states, ["UploadComplete", "InProgress", "JobComplete"]);

    // Without one (the flag form `bulk-stall`): in progress until aborted.
    let outcome = org.fault(json!({"kind": "bulk_stall"})).await;
    assert!(
        outcome["applied"]
            .as_str()
            .unwrap()
            .contains("until aborted"),
        "{outcome}"
    );
    let id = job(&org, "SELECT Id FROM Order").await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_ne!(info(&org, &id).await["state"], "JobComplete");
    }
    assert_eq!(info(&org, &id).await["state"], "InProgress");
    let p = page(&org, &id, &[]).await;
    assert_eq!(p.status, 400, "no results before completion: {}", p.body);
    let (status, body) = org
        .rest(Method::DELETE, &format!("{JOBS}/{id}"), None)
        .await;
    assert_eq!(
        status, 400,
        "a running job is aborted before it is deleted: {body}"
    );
    let abort = |state: &'static str| {
        let path = format!("{JOBS}/{id}");
        let org = &org;
        async move {
            org.rest(Method::PATCH, &path, Some(json!({"state": state})))
                .await
        }
    };
    let (status, _) = abort("JobComplete").await;
    assert_eq!(status, 400, "a query job can only be aborted");
    let (status, info_) = abort("Aborted").await;
    assert_eq!(
        (status, info_["state"].as_str()),
        (200, Some("Aborted")),
        "{info_}"
    );
    assert_eq!(info(&org, &id).await["state"], "Aborted");
    let (status, _) = abort("Aborted").await;
    assert_eq!(status, 400, "an aborted job stays aborted");
    let (status, _) = org
        .rest(Method::DELETE, &format!("{JOBS}/{id}"), None)
        .await;
    assert_eq!(status, 204);
    // A stall too long for the clock is as good as for ever; a negative one is refused.
    for (seconds, status) in [(json!(1e300), 200), (json!(-1), 400), (json!("1s"), 400)] {
        let resp = org
            .http
            .post(org.url("/emulator/faults"))
            .json(&json!({"kind": "bulk_stall", "seconds": seconds}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{seconds}");
    }
    let id = job(&org, "SELECT Id FROM Order").await;
    info(&org, &id).await;
    assert_eq!(info(&org, &id).await["state"], "InProgress");
    let (status, _) = abort_job(&org, &id).await;
    assert_eq!(status, 200);
    // A job still in UploadComplete may be deleted too.
    let id = job(&org, "SELECT Id FROM Order").await;
    let (status, _) = org
        .rest(Method::DELETE, &format!("{JOBS}/{id}"), None)
        .await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn queries_bulk_refuses_are_400s_and_what_is_not_emulated_is_501() {
    let org = Org::start().await;
    for soql in [
        "SELECT count() FROM Order",
        "SELECT COUNT(Id) FROM Order",
        "SELECT Status FROM Order GROUP BY Status",
        "SELECT Id FROM Order OFFSET 10",
        "SELECT Id, (SELECT Id FROM OrderItems) FROM Order",
        "SELECT Nope__c FROM Order",
        "SELECT Id FROM Nope__c",
        "not soql",
    ] {
        let (status, body) = create(&org, soql).await;
        assert_eq!(status, 400, "{soql}: {body}");
        assert_eq!(body[0]["errorCode"], "INVALIDJOB", "{soql}: {body}");
    }
    let (status, body) = create(&org, "SELECT Id, BillingAddress FROM Order").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body[0]["errorCode"], "API_ERROR");
    assert_eq!(
        body[0]["message"],
        "Selecting compound data not supported in Bulk Query"
    );
    // The components of a compound field are fine.
    let id = job(&org, "SELECT Id, BillingCity FROM Order").await;
    assert_eq!(wait(&org, &id).await.0["state"], "JobComplete");

    for soql in [
        "SELECT Id, Account.Name FROM Order",
        "SELECT Id FROM Order WHERE Status = 'Draft' OR Status = 'Approved'",
    ] {
        let (status, body) = create(&org, soql).await;
        assert_eq!(status, 501, "{soql}: {body}");
        assert_eq!(body[0]["errorCode"], "NOT_IMPLEMENTED", "{soql}: {body}");
    }
    let (status, body) = create_with(
        &org,
        json!({"operation": "queryAll", "query": "SELECT Id FROM Order"}),
    )
    .await;
    assert_eq!(status, 501, "{body}");

    for bad in [
        json!({"operation": "insert", "query": "SELECT Id FROM Order"}),
        json!({"query": "SELECT Id FROM Order"}),
        json!({"operation": "query"}),
        json!({"operation": "query", "query": 7}),
        json!({"operation": "query", "query": "SELECT Id FROM Order", "columnDelimiter": "SPACE"}),
        json!({"operation": "query", "query": "SELECT Id FROM Order", "lineEnding": "CR"}),
        json!({"operation": "query", "query": "SELECT Id FROM Order", "contentType": "JSON"}),
        json!(["not an object"]),
    ] {
        let (status, body) = create_with(&org, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let resp = org
        .http
        .post(org.url(JOBS))
        .bearer_auth(&org.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let (status, _) = org
        .rest(Method::GET, &format!("{JOBS}/750Hs0000000001AAA"), None)
        .await;
    assert_eq!(status, 404);
    // Without a session, nothing.
    let resp = org.http.get(org.url(JOBS)).send().await.unwrap();
    assert_eq!(resp.status(), 401);
}
