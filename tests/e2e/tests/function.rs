//! End to end for Function: the real kaws binary, the test API server, moto and real kubectl.
//! moto cannot invoke functions (it needs Docker), so these tests check Lambda's configuration
//! and code hashes, never an invocation.

use std::time::{Duration, Instant};

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_s3::primitives::ByteStream;
use base64::{Engine, engine::general_purpose::STANDARD};
use kaws::resources::function::Function;
use kaws_e2e::{Env, env::condition, fixtures::zip, unique_name};
use serde_json::Value;

fn lambda(env: &Env) -> aws_sdk_lambda::Client {
    aws_sdk_lambda::Client::new(&env.aws)
}

/// moto checks that the role exists in IAM, as Lambda does.
async fn role(env: &Env) -> anyhow::Result<String> {
    kaws_e2e::fixtures::lambda_role(&env.aws, "fn-role").await
}

fn sha256_b64(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    STANDARD.encode(Sha256::digest(bytes))
}

fn function_yaml(name: &str, fn_name: &str, role: &str, code: &str, extra: &str) -> String {
    let mut yaml = format!(
        "apiVersion: lambda.kaws.io/v1alpha1\nkind: Function\nmetadata:\n  name: {name}\nspec:\n  functionName: {fn_name}\n  runtime: python3.12\n  handler: app.handler\n  role: {role}\n  code: {code}\n"
    );
    for line in extra.lines() {
        yaml.push_str(&format!("  {line}\n"));
    }
    yaml
}

/// An ECR image URI in moto's account and the tests' region. moto does not look the image up
/// (MOTO_LAMBDA_STUB_ECR defaults to true); its CodeSha256 is the SHA-256 of the URI.
fn image_uri(repo: &str, tag: &str) -> String {
    format!("123456789012.dkr.ecr.eu-west-1.amazonaws.com/{repo}:{tag}")
}

fn image_yaml(name: &str, fn_name: &str, role: &str, uri: &str, extra: &str) -> String {
    let mut yaml = format!(
        "apiVersion: lambda.kaws.io/v1alpha1\nkind: Function\nmetadata:\n  name: {name}\nspec:\n  functionName: {fn_name}\n  role: {role}\n  code: {{imageUri: '{uri}'}}\n"
    );
    for line in extra.lines() {
        yaml.push_str(&format!("  {line}\n"));
    }
    yaml
}

async fn lambda_calls(env: &Env, operation: &str) -> anyhow::Result<u64> {
    let op = format!("operation=\"{operation}\"");
    env.kaws
        .aws_calls(|l| l.contains("service=\"lambda\"") && l.contains(&op))
        .await
}

async fn write_calls(env: &Env) -> anyhow::Result<u64> {
    env.kaws
        .aws_calls(|l| {
            (l.contains("service=\"lambda\"") || l.contains("service=\"s3\""))
                && !["operation=\"Get", "operation=\"Head", "operation=\"List"]
                    .iter()
                    .any(|p| l.contains(p))
        })
        .await
}

