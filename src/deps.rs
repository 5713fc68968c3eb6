//! What every component of the service is built from: one [`Deps`] per process, holding the
//! metrics, the store, the HTTPS client, the Salesforce login and REST client, the rules and the
//! clock.
//! Each component's settings build it from these (`WorkerConfig::build(&deps)`, …), so `sfcdc
//! run`, the demo and the benchmarks wire a component one way only.

use std::path::Path;
use std::sync::Arc;

use crate::clock::Clock;
use crate::config::ConfigError;
use crate::rules::RulesConfig;
use crate::salesforce::SalesforceRest;
use crate::salesforce::auth::{AuthConfig, Authenticator};
use crate::store::AnyStore;
use crate::telemetry::metrics::Metrics;

/// What every component is built from.
#[derive(Clone)]
pub struct Deps {
    /// This instance's metrics.
    pub metrics: Arc<Metrics>,
    /// The store, opened and migrated.
    pub store: Arc<AnyStore>,
    /// The HTTPS client (OAuth, REST, fulfilment, notifiers), trusting `SFCDC_CA_CERT`.
    pub http: reqwest::Client,
    /// The Salesforce login every caller shares.
    pub auth: Arc<Authenticator>,
    /// The Salesforce REST client.
    pub rest: Arc<SalesforceRest>,
    /// The provisioning rules.
    pub rules: Arc<RulesConfig>,
    /// The time every component judges by.
    pub clock: Clock,
}

impl Deps {
    /// Prepares the login and the REST client over `store`, trusting `ca_cert` as well as the
    /// public roots. Nothing connects to Salesforce yet.
    pub fn build(
        store: AnyStore,
        ca_cert: Option<&Path>,
        auth: AuthConfig,
        api_version: &str,
        rules: RulesConfig,
        clock: Clock,
    ) -> Result<Deps, ConfigError> {
        let metrics = Arc::new(Metrics::new());
        let http = crate::salesforce::http::http_client(ca_cert)
            .map_err(|e| ConfigError::new("SFCDC_CA_CERT", e))?;
        let auth = Arc::new(Authenticator::new(auth, http.clone(), metrics.clone()));
        let rest = Arc::new(SalesforceRest::new(auth.clone(), api_version.to_owned()));
        Ok(Deps {
            metrics,
            store: Arc::new(store),
            http,
            auth,
            rest,
            rules: Arc::new(rules),
            clock,
        })
    }
}
