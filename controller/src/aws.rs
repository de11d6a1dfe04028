//! AWS plumbing shared by every kind: one SDK configuration with deliberate retry and timeout
//! settings, per-region clients built on demand, the interceptor every client carries (call
//! metrics, leader fence, retry quota), and error classification.

use std::{
    collections::HashMap,
    error::Error as StdError,
    sync::Mutex,
    time::{Duration, Instant},
};

use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};
use aws_smithy_runtime::client::retries::TokenBucket;
use aws_smithy_runtime_api::{
    box_error::BoxError,
    client::{
        interceptors::{
            Intercept,
            context::{
                BeforeTransmitInterceptorContextMut, BeforeTransmitInterceptorContextRef,
                FinalizerInterceptorContextRef,
            },
        },
        orchestrator::{HttpResponse, Metadata},
        result::{DispatchFailure, SdkError},
        runtime_components::RuntimeComponents,
    },
};
use aws_smithy_types::{
    config_bag::{ConfigBag, Layer},
    error::metadata::ProvideErrorMetadata,
};
use aws_types::request_id::RequestId;

use crate::{
    core::error::Error,
    fence::{Fenced, is_read},
    metrics::SharedMetrics,
};

/// Settings for reaching AWS, from the command line.
#[derive(Clone, Debug, Default)]
pub struct AwsSettings {
    /// Region used when an object does not name one; `None` = the SDK's default chain.
    pub region: Option<String>,
    /// Override endpoint (moto, LocalStack, a VPC endpoint).
    pub endpoint_url: Option<String>,
}

/// Attempts per AWS call, the first included.
///
/// One reconcile makes several calls that must all succeed (a Bucket observation: up to 8 reads). Under
/// sustained faults (30 % throttled, 10 % 5xx) 3 attempts fail a call 6 % of the time and a
/// Bucket observation ~40 % of the time; 6 attempts fail a call 0.4 % of the time and an
/// observation ~3 %. The backoff between attempts is full jitter (`random × 200 ms × 2^n`, at
/// most 2 s), so the five waits add up to 5 s at worst (2.5 s on average when every attempt
/// fails): a reconcile worker is held a few seconds, never longer. Longer outages are left to
/// kaws' per-object backoff.
pub const SDK_MAX_ATTEMPTS: u32 = 6;
const SDK_INITIAL_BACKOFF: Duration = Duration::from_millis(200);
const SDK_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Loads the SDK configuration once: credentials from the standard chain (IRSA, Pod Identity,
/// env, profile).
///
/// Retries: the SDK's *standard* mode with [`SDK_MAX_ATTEMPTS`]; its retry quota is lifted by
/// [`CallMetrics`] (see there). Timeouts bound every call so that a hung connection can never
/// stall a reconcile worker.
pub async fn load_sdk_config(settings: &AwsSettings) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(SDK_MAX_ATTEMPTS)
                .with_initial_backoff(SDK_INITIAL_BACKOFF)
                .with_max_backoff(SDK_MAX_BACKOFF),
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

/// The interceptor every kaws AWS client carries (each kind's client builder adds it):
///
/// - **fence**: refuses every write (any operation but `Get*`, `Describe*`, `List*`, `Head*`)
///   right before it is transmitted unless the leader fence allows it at that instant; checked
///   again before every retry attempt (see `fence.rs`);
/// - **retry quota**: replaces the standard retry strategy's token bucket with an unlimited
///   one. The standard bucket (500 tokens per service, 5 per retry, a failed retry's tokens
///   lost, 1 back per first-attempt success) drains under a sustained 40 % failure rate and
///   then stops all retries until it refills, which is exactly when they are needed. What the
///   quota guards against, a retry storm, is bounded here anyway: kaws runs a few workers per
///   kind, each call makes at most [`SDK_MAX_ATTEMPTS`] attempts with jittered backoff, and
///   per-object backoff spaces reconciles;
/// - **metrics**: counts every call (after the SDK's retries) by service, operation and outcome,
///   throttling recognised by error code as [`classify`] does.
#[derive(Debug, Clone)]
pub struct CallMetrics(pub SharedMetrics);

impl Intercept for CallMetrics {
    fn name(&self) -> &'static str {
        "kaws-call-metrics"
    }

    fn modify_before_retry_loop(
        &self,
        _context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // Runs after the SDK's own token-bucket provider (client interceptors follow the
        // defaults), so this layer is the one the retry strategy reads; a unit test checks it.
        let mut layer = Layer::new("kaws-retry-quota");
        layer.store_put(TokenBucket::unlimited());
        cfg.push_layer(layer);
        Ok(())
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // An operation without metadata is unknown, so treated as a write.
        let read = cfg.load::<Metadata>().is_some_and(|m| is_read(m.name()));
        if read || self.0.fence().allows(Instant::now()) {
            Ok(())
        } else {
            Err(Box::new(Fenced))
        }
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
        let service = meta.service().to_lowercase();
        let outcome = match context.output_or_error() {
            Some(Ok(_)) => "success",
            Some(Err(e)) if find_source::<Fenced>(e).is_some() => "fenced",
            _ => match context.response() {
                Some(r) => {
                    let status = r.status().as_u16();
                    // S3 asks callers to slow down with 503 SlowDown, and a HEAD answer
                    // (HeadBucket, HeadObject) has no body to carry the code.
                    let s3_slow_down = service == "s3" && status == 503;
                    let code = error_code(r);
                    if s3_slow_down || is_throttling(code.as_deref(), Some(status)) {
                        "throttled"
                    } else if is_read(meta.name()) && is_absent(code.as_deref(), status) {
                        // A read that finds nothing there (no such resource, no CORS or
                        // lifecycle configuration, no policy) is an answer, not an error: a
                        // healthy fleet must not raise an alert on the error rate.
                        "not_found"
                    } else if (400..500).contains(&status) {
                        "client_error"
                    } else {
                        "server_error"
                    }
                }
                None => "transport_error",
            },
        };
        self.0.aws_call(&service, meta.name(), outcome);
        Ok(())
    }
}

