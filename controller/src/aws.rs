//! AWS plumbing shared by every kind: one SDK configuration with deliberate retry and timeout
//! settings, per-region clients built on demand, call metrics, and error classification.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};
use aws_smithy_runtime_api::{
    box_error::BoxError,
    client::{
        interceptors::{Intercept, context::FinalizerInterceptorContextRef},
        orchestrator::{HttpResponse, Metadata},
        result::SdkError,
        runtime_components::RuntimeComponents,
    },
};
use aws_smithy_types::{config_bag::ConfigBag, error::metadata::ProvideErrorMetadata};

use crate::{core::error::Error, metrics::SharedMetrics};

/// Settings for reaching AWS, from the command line.
#[derive(Clone, Debug, Default)]
pub struct AwsSettings {
    /// Region used when an object does not name one; `None` = the SDK's default chain.
    pub region: Option<String>,
    /// Override endpoint (moto, LocalStack, a VPC endpoint).
    pub endpoint_url: Option<String>,
}

/// Loads the SDK configuration once: credentials from the standard chain (IRSA, Pod Identity,
/// env, profile).
///
/// Retries: the SDK's *standard* mode with 3 attempts smooths over a single throttle or 5xx
/// inside one reconcile; anything longer is left to kaws' per-object backoff, so a throttled
/// account is not hammered by nested retry loops. Timeouts bound every call so that a hung
/// connection can never stall a reconcile worker.
pub async fn load_sdk_config(settings: &AwsSettings) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(200))
                .with_max_backoff(Duration::from_secs(5)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(30))
                .operation_timeout(Duration::from_secs(60))
                .build(),
        );
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    loader.load().await
}

/// Per-region SDK clients of one service, created on first use and reused afterwards.
pub struct RegionalClients<C> {
    sdk: SdkConfig,
    build: fn(&SdkConfig, &str, &SharedMetrics) -> C,
    metrics: SharedMetrics,
    clients: Mutex<HashMap<String, C>>,
}

impl<C: Clone> RegionalClients<C> {
    pub fn new(
        sdk: SdkConfig,
        metrics: SharedMetrics,
        build: fn(&SdkConfig, &str, &SharedMetrics) -> C,
    ) -> Self {
        Self {
            sdk,
            build,
            metrics,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The region objects use when they name none.
    pub fn default_region(&self) -> Option<String> {
        self.sdk.region().map(|r| r.to_string())
    }

    pub fn get(&self, region: &str) -> C {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(region.to_string())
            .or_insert_with(|| (self.build)(&self.sdk, region, &self.metrics))
            .clone()
    }
}

/// Counts every AWS operation (after the SDK's own retries) by service, operation and outcome.
#[derive(Debug, Clone)]
pub struct CallMetrics(pub SharedMetrics);

impl Intercept for CallMetrics {
    fn name(&self) -> &'static str {
        "kaws-call-metrics"
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(meta) = cfg.load::<Metadata>() else {
            return Ok(());
        };
        let succeeded = matches!(context.output_or_error(), Some(Ok(_)));
        let outcome = match context.response().map(|r| r.status().as_u16()) {
            _ if succeeded => "success",
            Some(429) => "throttled",
            Some(400..=499) => "client_error",
            Some(_) => "server_error",
            None => "transport_error",
        };
        self.0
            .aws_call(&meta.service().to_lowercase(), meta.name(), outcome);
        Ok(())
    }
}

/// Error codes AWS services use to ask callers to slow down.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
    "ProvisionedThroughputExceededException",
    "PriorRequestNotComplete",
];

const ACCESS_DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidAccessKeyId",
];

