//! Integration tests: the real application on a random port, real git repositories served by
//! `git daemon`, the real promtool, Prometheus and Alertmanager (Debian packages), an OTLP
//! receiver on loopback for traces, kubectl's kustomize for the deploy manifests.

mod helpers;
mod monitoring;

mod alerts;
mod artifact_store;
mod audit;
mod cli;
mod clone;
mod cluster;
mod collection;
mod connections;
mod corpus;
mod dashboards;
mod deploy;
mod docs;
mod external_tools;
mod faults;
mod findings;
mod group_commit;
mod hostile_input;
mod layers;
mod lifecycle;
mod load;
mod never_in_clear;
mod openapi;
mod ops;
mod osv;
mod postgres;
mod prometheus;
mod properties;
mod sbom;
mod scanning;
mod sealed_credentials;
mod security_access;
mod source_safety;
mod stream;
mod stream_limits;
mod traces;
mod upload;
mod upload_helpers;
mod url_credentials;
mod validation;