/// Whether an error answer says "nothing there": a 404, or the codes services use for it
/// (S3 `NoSuch…`, DynamoDB and Lambda `ResourceNotFoundException`, RDS `DBInstanceNotFound`,
/// EC2 `InvalidInstanceID.NotFound`, S3 `ServerSideEncryptionConfigurationNotFoundError`).
fn is_absent(code: Option<&str>, status: u16) -> bool {
    status == 404
        || code.is_some_and(|c| {
            c.starts_with("NoSuch")
                || c.ends_with("NotFound")
                || c.ends_with("NotFoundException")
                || c.ends_with("NotFoundFault")
                || c.ends_with("NotFoundError")
        })
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

/// Throttling: one of [`THROTTLING_CODES`], or HTTP 429 whatever the code.
fn is_throttling(code: Option<&str>, status: Option<u16>) -> bool {
    code.is_some_and(|c| THROTTLING_CODES.contains(&c)) || status == Some(429)
}

/// The AWS error code of a raw error response, for the interceptor, which sees responses before
/// (and without) the operation's typed error: the `X-Amzn-ErrorType` header or `__type`/`code`
/// of JSON protocols (DynamoDB, Lambda), else the first `<Code>` of XML protocols (S3, EC2,
/// RDS).
fn error_code(response: &HttpResponse) -> Option<String> {
    if let Some(t) = response.headers().get("x-amzn-errortype") {
        // "ThrottlingException:http://internal.amazon.com/coral/..."
        return Some(t.split(':').next().unwrap_or(t).to_string());
    }
    let body = std::str::from_utf8(response.body().bytes()?)
        .ok()?
        .trim_start();
    if body.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        let t = ["__type", "code", "Code"]
            .iter()
            .find_map(|k| v.get(k).and_then(|t| t.as_str()))?;
        // "com.amazonaws.dynamodb.v20120810#ThrottlingException"
        return Some(t.rsplit('#').next().unwrap_or(t).to_string());
    }
    xml_text(body, "Code").map(str::to_string)
}