async fn wait_ready(env: &Env, name: &str) -> anyhow::Result<Value> {
    env.wait_for::<Function>(name, Duration::from_secs(30), "Ready and current", |o| {
        condition(o, "Ready").is_some_and(|c| c["status"] == "True")
            && o["status"]["observedGeneration"] == o["metadata"]["generation"]
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip_function_deploys_code_and_configuration_changes_in_separate_calls()
-> anyhow::Result<()> {
    let env = Env::start().await?;
    let role = role(&env).await?;
    let fn_name = unique_name("zipfn");
    let v1 = zip(b"zip-v1");
    let v1 = v1.as_slice();
    let code = format!("{{zipFile: {}}}", STANDARD.encode(v1));
    env.apply_ok(&function_yaml(
        "zf",
        &fn_name,
        &role,
        &code,
        "tags: {team: data}",
    ));
    // kubectl's own readiness check and the aws category work for Functions as for every kind.
    env.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "function/zf",
        "--timeout=60s",
    ]);
    let aws = env.kubectl_ok(&["get", "aws", "-o", "name"]);
    assert!(
        aws.contains("function.lambda.kaws.io/zf"),
        "kubectl get aws: {aws}"
    );
    let obj = wait_ready(&env, "zf").await?;
    assert_eq!(obj["status"]["codeSha256"], sha256_b64(v1));
    assert_eq!(obj["status"]["state"], "Active");
    assert_eq!(obj["status"]["lastUpdateStatus"], "Successful");
    assert!(
        obj["status"]["arn"]
            .as_str()
            .is_some_and(|a| a.ends_with(&format!(":function:{fn_name}")))
    );
    let got = lambda(&env)
        .get_function()
        .function_name(&fn_name)
        .send()
        .await?;
    let tags = got.tags().cloned().unwrap_or_default();
    assert_eq!(tags.get("team").map(String::as_str), Some("data"));
    assert_eq!(
        tags.get("kaws.io/owner"),
        Some(&format!("{}/{}/zf", env.cluster_id, env.namespace))
    );

    // New zip: exactly one code call, no configuration call.
    let (code_before, config_before) = (
        lambda_calls(&env, "UpdateFunctionCode").await?,
        lambda_calls(&env, "UpdateFunctionConfiguration").await?,
    );
    let v2 = zip(b"zip-v2");
    let v2 = v2.as_slice();
    let code = format!("{{zipFile: {}}}", STANDARD.encode(v2));
    env.apply_ok(&function_yaml(
        "zf",
        &fn_name,
        &role,
        &code,
        "tags: {team: data}",
    ));
    let obj = env
        .wait_for::<Function>("zf", Duration::from_secs(30), "new code", |o| {
            o["status"]["codeSha256"] == sha256_b64(v2)
                && condition(o, "Ready").is_some_and(|c| c["status"] == "True")
        })
        .await?;
    assert_eq!(obj["status"]["codeSha256"], sha256_b64(v2));
    let conf = lambda(&env)
        .get_function_configuration()
        .function_name(&fn_name)
        .send()
        .await?;
    assert_eq!(
        conf.code_sha256(),
        Some(sha256_b64(v2).as_str()),
        "Lambda has the new code"
    );
    assert_eq!(
        lambda_calls(&env, "UpdateFunctionCode").await? - code_before,
        1
    );
    assert_eq!(
        lambda_calls(&env, "UpdateFunctionConfiguration").await?,
        config_before
    );

    // Memory and environment: exactly one configuration call, no code call.
    env.apply_ok(&function_yaml(
        "zf",
        &fn_name,
        &role,
        &code,
        "tags: {team: data}\nmemorySize: 256\nenvironment: {variables: {MODE: fast}}",
    ));
    wait_ready(&env, "zf").await?;
    let conf = lambda(&env)
        .get_function_configuration()
        .function_name(&fn_name)
        .send()
        .await?;
    assert_eq!(conf.memory_size(), Some(256));
    assert_eq!(
        conf.environment()
            .and_then(|e| e.variables())
            .and_then(|v| v.get("MODE"))
            .map(String::as_str),
        Some("fast")
    );
    assert_eq!(
        lambda_calls(&env, "UpdateFunctionConfiguration").await? - config_before,
        1
    );
    assert_eq!(
        lambda_calls(&env, "UpdateFunctionCode").await? - code_before,
        1
    );

    // Drift: memory changed outside Kubernetes is put back, with an Event.
    lambda(&env)
        .update_function_configuration()
        .function_name(&fn_name)
        .memory_size(512)
        .send()
        .await?;
    env.kubectl_ok(&[
        "annotate",
        "function/zf",
        "kaws.io/reconcile-requested-at=drift1",
    ]);
    let note = env.wait_event("zf", "DriftCorrected").await?;
    assert!(note.contains("memorySize"), "{note}");
    let conf = lambda(&env)
        .get_function_configuration()
        .function_name(&fn_name)
        .send()
        .await?;
    assert_eq!(conf.memory_size(), Some(256));

    // A tag removed from the spec is removed from the function; kaws' own tags stay.
    env.apply_ok(&function_yaml(
        "zf",
        &fn_name,
        &role,
        &code,
        "tags: {}\nmemorySize: 256\nenvironment: {variables: {MODE: fast}}",
    ));
    wait_ready(&env, "zf").await?;
    let tags = lambda(&env)
        .get_function()
        .function_name(&fn_name)
        .send()
        .await?
        .tags()
        .cloned()
        .unwrap_or_default();
    assert!(!tags.contains_key("team"), "{tags:?}");
    assert!(tags.contains_key("kaws.io/owner"), "{tags:?}");
    assert_eq!(lambda_calls(&env, "UntagResource").await?, 1);

    // Delete removes the function from Lambda.
    env.kubectl_ok(&["delete", "function/zf", "--wait=false"]);
    env.wait_gone_of::<Function>("zf", Duration::from_secs(30))
        .await?;
    assert!(
        lambda(&env)
            .get_function()
            .function_name(&fn_name)
            .send()
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_object_at_the_same_s3_key_is_deployed_and_steady_state_only_reads()
-> anyhow::Result<()> {
    let env = Env::start().await?;
    let role = role(&env).await?;
    let bucket = unique_name("code");
    env.s3
        .create_bucket()
        .bucket(&bucket)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest1)
                .build(),
        )
        .send()
        .await?;
    let put = |body: &'static [u8]| {
        env.s3
            .put_object()
            .bucket(&bucket)
            .key("app.zip")
            .body(ByteStream::from_static(body))
            .send()
    };
    put(b"s3-v1").await?;
    let fn_name = unique_name("s3fn");
    let code = format!("{{s3Bucket: {bucket}, s3Key: app.zip}}");
    env.apply_ok(&function_yaml("sf", &fn_name, &role, &code, ""));
    let obj = wait_ready(&env, "sf").await?;
    assert_eq!(obj["status"]["codeSha256"], sha256_b64(b"s3-v1"));
    assert_eq!(obj["status"]["codeSource"]["key"], "app.zip");
    let etag1 = obj["status"]["codeSource"]["etag"].clone();
    assert!(etag1.is_string(), "ETag recorded: {obj}");

    // Steady state: resyncs make reads only.
    let writes = write_calls(&env).await?;
    let reconciles = env.kaws.reconciles("Function").await?;
    env.kubectl_ok(&["annotate", "function/sf", "kaws.io/resync-period=1s"]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        env.kaws.reconciles("Function").await? >= reconciles + 2,
        "resyncs happened"
    );
    assert_eq!(
        write_calls(&env).await?,
        writes,
        "no write call in steady state"
    );

    // A new object at the same key is deployed (the 1s resync notices it).
    let code_calls = lambda_calls(&env, "UpdateFunctionCode").await?;
    put(b"s3-v2").await?;
    let obj = env
        .wait_for::<Function>("sf", Duration::from_secs(20), "new S3 code", |o| {
            o["status"]["codeSha256"] == sha256_b64(b"s3-v2")
        })
        .await?;
    assert_ne!(obj["status"]["codeSource"]["etag"], etag1);
    let conf = lambda(&env)
        .get_function_configuration()
        .function_name(&fn_name)
        .send()
        .await?;
    assert_eq!(conf.code_sha256(), Some(sha256_b64(b"s3-v2").as_str()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        lambda_calls(&env, "UpdateFunctionCode").await? - code_calls,
        1,
        "deployed once, not on every resync"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_waits_for_its_bucket_and_deploys_as_soon_as_it_is_ready() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let role = role(&env).await?;
    let s3_name = unique_name("dep");
    let fn_name = unique_name("reffn");
    env.apply_ok(&function_yaml(
        "rf",
        &fn_name,
        &role,
        "{bucketRef: {name: code}, s3Key: app.zip}",
        "",
    ));
    env.wait_condition_of::<Function>("rf", "Ready", "False", Some("DependencyNotReady"))
        .await?;
    // The S3 bucket and object exist already; the kaws Bucket will adopt the bucket.
    env.s3
        .create_bucket()
        .bucket(&s3_name)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest1)
                .build(),
        )
        .send()
        .await?;
    env.s3
        .put_object()
        .bucket(&s3_name)
        .key("app.zip")
        .body(ByteStream::from_static(b"ref-v1"))
        .send()
        .await?;
    // Reconciles: finalizer, then failures retried after 1-2s, 2-4s, 4-8s. After the fourth the
    // next retry is at least 4s away, so a create sooner than that comes from the Bucket watch.
    let deadline = Instant::now() + Duration::from_secs(15);
    while env.kaws.reconciles("Function").await? < 4 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the Function is not being retried"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last_retry = Instant::now();
    env.apply_ok(&format!(
        "apiVersion: s3.kaws.io/v1alpha1\nkind: Bucket\nmetadata:\n  name: code\n  annotations:\n    kaws.io/adopt: \"true\"\nspec:\n  bucketName: {s3_name}\n"
    ));
    env.wait_for::<Function>("rf", Duration::from_secs(20), "created", |o| {
        o["status"]["arn"].is_string()
    })
    .await?;
    assert!(
        last_retry.elapsed() < Duration::from_millis(3800),
        "the Bucket watch triggered the Function, not its backoff: created {:?} after its last retry",
        last_retry.elapsed()
    );
    let obj = wait_ready(&env, "rf").await?;
    assert_eq!(obj["status"]["codeSha256"], sha256_b64(b"ref-v1"));
    assert_eq!(obj["status"]["codeSource"]["bucket"], s3_name.as_str());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_terminal_and_make_no_aws_call() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let role = "arn:aws:iam::123456789012:role/none";
    let zip = |name: &str, code: &str, extra: &str| {
        function_yaml(name, &unique_name("bad"), role, code, extra)
    };
    let cases = [
        (
            "two",
            zip("two", "{zipFile: eA==, s3Bucket: b, s3Key: k}", ""),
            "exactly one",
        ),
        (
            "runtime",
            zip("runtime", "{zipFile: eA==}", "").replace("python3.12", "cobol85"),
            "not a Lambda runtime",
        ),
        (
            "handler",
            zip("handler", "{zipFile: eA==}", "").replace("  handler: app.handler\n", ""),
            "handler is required",
        ),
        (
            "image-runtime",
            image_yaml(
                "image-runtime",
                &unique_name("bad"),
                role,
                &image_uri("app", "1"),
                "runtime: python3.12",
            ),
            "must not be set for a container image",
        ),
        (
            "image-and-zip",
            zip(
                "image-and-zip",
                &format!("{{zipFile: eA==, imageUri: '{}'}}", image_uri("app", "1")),
                "",
            ),
            "exactly one",
        ),
        (
            "dlq",
            zip(
                "dlq",
                "{zipFile: eA==}",
                "deadLetterConfig: {targetArn: 'arn:aws:s3:::not-a-queue'}",
            ),
            "SQS queue or SNS topic",
        ),
    ];
    for (name, yaml, want) in cases {
        env.apply_ok(&yaml);
        let obj = env
            .wait_condition_of::<Function>(name, "Synced", "False", Some("InvalidSpec"))
            .await?;
        let message = condition(&obj, "Synced").map(|c| c["message"].to_string());
        assert!(
            message.as_deref().is_some_and(|m| m.contains(want)),
            "{name}: {message:?}"
        );
        assert_eq!(
            condition(&obj, "Ready").map(|c| c["status"].clone()),
            Some("False".into())
        );
    }
    assert_eq!(lambda_calls(&env, "CreateFunction").await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_functions_are_adopted_only_when_asked_and_never_taken_from_others()
-> anyhow::Result<()> {
    let env = Env::start().await?;
    let role = role(&env).await?;
    let create = |name: String, tags: Vec<(&'static str, &'static str)>| {
        let mut req = lambda(&env)
            .create_function()
            .function_name(name)
            .runtime(aws_sdk_lambda::types::Runtime::Python312)
            .handler("app.handler")
            .role(&role)
            .code(
                aws_sdk_lambda::types::FunctionCode::builder()
                    .zip_file(Blob::new(b"x".to_vec()))
                    .build(),
            );
        for (k, v) in tags {
            req = req.tags(k, v);
        }
        req.send()
    };
    let free = unique_name("free");
    let other = unique_name("other");
    create(free.clone(), vec![]).await?;
    create(other.clone(), vec![("kaws.io/owner", "elsewhere/ns/x")]).await?;
    let code = format!("{{zipFile: {}}}", STANDARD.encode(zip(b"x")));

    env.apply_ok(&function_yaml("free", &free, &role, &code, ""));
    env.wait_condition_of::<Function>("free", "Synced", "False", Some("AlreadyExists"))
        .await?;
    env.kubectl_ok(&["annotate", "function/free", "kaws.io/adopt=true"]);
    wait_ready(&env, "free").await?;
    let tags = lambda(&env)
        .get_function()
        .function_name(&free)
        .send()
        .await?
        .tags()
        .cloned();
    assert_eq!(
        tags.unwrap_or_default().get("kaws.io/owner"),
        Some(&format!("{}/{}/free", env.cluster_id, env.namespace))
    );

    env.apply_ok(&function_yaml(
        "other",
        &other,
        &role,
        &code,
        "memorySize: 256",
    ));
    env.wait_condition_of::<Function>("other", "Synced", "False", Some("OwnedByOther"))
        .await?;
    env.kubectl_ok(&["delete", "function/other"]);
    let conf = lambda(&env)
        .get_function_configuration()
        .function_name(&other)
        .send()
        .await?;
    assert_eq!(conf.memory_size(), Some(128), "never changed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_from_a_secret_reaches_lambda_and_nowhere_else() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let role = role(&env).await?;
    let fn_name = unique_name("secfn");
    let value = unique_name("s3cr3t-value");
    let code = format!("{{zipFile: {}}}", STANDARD.encode(zip(b"x")));
    env.apply_ok(&function_yaml(
        "sec",
        &fn_name,
        &role,
        &code,
        "environment:\n  variables: {MODE: fast}\n  fromSecrets:\n  - {name: API_TOKEN, secretKeyRef: {name: api, key: token}}",
    ));
    // The Secret does not exist yet: the Function waits, naming the Secret only.
    env.wait_condition_of::<Function>("sec", "Synced", "False", Some("SecretNotFound"))
        .await?;
    env.apply_ok(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: api\nstringData:\n  token: {value}\n"
    ));
    // The Secret watch wakes the Function; it need not wait for a resync.
    let obj = wait_ready(&env, "sec").await?;
    let conf = lambda(&env)
        .get_function_configuration()
        .function_name(&fn_name)
        .send()
        .await?;
    let vars = conf
        .environment()
        .and_then(|e| e.variables())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        vars.get("API_TOKEN"),
        Some(&value),
        "the value reached Lambda"
    );
    assert_eq!(vars.get("MODE").map(String::as_str), Some("fast"));

    // A rotated Secret is deployed.
    let rotated = unique_name("rotated");
    env.apply_ok(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: api\nstringData:\n  token: {rotated}\n"
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let conf = lambda(&env)
            .get_function_configuration()
            .function_name(&fn_name)
            .send()
            .await?;
        let got = conf
            .environment()
            .and_then(|e| e.variables())
            .and_then(|v| v.get("API_TOKEN").cloned());
        if got.as_ref() == Some(&rotated) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "rotated value not deployed: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let status = obj["status"].to_string();
    let events = format!("{:?}", env.event_reasons("sec").await?);
    let logs = env.kaws.logs();
    for secret in [&value, &rotated] {
        assert!(!status.contains(secret.as_str()), "not in status");
        assert!(!events.contains(secret.as_str()), "not in Events");
        assert!(!logs.contains(secret.as_str()), "not in logs");
    }
    Ok(())
}

async fn published_versions(env: &Env, fn_name: &str) -> anyhow::Result<Vec<String>> {
    let out = lambda(env)
        .list_versions_by_function()
        .function_name(fn_name)
        .send()
        .await?;
    Ok(out
        .versions()
        .iter()
        .filter_map(|v| v.version())
        .filter(|v| *v != "$LATEST")
        .map(str::to_string)
        .collect())
}

async fn reserved(env: &Env, fn_name: &str) -> anyhow::Result<Option<i32>> {
    Ok(lambda(env)
        .get_function_concurrency()
        .function_name(fn_name)
        .send()
        .await?
        .reserved_concurrent_executions())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_concurrency_follows_the_spec_and_versions_are_published_only_on_change()
-> anyhow::Result<()> {
    let env = Env::start().await?;
    let role = role(&env).await?;
    let fn_name = unique_name("pubfn");
    let code = format!("{{zipFile: {}}}", STANDARD.encode(zip(b"pub-v1")));
    let apply = |extra: &str| env.apply_ok(&function_yaml("pf", &fn_name, &role, &code, extra));
    apply("publish: true\nreservedConcurrentExecutions: 5");
    let obj = env
        .wait_for::<Function>("pf", Duration::from_secs(30), "published", |o| {
            o["status"]["version"] == "1"
                && condition(o, "Ready").is_some_and(|c| c["status"] == "True")
        })
        .await?;
    assert_eq!(obj["status"]["reservedConcurrentExecutions"], 5);
    assert_eq!(reserved(&env, &fn_name).await?, Some(5));
    assert_eq!(published_versions(&env, &fn_name).await?, vec!["1"]);

    // Steady state: resyncs read only; nothing is published again.
    let writes = write_calls(&env).await?;
    let concurrency_reads = lambda_calls(&env, "GetFunctionConcurrency").await?;
    let reconciles = env.kaws.reconciles("Function").await?;
    env.kubectl_ok(&["annotate", "function/pf", "kaws.io/resync-period=1s"]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(env.kaws.reconciles("Function").await? >= reconciles + 2);
    assert_eq!(write_calls(&env).await?, writes, "no write in steady state");
    assert_eq!(
        lambda_calls(&env, "GetFunctionConcurrency").await?,
        concurrency_reads,
        "GetFunction shows the reservation: no second read"
    );

    // A configuration change is published as version 2.
    apply("publish: true\nreservedConcurrentExecutions: 5\nmemorySize: 256");
    env.wait_for::<Function>("pf", Duration::from_secs(30), "version 2", |o| {
        o["status"]["version"] == "2"
            && condition(o, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await?;
    assert_eq!(published_versions(&env, &fn_name).await?, vec!["1", "2"]);
    let v2 = lambda(&env)
        .get_function_configuration()
        .function_name(&fn_name)
        .qualifier("2")
        .send()
        .await?;
    assert_eq!(v2.memory_size(), Some(256), "version 2 has the change");

    // Concurrency is not part of a version: changing it publishes nothing. A reservation of 0
    // (which moto leaves out of GetFunction) is confirmed with GetFunctionConcurrency, not
    // rewritten on every resync.
    let puts = lambda_calls(&env, "PutFunctionConcurrency").await?;
    apply("publish: true\nreservedConcurrentExecutions: 0\nmemorySize: 256");
    env.wait_for::<Function>("pf", Duration::from_secs(30), "concurrency 0", |o| {
        o["status"]["reservedConcurrentExecutions"] == 0
            && o["status"]["observedGeneration"] == o["metadata"]["generation"]
            && condition(o, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await?;
    assert_eq!(reserved(&env, &fn_name).await?, Some(0));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        lambda_calls(&env, "PutFunctionConcurrency").await? - puts,
        1,
        "set once, not on every resync"
    );
    assert_eq!(published_versions(&env, &fn_name).await?, vec!["1", "2"]);

    // Without the field there is no reservation; without publish, status shows $LATEST.
    apply("memorySize: 256");
    env.wait_for::<Function>("pf", Duration::from_secs(30), "no reservation", |o| {
        o["status"]["reservedConcurrentExecutions"].is_null()
            && o["status"]["version"] == "$LATEST"
            && o["status"]["observedGeneration"] == o["metadata"]["generation"]
            && condition(o, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await?;
    assert_eq!(reserved(&env, &fn_name).await?, None);
    assert_eq!(lambda_calls(&env, "DeleteFunctionConcurrency").await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_function_deploys_a_new_image_and_never_switches_package_type() -> anyhow::Result<()>
{
    let env = Env::start().await?;
    let role = role(&env).await?;
    let fn_name = unique_name("imgfn");
    let v1 = image_uri("app", "1.0");
    env.apply_ok(&image_yaml("img", &fn_name, &role, &v1, ""));
    let obj = wait_ready(&env, "img").await?;
    assert_eq!(obj["status"]["packageType"], "Image");
    assert_eq!(obj["status"]["imageUri"], v1.as_str());
    let got = lambda(&env)
        .get_function()
        .function_name(&fn_name)
        .send()
        .await?;
    assert_eq!(
        got.configuration()
            .and_then(|c| c.package_type())
            .map(|p| p.as_str()),
        Some("Image")
    );
    assert_eq!(got.code().and_then(|c| c.image_uri()), Some(v1.as_str()));

    // A new image (by digest) is deployed with one UpdateFunctionCode.
    let v2 = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app@sha256:2f8c6e3b";
    env.apply_ok(&image_yaml("img", &fn_name, &role, v2, ""));
    env.wait_for::<Function>("img", Duration::from_secs(30), "new image", |o| {
        o["status"]["imageUri"] == v2
            && condition(o, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await?;
    let got = lambda(&env)
        .get_function()
        .function_name(&fn_name)
        .send()
        .await?;
    assert_eq!(got.code().and_then(|c| c.image_uri()), Some(v2));
    assert_eq!(lambda_calls(&env, "UpdateFunctionCode").await?, 1);
    assert_eq!(lambda_calls(&env, "UpdateFunctionConfiguration").await?, 0);

    // Switching to a zip is refused by the API server (Lambda cannot do it).
    let code = format!("{{zipFile: {}}}", STANDARD.encode(zip(b"x")));
    let out = env.apply(&function_yaml("img", &fn_name, &role, &code, ""));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("cannot switch"),
        "{stderr}"
    );

    // An existing zip function claimed with an image: terminal, no write.
    let zip_fn = unique_name("zipped");
    lambda(&env)
        .create_function()
        .function_name(&zip_fn)
        .runtime(aws_sdk_lambda::types::Runtime::Python312)
        .handler("app.handler")
        .role(&role)
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .zip_file(Blob::new(b"x".to_vec()))
                .build(),
        )
        .send()
        .await?;
    let writes = write_calls(&env).await?;
    env.apply_ok(&image_yaml("claim", &zip_fn, &role, &v1, ""));
    env.kubectl_ok(&["annotate", "function/claim", "kaws.io/adopt=true"]);
    let obj = env
        .wait_condition_of::<Function>("claim", "Synced", "False", Some("InvalidSpec"))
        .await?;
    let message = condition(&obj, "Synced").map(|c| c["message"].to_string());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("package type Zip") && m.contains("cannot switch")),
        "{message:?}"
    );
    assert_eq!(write_calls(&env).await?, writes, "no write");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_iam_does_not_know_yet_is_retried_until_it_exists() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let role_name = unique_name("late-role");
    // moto's account; moto answers Lambda's "cannot be assumed" for a role IAM does not have.
    let role = format!("arn:aws:iam::123456789012:role/{role_name}");
    let fn_name = unique_name("latefn");
    let code = format!("{{zipFile: {}}}", STANDARD.encode(zip(b"x")));
    env.apply_ok(&function_yaml("late", &fn_name, &role, &code, ""));
    let obj = env
        .wait_condition_of::<Function>("late", "Synced", "False", Some("InvalidRole"))
        .await?;
    let message = condition(&obj, "Synced").map(|c| c["message"].to_string());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("cannot be assumed")),
        "AWS's message: {message:?}"
    );
    // Retried (transient), not given up on.
    let deadline = Instant::now() + Duration::from_secs(20);
    while lambda_calls(&env, "CreateFunction").await? < 2 {
        anyhow::ensure!(Instant::now() < deadline, "CreateFunction not retried");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The role appears (IAM caught up): the function is created without touching the object.
    aws_sdk_iam::Client::new(&env.aws)
        .create_role()
        .role_name(&role_name)
        .assume_role_policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#,
        )
        .send()
        .await?;
    env.wait_for::<Function>("late", Duration::from_secs(60), "Ready", |o| {
        condition(o, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_and_observe_only_functions_are_left_in_aws() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let role = role(&env).await?;
    let code = format!("{{zipFile: {}}}", STANDARD.encode(zip(b"x")));

    // Retain: deleting the object leaves the function, tags and all.
    let kept = unique_name("kept");
    env.apply_ok(&function_yaml(
        "kept",
        &kept,
        &role,
        &code,
        "deletionPolicy: Retain",
    ));
    wait_ready(&env, "kept").await?;
    env.kubectl_ok(&["delete", "function/kept", "--wait=false"]);
    env.wait_gone_of::<Function>("kept", Duration::from_secs(30))
        .await?;
    let got = lambda(&env)
        .get_function()
        .function_name(&kept)
        .send()
        .await?;
    assert_eq!(
        got.tags().and_then(|t| t.get("kaws.io/owner")),
        Some(&format!("{}/{}/kept", env.cluster_id, env.namespace)),
        "left untouched, still tagged"
    );
    assert_eq!(lambda_calls(&env, "DeleteFunction").await?, 0);

    // ObserveOnly: an existing function is read into status and never written or deleted.
    let seen = unique_name("seen");
    lambda(&env)
        .create_function()
        .function_name(&seen)
        .runtime(aws_sdk_lambda::types::Runtime::Python312)
        .handler("app.handler")
        .role(&role)
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .zip_file(Blob::new(b"seen".to_vec()))
                .build(),
        )
        .send()
        .await?;
    let writes = write_calls(&env).await?;
    env.apply_ok(&function_yaml(
        "seen",
        &seen,
        &role,
        &code,
        "managementPolicy: ObserveOnly\nmemorySize: 512\nreservedConcurrentExecutions: 3",
    ));
    let obj = env
        .wait_condition_of::<Function>("seen", "Synced", "True", Some("Observed"))
        .await?;
    assert_eq!(obj["status"]["codeSha256"], sha256_b64(b"seen"));
    assert_eq!(obj["status"]["state"], "Active");
    assert!(obj["status"]["arn"].is_string(), "{obj}");
    env.kubectl_ok(&["delete", "function/seen", "--wait=false"]);
    env.wait_gone_of::<Function>("seen", Duration::from_secs(30))
        .await?;
    let conf = lambda(&env)
        .get_function_configuration()
        .function_name(&seen)
        .send()
        .await?;
    assert_eq!(conf.memory_size(), Some(128), "never changed");
    assert_eq!(write_calls(&env).await?, writes, "no write call at all");
    Ok(())
}

/// Batched observation: at a steady state one `ListFunctions` serves every Function of a
/// region, so its calls follow the clock, not the number of objects; what the listing lacks
/// (tags, reserved concurrency, image URI) comes from `GetFunction` every
/// `DETAILS_EVERY` resync periods. Drift in either part is still corrected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_functions_share_one_listing_and_drift_is_still_corrected() -> anyhow::Result<()> {
    let env = Env::start_with(kaws_e2e::env::EnvOptions {
        resync_period: "8s".into(),
        ..Default::default()
    })
    .await?;
    let role = role(&env).await?;
    let code = format!("{{zipFile: {}}}", STANDARD.encode(zip(b"fleet")));
    let count = 20;
    let names: Vec<String> = (0..count).map(|_| unique_name("fleet")).collect();
    let manifest: String = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "---\n{}",
                function_yaml(
                    &format!("f{i}"),
                    n,
                    &role,
                    &code,
                    "memorySize: 256\ntags: {team: data}"
                )
            )
        })
        .collect();
    env.apply_ok(&manifest);
    for i in 0..count {
        wait_ready(&env, &format!("f{i}")).await?;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let window = Duration::from_secs(24);
    let (reconciles, lists, gets, writes) = (
        env.kaws.reconciles("Function").await?,
        lambda_calls(&env, "ListFunctions").await?,
        lambda_calls(&env, "GetFunction").await?,
        write_calls(&env).await?,
    );
    tokio::time::sleep(window).await;
    let reconciles = env.kaws.reconciles("Function").await? - reconciles;
    let lists = lambda_calls(&env, "ListFunctions").await? - lists;
    let gets = lambda_calls(&env, "GetFunction").await? - gets;
    let writes = write_calls(&env).await? - writes;
    println!(
        "{count} functions, resync 8s, {window:?}: {reconciles} reconciles, {lists} ListFunctions, {gets} GetFunction, {writes} writes"
    );
    assert!(
        reconciles >= 2 * count as u64,
        "every object resynced at least twice: {reconciles}"
    );
    // A listing lives a quarter of the resync period (2 s): at most one per 2 s.
    let bound = window.as_secs() / 2 + 2;
    assert!(lists <= bound, "{lists} ListFunctions (bound {bound})");
    assert!(
        gets <= count as u64,
        "details at most once per function in a window shorter than {} periods: {gets} GetFunction",
        kaws::core::batch::DETAILS_EVERY
    );
    assert_eq!(writes, 0, "steady state writes nothing");

    // Drift of a listed field (memory) is corrected at the next resync.
    let client = lambda(&env);
    client
        .update_function_configuration()
        .function_name(&names[0])
        .memory_size(512)
        .send()
        .await?;
    let note = env.wait_event("f0", "DriftCorrected").await?;
    assert!(note.contains("memorySize"), "{note}");
    // Drift of a tag, which the listing lacks, within DETAILS_EVERY periods (here of 1 s).
    env.kubectl_ok(&["annotate", "function/f1", "kaws.io/resync-period=1s"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let arn = client
        .get_function()
        .function_name(&names[1])
        .send()
        .await?
        .configuration()
        .and_then(|c| c.function_arn())
        .unwrap_or_default()
        .to_string();
    client
        .untag_resource()
        .resource(&arn)
        .tag_keys("team")
        .send()
        .await?;
    let note = env.wait_event("f1", "DriftCorrected").await?;
    assert!(note.contains("tags"), "{note}");
    let tags = client.list_tags().resource(&arn).send().await?;
    assert_eq!(
        tags.tags().and_then(|t| t.get("team")).map(String::as_str),
        Some("data")
    );
    Ok(())
}