/// Maps an SDK error onto kaws' error classes: throttling, access denied, AWS rejecting the
/// request (terminal) and everything that may heal by itself (transient).
pub fn classify<E>(operation: &str, err: &SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().unwrap_or_default();
    let message = match err.message() {
        Some(m) => m.to_string(),
        // No AWS message (response unreadable, timeout, connection error): the error chain
        // says what happened. It carries no request content, so no secret can leak through it.
        None => aws_smithy_types::error::display::DisplayErrorContext(err).to_string(),
    };
    let operation = operation.to_string();
    if THROTTLING_CODES.contains(&code) || status == Some(429) {
        return Error::Throttled { operation };
    }
    if ACCESS_DENIED_CODES.contains(&code) || (status == Some(403) && code.is_empty()) {
        return Error::AccessDenied { operation, message };
    }
    match (err, status) {
        (SdkError::ServiceError(_), Some(400..=499)) => Error::AwsRejected {
            operation,
            message: if code.is_empty() {
                message
            } else {
                format!("{code}: {message}")
            },
        },
        _ => Error::AwsTransient { operation, message },
    }
}

/// The ARN partition of a region.
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else {
        "aws"
    }
}

#[cfg(test)]
mod tests {
    //! Error classes and call metrics through the real S3 client, with HTTP responses that
    //! moto cannot produce (throttling, 5xx).

    use std::sync::Arc;

    use aws_sdk_s3::{Client, operation::get_bucket_policy::GetBucketPolicyOutput};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    use super::*;
    use crate::metrics::Metrics;

    fn s3_error(code: &str) -> String {
        format!("<Error><Code>{code}</Code><Message>{code} happened</Message></Error>")
    }

    async fn classify_status(status: u16, code: &str) -> Error {
        let body = s3_error(code);
        let rule = mock!(Client::get_bucket_policy)
            .sequence()
            .http_status(status, Some(body))
            .times(5)
            .build();
        let client = mock_client!(aws_sdk_s3, RuleMode::Sequential, &[&rule], |c| c
            .retry_config(RetryConfig::disabled()));
        let err = client
            .get_bucket_policy()
            .bucket("b")
            .send()
            .await
            .expect_err("mocked failure");
        classify("GetBucketPolicy", &err)
    }

    #[tokio::test]
    async fn aws_errors_map_to_kaws_error_classes() {
        let cases: Vec<(&str, u16, &str, &str, bool)> = vec![
            (
                "S3 SlowDown is throttling",
                503,
                "SlowDown",
                "Throttled",
                false,
            ),
            (
                "HTTP 429 is throttling whatever the code",
                429,
                "TooManyRequests",
                "Throttled",
                false,
            ),
            (
                "5xx may heal by itself",
                500,
                "InternalError",
                "AwsError",
                false,
            ),
            (
                "access denied is terminal",
                403,
                "AccessDenied",
                "AccessDenied",
                true,
            ),
            (
                "a malformed request is terminal",
                400,
                "MalformedPolicy",
                "AwsError",
                true,
            ),
        ];
        for (why, status, code, category, terminal) in cases {
            let err = classify_status(status, code).await;
            assert_eq!(err.category(), category, "{why}: {err}");
            assert_eq!(err.is_terminal(), terminal, "{why}: {err}");
        }
    }

    #[tokio::test]
    async fn every_call_is_counted_once_with_its_outcome() {
        let metrics = Arc::new(Metrics::new());
        let ok = mock!(Client::get_bucket_policy)
            .then_output(|| GetBucketPolicyOutput::builder().policy("{}").build());
        let throttled = mock!(Client::get_bucket_policy)
            .sequence()
            .http_status(503, Some(s3_error("SlowDown")))
            .build();
        let m = metrics.clone();
        let client = mock_client!(
            aws_sdk_s3,
            RuleMode::Sequential,
            &[&ok, &throttled],
            move |c| c
                .retry_config(RetryConfig::disabled())
                .interceptor(CallMetrics(m.clone()))
        );
        client
            .get_bucket_policy()
            .bucket("b")
            .send()
            .await
            .expect("first call succeeds");
        let _ = client.get_bucket_policy().bucket("b").send().await;
        let text = metrics.encode();
        assert!(
            text.contains(r#"kaws_aws_api_calls_total{service="s3",operation="GetBucketPolicy",outcome="success"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kaws_aws_api_calls_total{service="s3",operation="GetBucketPolicy",outcome="server_error"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn partitions_follow_the_region() {
        assert_eq!(partition("eu-west-1"), "aws");
        assert_eq!(partition("cn-north-1"), "aws-cn");
        assert_eq!(partition("us-gov-west-1"), "aws-us-gov");
    }
}