/// The text of the first `<tag>` element of an XML body (error bodies are small and flat).
fn xml_text<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let len = body[start..].find(&format!("</{tag}>"))?;
    Some(body[start..start + len].trim())
}

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
/// request (terminal) and everything that may heal by itself (transient). Messages are
/// [`describe`]d: short, one line, nothing raw.
pub fn classify<E>(operation: &str, err: &SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().unwrap_or_default();
    let operation = operation.to_string();
    if find_source::<Fenced>(err).is_some() {
        return Error::AwsTransient {
            operation,
            message: Fenced.to_string(),
        };
    }
    if is_throttling(Some(code), status) {
        return Error::Throttled { operation };
    }
    let message = describe(err);
    if ACCESS_DENIED_CODES.contains(&code) || (status == Some(403) && code.is_empty()) {
        return Error::AccessDenied { operation, message };
    }
    match (err, status) {
        (SdkError::ServiceError(_), Some(400..=499)) => Error::AwsRejected { operation, message },
        _ => Error::AwsTransient { operation, message },
    }
}

/// Longest text [`describe`] returns before the request ids.
const MAX_ERROR_TEXT: usize = 300;

/// A short, single-line account of a failed AWS call for conditions, Events and logs: the AWS
/// error code and message plus the request id(s) when AWS answered with an error it could
/// parse; otherwise a short class of what happened ("timeout", "connection reset", "dispatch
/// failure: …", "unparsable response (HTTP 500)"). Never raw headers or bodies: Debug dumps
/// of an SDK error carry both, and conditions are read by people.
pub fn describe<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let unparsable = || match status {
        Some(s) => format!("unparsable response (HTTP {s})"),
        None => "unparsable response".to_string(),
    };
    let text = match err {
        SdkError::ServiceError(_) => match (err.code(), err.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_string(),
            (None, Some(message)) => message.to_string(),
            (None, None) => unparsable(),
        },
        SdkError::ResponseError(_) => unparsable(),
        SdkError::TimeoutError(_) => "timeout".to_string(),
        SdkError::DispatchFailure(failure) => dispatch_failure(failure),
        SdkError::ConstructionFailure(_) => {
            format!("failed to build the request: {}", innermost(err))
        }
        _ => innermost(err),
    };
    let mut text = shorten(&text, MAX_ERROR_TEXT);
    // In a header (every protocol), else in the body of query-protocol errors (EC2, RDS),
    // which the SDK does not parse.
    let body = err
        .raw_response()
        .and_then(|r| r.body().bytes())
        .and_then(|b| std::str::from_utf8(b).ok());
    let request_id = err
        .meta()
        .request_id()
        .or_else(|| err.request_id())
        .or_else(|| {
            body.and_then(|b| xml_text(b, "RequestID").or_else(|| xml_text(b, "RequestId")))
        });
    // S3's extended request id, which AWS support asks for along with the request id.
    let extended = err
        .raw_response()
        .and_then(|r| r.headers().get("x-amz-id-2"));
    match (request_id, extended) {
        (Some(id), Some(ext)) => text.push_str(&format!(
            " (request id {}, extended request id {})",
            shorten(id, 100),
            shorten(ext, 120)
        )),
        (Some(id), None) => text.push_str(&format!(" (request id {})", shorten(id, 100))),
        _ => {}
    }
    text
}

fn dispatch_failure(failure: &DispatchFailure) -> String {
    if failure.is_timeout() {
        return "timeout".to_string();
    }
    let Some(connector) = failure.as_connector_error() else {
        return "dispatch failure".to_string();
    };
    if let Some(io) = find_source::<std::io::Error>(connector) {
        use std::io::ErrorKind::*;
        let class = match io.kind() {
            ConnectionReset => Some("connection reset"),
            ConnectionRefused => Some("connection refused"),
            ConnectionAborted => Some("connection aborted"),
            BrokenPipe => Some("connection closed"),
            TimedOut => Some("timeout"),
            _ => None,
        };
        if let Some(class) = class {
            return class.to_string();
        }
    }
    format!("dispatch failure: {}", shorten(&innermost(connector), 120))
}

/// `err` or the first error in its source chain of type `T`.
fn find_source<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

