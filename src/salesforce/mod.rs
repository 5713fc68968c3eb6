//! Salesforce, as sfcdc's product code talks to it: the login every caller shares
//! ([`auth`]), the HTTPS client ([`http`]) and the REST API ([`rest`]). The Pub/Sub API's gRPC
//! channel lives with the subscriber (`source/`) but logs in through [`auth`] too.

pub mod auth;
pub mod bulk;
pub mod http;
pub mod rest;

pub use rest::{OrderLookup, RestError, RestLookup, SalesforceRest};
