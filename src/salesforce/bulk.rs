//! Bulk API 2.0 query: for result sets too large to page through SOQL comfortably.
//!
//! A query job is created (`POST jobs/query`), polled with a growing delay until Salesforce
//! reports `JobComplete` (or `Failed`/`Aborted`, an error naming the job), then its results are
//! read as CSV one page at a time (`maxRecords` rows), following the `Sforce-Locator` header
//! until it is the literal `null`. Memory holds one page, whatever the size of the org. Rows come
//! back as JSON objects keyed by the CSV header, an empty field as `null`, so callers read them as
//! they read REST records.

use std::time::Duration;

use serde_json::{Map, Value as Json, json};

use super::rest::{RestError, SalesforceRest};

/// How a query job is waited for and read.
#[derive(Debug, Clone, Copy)]
pub struct BulkOptions {
    /// Rows per results page.
    pub page_rows: usize,
    /// The first delay between status reads; it doubles up to `max_poll`.
    pub first_poll: Duration,
    /// The longest delay between status reads.
    pub max_poll: Duration,
    /// Give up on a job that has not completed after this long.
    pub timeout: Duration,
}

impl Default for BulkOptions {
    fn default() -> Self {
        BulkOptions {
            page_rows: 10_000,
            first_poll: Duration::from_millis(200),
            max_poll: Duration::from_secs(10),
            timeout: Duration::from_secs(3600),
        }
    }
}

/// A completed query job, read page by page.
pub struct BulkResults<'a> {
    rest: &'a SalesforceRest,
    job_id: String,
    page_rows: usize,
    /// `None` before the first page; `Some(None)` after the last.
    locator: Option<Option<String>>,
}

fn bulk_failed(job_id: &str, state: &str, message: &str) -> RestError {
    RestError::Api {
        status: 200,
        code: "BULK_QUERY_FAILED".into(),
        message: format!("Bulk API 2.0 query job {job_id} ended {state}: {message}"),
    }
}

impl SalesforceRest {
    /// Runs `soql` as a Bulk API 2.0 query job and waits for it to complete; read its rows with
    /// [`BulkResults::next_page`].
    pub async fn bulk_query(
        &self,
        soql: &str,
        options: BulkOptions,
    ) -> Result<BulkResults<'_>, RestError> {
        let body = json!({"operation": "query", "query": soql});
        let created: Json = self
            .request(|http, base| http.post(format!("{base}/jobs/query")).json(&body))
            .await?
            .json()
            .await
            .map_err(|e| RestError::Transport(e.without_url().to_string()))?;
        let job_id = created
            .get("id")
            .and_then(Json::as_str)
            .ok_or_else(|| RestError::Transport("the query job has no id".into()))?
            .to_owned();
        let started = tokio::time::Instant::now();
        let mut delay = options.first_poll;
        loop {
            let info: Json = self
                .request(|http, base| http.get(format!("{base}/jobs/query/{job_id}")))
                .await?
                .json()
                .await
                .map_err(|e| RestError::Transport(e.without_url().to_string()))?;
            let state = info.get("state").and_then(Json::as_str).unwrap_or("");
            match state {
                "JobComplete" => break,
                "Failed" | "Aborted" => {
                    let message = info
                        .get("errorMessage")
                        .and_then(Json::as_str)
                        .unwrap_or("no reason given");
                    return Err(bulk_failed(&job_id, state, message));
                }
                _ => {}
            }
            if started.elapsed() >= options.timeout {
                return Err(bulk_failed(
                    &job_id,
                    state,
                    &format!(
                        "not complete after {}",
                        humantime::format_duration(options.timeout)
                    ),
                ));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(options.max_poll);
        }
        Ok(BulkResults {
            rest: self,
            job_id,
            page_rows: options.page_rows.max(1),
            locator: None,
        })
    }
}

impl BulkResults<'_> {
    /// The job's id.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The next page of rows; `None` after the last.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Json>>, RestError> {
        let locator = match &self.locator {
            Some(None) => return Ok(None),
            Some(Some(l)) => Some(l.clone()),
            None => None,
        };
        let rows = self.page_rows.to_string();
        let resp = self
            .rest
            .request(|http, base| {
                let mut q = vec![("maxRecords", rows.clone())];
                if let Some(l) = &locator {
                    q.push(("locator", l.clone()));
                }
                http.get(format!("{base}/jobs/query/{}/results", self.job_id))
                    .query(&q)
            })
            .await?;
        let next = resp
            .headers()
            .get("Sforce-Locator")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && *v != "null")
            .map(str::to_owned);
        let body = resp
            .bytes()
            .await
            .map_err(|e| RestError::Transport(e.without_url().to_string()))?;
        self.locator = Some(next);
        parse_csv(&body).map(Some)
    }
}

/// Bulk API 2.0 CSV (a header row, then one row per record; an empty field is null) as JSON
/// objects keyed by the header.
pub fn parse_csv(body: &[u8]) -> Result<Vec<Json>, RestError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(body);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| RestError::Transport(format!("unreadable query results: {e}")))?
        .iter()
        .map(str::to_owned)
        .collect();
    let mut out = Vec::new();
    for record in reader.records() {
        let record =
            record.map_err(|e| RestError::Transport(format!("unreadable query results: {e}")))?;
        let row: Map<String, Json> = header
            .iter()
            .zip(record.iter())
            .map(|(k, v)| {
                let v = if v.is_empty() {
                    Json::Null
                } else {
                    Json::String(v.to_owned())
                };
                (k.clone(), v)
            })
            .collect();
        out.push(Json::Object(row));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_csv_reads_as_records_with_nulls_for_empty_fields() {
        let csv = b"\"Id\",\"Status\",\"WHMCS_Order_ID__c\"\n\"801Hs0000000Q0vIAE\",\"Approved\",\"\"\n\"801Hs0000000Q0wIAE\",\"Say \"\"hi\"\", now\",\"WH-1\"\n";
        let rows = parse_csv(csv).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["Id"], "801Hs0000000Q0vIAE");
        assert_eq!(rows[0]["WHMCS_Order_ID__c"], Json::Null);
        assert_eq!(rows[1]["Status"], "Say \"hi\", now");
        assert!(parse_csv(b"").unwrap().is_empty());
    }
}
