//! Logs and traces: the log format and filter, and the span export the standard OpenTelemetry
//! variables ask for.

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for log collectors).
    Json,
    /// Human-readable, coloured when writing to a terminal.
    Pretty,
}

#[derive(Debug, Clone, Args)]
pub struct TelemetryConfig {
    /// Log format: `json` or `pretty` [default: pretty on a terminal, json otherwise].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Log filter in `tracing` syntax, e.g. `info` or `certus_assurance=debug`.
    #[arg(long, default_value = "info", value_name = "FILTER")]
    pub log_level: String,
}

/// Transport of the OTLP span exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (`grpc`), usually port 4317.
    Grpc,
    /// OTLP over HTTP with protobuf bodies (`http/protobuf`, the specification's default),
    /// usually port 4318.
    HttpProtobuf,
}

impl OtlpProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// Where and how spans are exported, from the standard OpenTelemetry variables. Exporting is on
/// when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set, unless
/// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. The exporter itself reads the
/// remaining `OTEL_EXPORTER_OTLP_*` variables (headers, timeout, compression) and the SDK reads
/// `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER*` and `OTEL_BSP_*`; the values checked here
/// are the ones whose mistakes would otherwise go unnoticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpExport {
    /// The endpoint variable's value (for the start-up log line).
    pub endpoint: String,
    /// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`, else
    /// `http/protobuf`.
    pub protocol: OtlpProtocol,
    /// `OTEL_SERVICE_NAME` (default `certus-assurance`).
    pub service_name: Option<String>,
}

impl OtlpExport {
    /// Reads the process environment.
    pub fn from_env() -> anyhow::Result<Option<OtlpExport>> {
        OtlpExport::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `var` (empty values count as unset, as the specification says).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<OtlpExport>> {
        let get = |name: &str| {
            var(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        match get("OTEL_SDK_DISABLED").map(|v| v.to_ascii_lowercase()) {
            None => {}
            Some(v) if v == "false" => {}
            Some(v) if v == "true" => return Ok(None),
            Some(v) => bail!("OTEL_SDK_DISABLED must be `true` or `false` (got `{v}`)"),
        }
        match get("OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => bail!(
                "OTEL_TRACES_EXPORTER must be `otlp` or `none` (got `{other}`); this build exports traces over OTLP only"
            ),
        }
        let Some((endpoint_var, endpoint)) = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .into_iter()
        .find_map(|name| get(name).map(|v| (name, v))) else {
            return Ok(None);
        };
        let url = url::Url::parse(&endpoint).with_context(|| {
            format!("{endpoint_var} is not a URL (such as http://otel-collector:4318)")
        })?;
        match url.scheme() {
            "http" => {}
            "https" => bail!(
                "{endpoint_var}: this build exports OTLP without TLS; send traces to a collector \
                 over http:// (for example an OpenTelemetry Collector next to the service)"
            ),
            other => bail!("{endpoint_var} must be an http:// URL (got scheme `{other}`)"),
        }
        // The endpoint is logged at start-up: it must hold nothing secret.
        if !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            bail!(
                "{endpoint_var} must not carry a user, a password, a query string or a fragment \
                 (the endpoint is logged at start-up); authenticate at a collector next to the service"
            );
        }
        let protocol = match [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]
        .into_iter()
        .find_map(|name| get(name).map(|v| (name, v)))
        {
            None => OtlpProtocol::HttpProtobuf,
            Some((_, v)) if v == "grpc" => OtlpProtocol::Grpc,
            Some((_, v)) if v == "http/protobuf" => OtlpProtocol::HttpProtobuf,
            Some((name, v)) => {
                bail!("{name} must be `grpc` or `http/protobuf` (got `{v}`)")
            }
        };
        Ok(Some(OtlpExport {
            endpoint,
            protocol,
            service_name: get("OTEL_SERVICE_NAME"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_export_follows_the_standard_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(OtlpExport::from_lookup(env(&[])).unwrap(), None);
        let export = OtlpExport::from_lookup(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:4318",
        )]))
        .unwrap()
        .unwrap();
        assert_eq!(export.protocol, OtlpProtocol::HttpProtobuf);
        let export = OtlpExport::from_lookup(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "scans-eu"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(export.protocol, OtlpProtocol::Grpc);
        assert_eq!(export.service_name.as_deref(), Some("scans-eu"));
        for disabled in [
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_SDK_DISABLED", "true"),
            ][..],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_TRACES_EXPORTER", "none"),
            ][..],
        ] {
            let disabled: &'static [(&'static str, &'static str)] = disabled;
            assert_eq!(OtlpExport::from_lookup(env(disabled)).unwrap(), None);
        }
        for (bad, var) in [
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
                ][..],
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4317")][..],
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318")][..],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                &[(
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    "http://collector:4318/?access_token=x",
                )][..],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                &[(
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://user:secret@collector:4318",
                )][..],
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                    ("OTEL_SDK_DISABLED", "yes"),
                ][..],
                "OTEL_SDK_DISABLED",
            ),
        ] {
            let bad: &'static [(&'static str, &'static str)] = bad;
            let err = format!("{:#}", OtlpExport::from_lookup(env(bad)).unwrap_err());
            assert!(err.contains(var), "{err}");
        }
    }
}
