//! Bulk API 2.0 query jobs: create, poll to `JobComplete`, CSV pages by `Sforce-Locator`; the
//! snapshot, the faults that fail or stall a job, abort and delete; and queries Bulk refuses.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

const JOBS: &str = "/services/data/v60.0/jobs/query";

async fn create(org: &Org, soql: &str) -> (u16, Value) {
    org.rest(
        Method::POST,
        JOBS,
        Some(json!({"operation": "query", "query": soql})),
    )
    .await
}

/// Polls a job until it leaves `UploadComplete`/`InProgress`; every state it went through.
async fn wait(org: &Org, id: &str) -> (Value, Vec<String>) {
    let mut seen = Vec::new();
    loop {
        let (status, info) = org.rest(Method::GET, &format!("{JOBS}/{id}"), None).await;
        assert_eq!(status, 200, "{info}");
        let state = info["state"].as_str().unwrap().to_owned();
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        if !matches!(state.as_str(), "UploadComplete" | "InProgress") {
            return (info, seen);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// One results page: the status, the CSV body and the two headers.
async fn page(org: &Org, id: &str, query: &[(&str, &str)]) -> (u16, String, String, String) {
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
    (status, resp.text().await.unwrap(), locator, count)
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
    assert_eq!(job["state"], "UploadComplete");
    assert_eq!(
        (job["operation"].as_str(), job["object"].as_str()),
        (Some("query"), Some("Order"))
    );
    assert_eq!(
        (job["contentType"].as_str(), job["lineEnding"].as_str()),
        (Some("CSV"), Some("LF"))
    );
    let id = job["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("750"), "{id}");
    let (done, states) = wait(&org, &id).await;
    assert_eq!(done["state"], "JobComplete", "{done}");
    assert!(states.iter().any(|s| s == "InProgress"), "{states:?}");
    assert_eq!(done["numberRecordsProcessed"], expected);

    // A change after completion is not in the results: they are the snapshot.
    org.create_order(json!({})).await;

    let mut rows = Vec::new();
    let mut locator = String::new();
    let mut pages = 0;
    loop {
        let mut q = vec![("maxRecords", "100")];
        if !locator.is_empty() {
            q.push(("locator", locator.as_str()));
        }
        let (status, body, next, count) = page(&org, &id, &q).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        let mut lines = body.lines();
        assert_eq!(
            lines.next(),
            Some(r#""Id","Status","Description","TotalAmount""#)
        );
        let page_rows: Vec<&str> = lines.collect();
        assert_eq!(count, page_rows.len().to_string());
        assert!(page_rows.len() <= 100);
        rows.extend(page_rows.into_iter().map(str::to_owned));
        if next == "null" {
            break;
        }
        locator = next;
    }
    assert_eq!(rows.len(), expected);
    assert_eq!(pages, expected.div_ceil(100));
    // Every value quoted; null is an empty field.
    assert!(
        rows.iter().all(|r| r.starts_with("\"801")),
        "{:?}",
        &rows[..2]
    );
    assert!(
        rows.iter().any(|r| r.contains(",,")),
        "a null Description is an empty field"
    );

    // The job is listed, can be deleted, and is gone after.
    let (_, list) = org.rest(Method::GET, JOBS, None).await;
    assert!(
        list["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == id.as_str())
    );
    let (status, _) = org
        .rest(Method::DELETE, &format!("{JOBS}/{id}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, body) = org.rest(Method::GET, &format!("{JOBS}/{id}"), None).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn bad_requests_and_unfinished_jobs_are_refused_as_salesforce_does() {
    let org = Org::start().await;
    for soql in [
        "SELECT count() FROM Order",
        "SELECT Id, (SELECT Id FROM OrderItems) FROM Order",
        "SELECT Nope__c FROM Order",
        "not soql",
    ] {
        let (status, body) = create(&org, soql).await;
        assert_eq!(status, 400, "{soql}: {body}");
        assert_eq!(body[0]["errorCode"], "INVALIDJOB", "{soql}: {body}");
    }
    let (status, body) = org
        .rest(
            Method::POST,
            JOBS,
            Some(json!({"operation": "insert", "query": "SELECT Id FROM Order"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // A stalled job: results are refused until it completes; it can be aborted.
    org.fault(json!({"kind": "bulk_stall", "seconds": 30.0}))
        .await;
    let (_, job) = create(&org, "SELECT Id FROM Order").await;
    let id = job["id"].as_str().unwrap();
    let (status, body, _, _) = page(&org, id, &[]).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, _, _) = page(&org, id, &[("maxRecords", "0")]).await;
    assert_eq!(status, 400);
    let (status, info) = org
        .rest(
            Method::PATCH,
            &format!("{JOBS}/{id}"),
            Some(json!({"state": "Aborted"})),
        )
        .await;
    assert_eq!(
        (status, info["state"].as_str()),
        (200, Some("Aborted")),
        "{info}"
    );
    let (status, _) = org
        .rest(
            Method::PATCH,
            &format!("{JOBS}/{id}"),
            Some(json!({"state": "Aborted"})),
        )
        .await;
    assert_eq!(status, 400, "an aborted job stays aborted");

    // A failed job says why.
    org.fault(json!({"kind": "bulk_fail"})).await;
    let (_, job) = create(&org, "SELECT Id FROM Order").await;
    let (done, _) = wait(&org, job["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "Failed");
    assert!(
        done["errorMessage"].as_str().is_some_and(|m| !m.is_empty()),
        "{done}"
    );
    // The next one is healthy again, and a garbage locator is refused.
    let (_, job) = create(&org, "SELECT Id FROM Order").await;
    let id = job["id"].as_str().unwrap();
    assert_eq!(wait(&org, id).await.0["state"], "JobComplete");
    let (status, body, _, _) = page(&org, id, &[("locator", "garbage")]).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn the_wildcard_fault_names_an_order_change_by_its_key_prefix() {
    let org = Org::start().await;
    let order = org.create_order(json!({})).await;
    org.fault(json!({"kind": "wildcard_ids", "count": 1})).await;
    org.patch_order(&order, json!({"Description": "changed"}))
        .await;
    org.patch_order(&order, json!({"Description": "again"}))
        .await;
    let ids: Vec<Vec<String>> = org.emu.with_world(|w| {
        let events = w
            .bus
            .read_after("/data/OrderChangeEvent", 0, usize::MAX, usize::MAX);
        events[events.len() - 2..]
            .iter()
            .map(|e| {
                let schema = w.schema(&e.schema_id).unwrap();
                let v = decode(&schema.json, &e.payload);
                strings(field(field(&v, "ChangeEventHeader"), "recordIds"))
            })
            .collect()
    });
    assert_eq!(ids[0], ["801*"]);
    assert_eq!(ids[1], [order.as_str()], "one event only");
}