/// The last error in the source chain: the root cause, usually the shortest useful text.
fn innermost(err: &(dyn StdError + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// One line of at most `max` characters (an ellipsis marks a cut).
fn shorten(text: &str, max: usize) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        return line;
    }
    let mut cut: String = line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
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

/// Canned AWS answers for `aws-smithy-mocks` tests of any kind's calls: what moto cannot
/// produce (throttling, 5xx, a bucket in another region).
#[cfg(test)]
pub(crate) mod test_answers {
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_types::body::SdkBody;

    /// An S3-style error body with `code`.
    pub fn s3_error(code: &str) -> String {
        format!("<Error><Code>{code}</Code><Message>{code} happened</Message></Error>")
    }

    pub fn response(
        status: u16,
        body: &str,
        headers: &[(&'static str, &'static str)],
    ) -> HttpResponse {
        let mut r = HttpResponse::new(
            status.try_into().expect("valid status"),
            SdkBody::from(body.to_string()),
        );
        for (k, v) in headers {
            r.headers_mut().insert(*k, *v);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    //! Error classes, error text, call metrics, the fence and the retry quota through the real
    //! SDK clients, with HTTP responses that moto cannot produce (throttling, 5xx, garbage).

    use std::sync::Arc;

    use aws_sdk_s3::{Client, operation::get_bucket_policy::GetBucketPolicyOutput};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use aws_smithy_runtime::client::retries::RetryPartition;

    use super::{
        test_answers::{response, s3_error},
        *,
    };
    use crate::{fence::Fence, metrics::Metrics};

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

    /// The error text of one failed S3 call answered with `r`.
    async fn s3_error_text(
        operation: &str,
        r: impl Fn() -> HttpResponse + Send + Sync + 'static,
    ) -> String {
        let rule = mock!(Client::put_bucket_policy).then_http_response(r);
        let client = mock_client!(aws_sdk_s3, RuleMode::Sequential, &[&rule], |c| c
            .retry_config(RetryConfig::disabled()));
        let err = client
            .put_bucket_policy()
            .bucket("b")
            .policy("{}")
            .send()
            .await
            .expect_err("mocked failure");
        classify(operation, &err).to_string()
    }

    #[tokio::test]
    async fn error_text_names_code_message_and_request_ids_and_nothing_raw() {
        let text = s3_error_text("PutBucketPolicy", || {
            response(
                400,
                &s3_error("MalformedPolicy"),
                &[("x-amz-request-id", "REQ123"), ("x-amz-id-2", "EXT456")],
            )
        })
        .await;
        assert_eq!(
            text,
            "AWS rejected PutBucketPolicy: MalformedPolicy: MalformedPolicy happened \
             (request id REQ123, extended request id EXT456)"
        );
    }

    #[tokio::test]
    async fn an_unparsable_answer_is_named_by_its_status_not_dumped() {
        let html = format!(
            "<html><head><title>500 Internal Server Error</title></head><body>{}</body></html>",
            "stack trace line\n".repeat(200)
        );
        let text = s3_error_text("PutBucketPolicy", move || {
            response(
                500,
                &html,
                &[
                    ("content-type", "text/html"),
                    ("server", "fault-proxy"),
                    ("x-amz-request-id", "REQ9"),
                ],
            )
        })
        .await;
        assert_eq!(
            text,
            "failed to call AWS PutBucketPolicy: unparsable response (HTTP 500) (request id REQ9)"
        );
    }

    #[tokio::test]
    async fn a_long_aws_message_is_cut_to_one_short_line() {
        let message = "policy statement is invalid;\n".repeat(100);
        let body =
            format!("<Error><Code>MalformedPolicy</Code><Message>{message}</Message></Error>");
        let text = s3_error_text("PutBucketPolicy", move || response(400, &body, &[])).await;
        assert!(
            text.starts_with(
                "AWS rejected PutBucketPolicy: MalformedPolicy: policy statement is invalid; policy"
            ),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
        assert!(text.ends_with('…'), "{text}");
        assert!(
            text.chars().count() <= MAX_ERROR_TEXT + 40,
            "{} chars: {text}",
            text.chars().count()
        );
    }

    #[tokio::test]
    async fn ec2_request_ids_come_from_the_body() {
        let body = "<Response><Errors><Error><Code>InvalidAMIID.Malformed</Code>\
                    <Message>Invalid id: \"x\"</Message></Error></Errors>\
                    <RequestID>ec2-req-1</RequestID></Response>";
        let rule = mock!(aws_sdk_ec2::Client::run_instances)
            .then_http_response(move || response(400, body, &[]));
        let client = mock_client!(aws_sdk_ec2, RuleMode::Sequential, &[&rule], |c| c
            .retry_config(RetryConfig::disabled()));
        let err = client
            .run_instances()
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .expect_err("mocked failure");
        assert_eq!(
            classify("RunInstances", &err).to_string(),
            "AWS rejected RunInstances: InvalidAMIID.Malformed: Invalid id: \"x\" (request id ec2-req-1)"
        );
    }

    /// An S3 client for `endpoint` with real HTTP, no retries and short timeouts.
    fn real_s3(endpoint: &str) -> Client {
        let conf = aws_sdk_s3::Config::builder()
            .with_test_defaults_v2()
            .endpoint_url(endpoint)
            .force_path_style(true)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_millis(300))
                    .build(),
            )
            .build();
        Client::from_conf(conf)
    }

    #[tokio::test]
    async fn transport_failures_get_a_short_class() {
        // A port nothing listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("addr").port();
        drop(closed);
        let err = real_s3(&format!("http://127.0.0.1:{port}"))
            .put_bucket_policy()
            .bucket("b")
            .policy("{}")
            .send()
            .await
            .expect_err("nothing listens");
        assert_eq!(
            classify("PutBucketPolicy", &err).to_string(),
            "failed to call AWS PutBucketPolicy: connection refused"
        );

        // A server that accepts and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = silent.local_addr().expect("addr");
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = silent.accept().await {
                held.push(conn);
            }
        });
        let err = real_s3(&format!("http://{addr}"))
            .put_bucket_policy()
            .bucket("b")
            .policy("{}")
            .send()
            .await
            .expect_err("no answer");
        hold.abort();
        assert_eq!(
            classify("PutBucketPolicy", &err).to_string(),
            "failed to call AWS PutBucketPolicy: timeout"
        );
    }

    #[tokio::test]
    async fn every_call_is_counted_once_with_its_outcome() {
        let metrics = Arc::new(Metrics::new());
        let ok = mock!(Client::get_bucket_policy)
            .then_output(|| GetBucketPolicyOutput::builder().policy("{}").build());
        let failed = mock!(Client::get_bucket_policy)
            .sequence()
            .http_status(500, Some(s3_error("InternalError")))
            .build();
        let m = metrics.clone();
        let client = mock_client!(
            aws_sdk_s3,
            RuleMode::Sequential,
            &[&ok, &failed],
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

    /// Runs one call answered with `r` on a client of `$krate` counting into `$metrics`; the
    /// error is classified as `$op`.
    macro_rules! failed_call {
        ($krate:ident, $metrics:expr, $op:literal, $rule:expr, |$c:ident| $call:expr) => {{
            let rule = $rule;
            let m = $metrics.clone();
            let $c = mock_client!($krate, RuleMode::Sequential, &[&rule], move |c| c
                .retry_config(RetryConfig::disabled())
                .interceptor(CallMetrics(m.clone())));
            let err = $call.await.expect_err("mocked failure");
            classify($op, &err)
        }};
    }

    #[tokio::test]
    async fn throttling_is_counted_as_throttled_by_error_code_in_every_protocol() {
        let metrics = Arc::new(Metrics::new());
        let errors = [
            failed_call!(
                aws_sdk_s3,
                metrics,
                "GetBucketPolicy",
                mock!(Client::get_bucket_policy)
                    .then_http_response(|| response(503, &s3_error("SlowDown"), &[])),
                |c| c.get_bucket_policy().bucket("b").send()
            ),
            failed_call!(
                aws_sdk_dynamodb,
                metrics,
                "DescribeTable",
                mock!(aws_sdk_dynamodb::Client::describe_table).then_http_response(|| response(
                    400,
                    r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#,
                    &[("content-type", "application/x-amz-json-1.0")]
                )),
                |c| c.describe_table().table_name("t").send()
            ),
            failed_call!(
                aws_sdk_ec2,
                metrics,
                "DescribeInstances",
                mock!(aws_sdk_ec2::Client::describe_instances).then_http_response(|| response(
                    503,
                    "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>r-1</RequestID></Response>",
                    &[]
                )),
                |c| c.describe_instances().send()
            ),
            failed_call!(
                aws_sdk_rds,
                metrics,
                "DescribeDBInstances",
                mock!(aws_sdk_rds::Client::describe_db_instances).then_http_response(|| response(
                    400,
                    "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>r-2</RequestId></ErrorResponse>",
                    &[]
                )),
                |c| c.describe_db_instances().send()
            ),
            failed_call!(
                aws_sdk_lambda,
                metrics,
                "GetFunction",
                mock!(aws_sdk_lambda::Client::get_function).then_http_response(|| response(
                    429,
                    r#"{"Reason":"CallerRateLimitExceeded","Type":"User","message":"Rate exceeded"}"#,
                    &[("x-amzn-errortype", "TooManyRequestsException:http://internal.amazon.com/coral/com.amazonaws.awsgirasol/")]
                )),
                |c| c.get_function().function_name("f").send()
            ),
        ];
        for err in &errors {
            assert_eq!(err.category(), "Throttled", "{err}");
        }
        let text = metrics.encode();
        for (service, op) in [
            ("s3", "GetBucketPolicy"),
            ("dynamodb", "DescribeTable"),
            ("ec2", "DescribeInstances"),
            ("rds", "DescribeDBInstances"),
            ("lambda", "GetFunction"),
        ] {
            let line = format!(
                r#"kaws_aws_api_calls_total{{service="{service}",operation="{op}",outcome="throttled"}} 1"#
            );
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        // S3's SlowDown on a HEAD request: a bare 503 without a body to carry the code.
        failed_call!(
            aws_sdk_s3,
            metrics,
            "HeadBucket",
            mock!(Client::head_bucket).then_http_response(|| response(503, "", &[])),
            |c| c.head_bucket().bucket("b").send()
        );
        assert!(metrics.encode().contains(
            r#"kaws_aws_api_calls_total{service="s3",operation="HeadBucket",outcome="throttled"} 1"#
        ));
        // A 400 that is not throttling stays a client error.
        failed_call!(
            aws_sdk_s3,
            metrics,
            "GetBucketPolicy",
            mock!(Client::get_bucket_policy).then_http_response(|| response(
                400,
                &s3_error("InvalidRequest"),
                &[]
            )),
            |c| c.get_bucket_policy().bucket("b").send()
        );
        assert!(metrics.encode().contains(
            r#"kaws_aws_api_calls_total{service="s3",operation="GetBucketPolicy",outcome="client_error"} 1"#
        ));
        // "Not configured" on a read is an answer, counted apart from errors.
        failed_call!(
            aws_sdk_s3,
            metrics,
            "GetBucketCors",
            mock!(Client::get_bucket_cors).then_http_response(|| response(
                404,
                &s3_error("NoSuchCORSConfiguration"),
                &[]
            )),
            |c| c.get_bucket_cors().bucket("b").send()
        );
        assert!(metrics.encode().contains(
            r#"kaws_aws_api_calls_total{service="s3",operation="GetBucketCors",outcome="not_found"} 1"#
        ));
    }

    #[test]
    fn nothing_there_is_told_apart_from_errors() {
        let cases = [
            (Some("NoSuchCORSConfiguration"), 404, true),
            (Some("NoSuchBucketPolicy"), 404, true),
            (
                Some("ServerSideEncryptionConfigurationNotFoundError"),
                404,
                true,
            ),
            (Some("ResourceNotFoundException"), 400, true),
            (Some("DBInstanceNotFound"), 404, true),
            (Some("InvalidInstanceID.NotFound"), 400, true),
            (None, 404, true),
            (Some("AccessDenied"), 403, false),
            (Some("ValidationException"), 400, false),
            (Some("InvalidParameterValue"), 400, false),
        ];
        for (code, status, absent) in cases {
            assert_eq!(is_absent(code, status), absent, "{code:?} {status}");
        }
    }

    fn fenced_client(fence: &Fence, rules: &[&aws_smithy_mocks::Rule]) -> (Client, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::with_fence(fence.clone()));
        let m = metrics.clone();
        let client = mock_client!(aws_sdk_s3, RuleMode::MatchAny, rules, move |c| c
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(Duration::from_millis(1))
            )
            .interceptor(CallMetrics(m.clone())));
        (client, metrics)
    }

    #[tokio::test]
    async fn a_write_is_refused_while_the_fence_is_closed_and_a_read_passes() {
        let fence = Fence::lease();
        let read = mock!(Client::get_bucket_policy)
            .sequence()
            .http_status(200, Some("{}".to_string()))
            .repeatedly()
            .build();
        let write = mock!(Client::put_bucket_policy)
            .sequence()
            .http_status(204, None)
            .repeatedly()
            .build();
        let (client, metrics) = fenced_client(&fence, &[&read, &write]);
        let put = || client.put_bucket_policy().bucket("b").policy("{}").send();

        client
            .get_bucket_policy()
            .bucket("b")
            .send()
            .await
            .expect("a read needs no lease");
        let err = put().await.expect_err("not leading: refused");
        let err = classify("PutBucketPolicy", &err);
        assert_eq!(
            err.to_string(),
            "failed to call AWS PutBucketPolicy: not sent: this replica does not hold the leader lease with margin"
        );
        assert!(!err.is_terminal());

        fence.extend(Instant::now() + Duration::from_secs(60));
        put().await.expect("leading: allowed");
        fence.revoke();
        put().await.expect_err("lost: refused again");

        let text = metrics.encode();
        for line in [
            r#"kaws_aws_api_calls_total{service="s3",operation="GetBucketPolicy",outcome="success"} 1"#,
            r#"kaws_aws_api_calls_total{service="s3",operation="PutBucketPolicy",outcome="fenced"} 2"#,
            r#"kaws_aws_api_calls_total{service="s3",operation="PutBucketPolicy",outcome="success"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[tokio::test]
    async fn a_retry_inside_the_sdk_is_fenced_too() {
        let fence = Fence::lease();
        fence.extend(Instant::now() + Duration::from_secs(60));
        let f = fence.clone();
        // The first attempt goes out and fails; the lease is lost before the retry.
        let write = mock!(Client::put_bucket_policy)
            .sequence()
            .http_status(500, Some(s3_error("InternalError")))
            .http_response(move || {
                f.revoke();
                response(204, "", &[])
            })
            .build();
        let (client, metrics) = fenced_client(&fence, &[&write]);
        let err = client
            .put_bucket_policy()
            .bucket("b")
            .policy("{}")
            .send()
            .await
            .expect_err("the retry is refused");
        assert!(find_source::<Fenced>(&err).is_some(), "{}", describe(&err));
        assert!(metrics.encode().contains(
            r#"kaws_aws_api_calls_total{service="s3",operation="PutBucketPolicy",outcome="fenced"} 1"#
        ));
    }

    /// 120 calls, each failing twice before succeeding: with the standard retry quota (500
    /// tokens, a failed retry's 5 lost) the calls after the hundredth would get no retries.
    async fn calls_failing_twice(with_kaws_interceptor: bool) -> usize {
        let mut seq = mock!(Client::get_bucket_policy).sequence();
        for _ in 0..120 {
            seq = seq
                .http_status(500, Some(s3_error("InternalError")))
                .times(2)
                .http_status(200, Some("{}".to_string()));
        }
        let rule = seq.build();
        let metrics = Arc::new(Metrics::new());
        let client = mock_client!(aws_sdk_s3, RuleMode::Sequential, &[&rule], move |c| {
            let c = c
                .retry_config(
                    RetryConfig::standard()
                        .with_max_attempts(3)
                        .with_initial_backoff(Duration::from_millis(1))
                        .with_max_backoff(Duration::from_millis(1)),
                )
                // Its own quota, so this test drains no other test's.
                .retry_partition(RetryPartition::new(if with_kaws_interceptor {
                    "kaws-test-unlimited"
                } else {
                    "kaws-test-standard"
                }));
            if with_kaws_interceptor {
                c.interceptor(CallMetrics(metrics.clone()))
            } else {
                c
            }
        });
        let mut failed = 0;
        for _ in 0..120 {
            if client.get_bucket_policy().bucket("b").send().await.is_err() {
                failed += 1;
            }
        }
        failed
    }

    #[tokio::test]
    async fn sustained_faults_never_exhaust_the_retry_quota() {
        assert!(
            calls_failing_twice(false).await > 0,
            "control: the standard quota runs out"
        );
        assert_eq!(calls_failing_twice(true).await, 0);
    }

    #[test]
    fn partitions_follow_the_region() {
        assert_eq!(partition("eu-west-1"), "aws");
        assert_eq!(partition("cn-north-1"), "aws-cn");
        assert_eq!(partition("us-gov-west-1"), "aws-us-gov");
    }
}
