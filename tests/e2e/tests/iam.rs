//! End to end for the IAM kinds (Role, Policy, InstanceProfile) and the references to them: the
//! real kaws binary, the test API server, moto and real kubectl.
//!
//! moto hands documents back as IAM does: URL-encoded, and as stored rather than as written, so
//! the steady-state test proves that documents are compared by meaning.

use std::{collections::BTreeMap, time::Duration};

use aws_sdk_iam::Client;
use kaws::resources::{
    function::Function, instanceprofile::InstanceProfile, policy::Policy, role::Role,
};
use kaws_e2e::{
    Env,
    env::{EnvOptions, condition},
    kaws::sum_samples,
    unique_name,
};
use serde_json::Value;

const ACCOUNT: &str = "123456789012";

fn boundary_arn() -> String {
    format!("arn:aws:iam::{ACCOUNT}:policy/kaws-permissions-boundary")
}

/// An environment whose kaws sets the permissions boundary, which exists in moto.
async fn env(resync: &str) -> anyhow::Result<(Env, Client)> {
    let env = Env::start_with(EnvOptions {
        resync_period: resync.into(),
        extra_env: BTreeMap::from([("KAWS_IAM_PERMISSIONS_BOUNDARY".to_string(), boundary_arn())]),
        ..Default::default()
    })
    .await?;
    let iam = Client::new(&env.aws);
    // moto is shared by the tests of one run; the boundary may be there already.
    let _ = iam
        .create_policy()
        .policy_name("kaws-permissions-boundary")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*","logs:*"],"Resource":"*"}]}"#)
        .send()
        .await;
    Ok((env, iam))
}

const TRUST_YAML: &str = "  assumeRolePolicy:\n    Version: '2012-10-17'\n    Statement:\n      - Effect: Allow\n        Principal: {Service: lambda.amazonaws.com}\n        Action: sts:AssumeRole\n";

fn iam_writes(text: &str) -> u64 {
    sum_samples(text, "kaws_aws_api_calls_total", |l| {
        l.contains("service=\"iam\"")
            && !["operation=\"Get", "operation=\"List"]
                .iter()
                .any(|p| l.contains(p))
    })
}

fn iam_calls(text: &str, operation: &str) -> u64 {
    sum_samples(text, "kaws_aws_api_calls_total", |l| {
        l.contains("service=\"iam\"") && l.contains(&format!("operation=\"{operation}\""))
    })
}

fn synced_message(obj: &Value) -> String {
    condition(obj, "Synced")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn role_policy_and_instance_profile_converge_hold_still_and_correct_drift()
-> anyhow::Result<()> {
    let (env, iam) = env("1s").await?;
    let role = unique_name("app");
    let policy = unique_name("read");
    let profile = unique_name("app");
    env.apply_ok(&format!(
        "apiVersion: iam.kaws.io/v1alpha1\nkind: Policy\nmetadata: {{name: read}}\nspec:\n  policyName: {policy}\n  description: read the data\n  document: '{{\"Version\":\"2012-10-17\",\"Statement\":[{{\"Effect\":\"Allow\",\"Action\":[\"s3:GetObject\"],\"Resource\":[\"*\"]}}]}}'\n---\napiVersion: iam.kaws.io/v1alpha1\nkind: Role\nmetadata: {{name: app}}\nspec:\n  roleName: {role}\n  description: the app\n{TRUST_YAML}  inlinePolicies:\n    logs:\n      Version: '2012-10-17'\n      Statement:\n        Effect: Allow\n        Action: [logs:CreateLogStream, logs:PutLogEvents]\n        Resource: '*'\n  policyRefs: [{{name: read}}]\n  tags: {{team: a}}\n---\napiVersion: iam.kaws.io/v1alpha1\nkind: InstanceProfile\nmetadata: {{name: app}}\nspec:\n  instanceProfileName: {profile}\n  roleRef: {{name: app}}\n"
    ));
    env.wait_condition_of::<Policy>("read", "Ready", "True", None)
        .await?;
    let role_obj = env
        .wait_condition_of::<Role>("app", "Ready", "True", None)
        .await?;
    env.wait_for::<InstanceProfile>("app", Duration::from_secs(60), "Ready with the role", |o| {
        condition(o, "Ready").is_some_and(|c| c["status"] == "True")
            && o["status"]["roleName"] == role.as_str()
    })
    .await?;

    // What IAM has: the role under the prefix, with the boundary, its tags, the inline policy
    // and the referenced policy attached; the profile holds it.
    let got = iam.get_role().role_name(&role).send().await?;
    let r = got.role().expect("role");
    assert_eq!(r.path(), "/kaws/");
    assert_eq!(
        r.permissions_boundary()
            .and_then(|b| b.permissions_boundary_arn()),
        Some(boundary_arn().as_str())
    );
    assert_eq!(role_obj["status"]["arn"], r.arn());
    let tags: BTreeMap<_, _> = r.tags().iter().map(|t| (t.key(), t.value())).collect();
    assert_eq!(tags.get("team"), Some(&"a"));
    assert!(tags.contains_key("kaws.io/owner"), "{tags:?}");
    let inline = iam.list_role_policies().role_name(&role).send().await?;
    assert_eq!(inline.policy_names(), ["logs"]);
    let attached = iam
        .list_attached_role_policies()
        .role_name(&role)
        .send()
        .await?;
    let policy_arn = format!("arn:aws:iam::{ACCOUNT}:policy/kaws/{policy}");
    assert_eq!(
        attached
            .attached_policies()
            .iter()
            .filter_map(|p| p.policy_arn())
            .collect::<Vec<_>>(),
        [policy_arn.as_str()]
    );
    let got = iam
        .get_instance_profile()
        .instance_profile_name(&profile)
        .send()
        .await?;
    let p = got.instance_profile().expect("profile");
    assert_eq!(p.path(), "/kaws/");
    assert_eq!(
        p.roles().iter().map(|r| r.role_name()).collect::<Vec<_>>(),
        [role.as_str()]
    );

    // Steady state: IAM hands the documents back URL-encoded and as it stores them; several
    // resyncs make no IAM write and no status write.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = env.kaws.metrics().await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = env.kaws.metrics().await?;
    let resyncs = sum_samples(&after, "kaws_reconciles_total", |l| {
        l.contains("kind=\"Role\"")
    }) - sum_samples(&before, "kaws_reconciles_total", |l| {
        l.contains("kind=\"Role\"")
    });
    assert!(resyncs >= 3, "the role was resynced ({resyncs} reconciles)");
    assert_eq!(
        iam_writes(&after) - iam_writes(&before),
        0,
        "no IAM write in steady state"
    );
    let status_writes = |t: &str| {
        sum_samples(t, "kaws_status_writes_total", |l| {
            l.contains("outcome=\"written\"")
                && ["Role", "Policy", "InstanceProfile"]
                    .iter()
                    .any(|k| l.contains(&format!("kind=\"{k}\"")))
        })
    };
    assert_eq!(
        status_writes(&after) - status_writes(&before),
        0,
        "no status write"
    );

    // Drift: an inline policy and an attachment added outside kaws are removed.
    iam.put_role_policy()
        .role_name(&role)
        .policy_name("rogue")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:*","Resource":"*"}]}"#)
        .send()
        .await?;
    let rogue_arn = boundary_arn();
    iam.attach_role_policy()
        .role_name(&role)
        .policy_arn(&rogue_arn)
        .send()
        .await?;
    let note = env.wait_event("app", "DriftCorrected").await?;
    assert!(
        note.contains("inlinePolicies") && note.contains("managedPolicyArns"),
        "{note}"
    );
    let inline = iam.list_role_policies().role_name(&role).send().await?;
    assert_eq!(inline.policy_names(), ["logs"]);
    let attached = iam
        .list_attached_role_policies()
        .role_name(&role)
        .send()
        .await?;
    assert_eq!(attached.attached_policies().len(), 1);

    // A spec change: trust, description and tags follow.
    env.apply_ok(&format!(
        "apiVersion: iam.kaws.io/v1alpha1\nkind: Role\nmetadata: {{name: app}}\nspec:\n  roleName: {role}\n  description: the app, v2\n  maxSessionDuration: 7200\n{}  inlinePolicies:\n    logs:\n      Version: '2012-10-17'\n      Statement:\n        Effect: Allow\n        Action: [logs:CreateLogStream, logs:PutLogEvents]\n        Resource: '*'\n  policyRefs: [{{name: read}}]\n",
        TRUST_YAML.replace("lambda.amazonaws.com", "ec2.amazonaws.com")
    ));
    env.wait_for::<Role>(
        "app",
        Duration::from_secs(60),
        "the changed spec applied",
        |o| {
            o["status"]["observedGeneration"] == o["metadata"]["generation"]
                && condition(o, "Ready").is_some_and(|c| c["status"] == "True")
        },
    )
    .await?;
    let got = iam.get_role().role_name(&role).send().await?;
    let r = got.role().expect("role");
    assert_eq!(r.description(), Some("the app, v2"));
    assert_eq!(r.max_session_duration(), Some(7200));
    assert!(
        urlencoding::decode(r.assume_role_policy_document().unwrap_or_default())?
            .contains("ec2.amazonaws.com")
    );
    assert!(
        !r.tags().iter().any(|t| t.key() == "team"),
        "the removed tag is gone"
    );

    // Delete all three: the profile lets go of the role, the role of the policy.
    env.kubectl_ok(&[
        "delete",
        "instanceprofiles.iam.kaws.io,roles.iam.kaws.io,policies.iam.kaws.io",
        "--all",
        "--wait=false",
    ]);
    env.wait_gone_of::<Role>("app", Duration::from_secs(60))
        .await?;
    env.wait_gone_of::<Policy>("read", Duration::from_secs(60))
        .await?;
    env.wait_gone_of::<InstanceProfile>("app", Duration::from_secs(60))
        .await?;
    assert!(iam.get_role().role_name(&role).send().await.is_err());
    assert!(
        iam.get_policy()
            .policy_arn(&policy_arn)
            .send()
            .await
            .is_err()
    );
    assert!(
        iam.get_instance_profile()
            .instance_profile_name(&profile)
            .send()
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_document_change_makes_a_new_default_version_and_keeps_at_most_five() -> anyhow::Result<()>
{
    let (env, iam) = env("10m").await?;
    let name = unique_name("versions");
    let yaml = |n: u32| {
        format!(
            "apiVersion: iam.kaws.io/v1alpha1\nkind: Policy\nmetadata: {{name: versions}}\nspec:\n  policyName: {name}\n  document:\n    Version: '2012-10-17'\n    Statement:\n      - Effect: Allow\n        Action: s3:GetObject\n        Resource: arn:aws:s3:::bucket-{n}/*\n"
        )
    };
    env.apply_ok(&yaml(0));
    env.wait_condition_of::<Policy>("versions", "Ready", "True", None)
        .await?;
    for n in 1..=6 {
        env.apply_ok(&yaml(n));
        env.wait_for::<Policy>(
            "versions",
            Duration::from_secs(60),
            "the new version",
            |o| {
                o["status"]["observedGeneration"] == o["metadata"]["generation"]
                    && condition(o, "Ready").is_some_and(|c| c["status"] == "True")
            },
        )
        .await?;
    }
    let arn = format!("arn:aws:iam::{ACCOUNT}:policy/kaws/{name}");
    let versions = iam.list_policy_versions().policy_arn(&arn).send().await?;
    assert_eq!(versions.versions().len(), 5, "IAM keeps 5 versions");
    let default = versions
        .versions()
        .iter()
        .find(|v| v.is_default_version())
        .and_then(|v| v.version_id())
        .expect("a default version")
        .to_string();
    assert_eq!(default, "v7", "7 documents, 7 versions");
    let obj = env.api::<Policy>().get("versions").await?;
    assert_eq!(
        obj.status.and_then(|s| s.default_version_id).as_deref(),
        Some("v7")
    );
    let document = iam
        .get_policy_version()
        .policy_arn(&arn)
        .version_id(&default)
        .send()
        .await?;
    let text = urlencoding::decode(
        document
            .policy_version()
            .and_then(|v| v.document())
            .unwrap_or_default(),
    )?
    .into_owned();
    assert!(text.contains("bucket-6"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn specs_that_would_escalate_privileges_are_refused_before_any_iam_write()
-> anyhow::Result<()> {
    let (env, iam) = env("10m").await?;
    // A role outside the prefix, made outside kaws (an admin's).
    let admin = unique_name("admin");
    iam.create_role()
        .role_name(&admin)
        .path("/")
        .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#)
        .send()
        .await?;
    let other = unique_name("other");
    let elsewhere = unique_name("elsewhere");
    let profile = unique_name("admin");
    env.apply_ok(&format!(
        "apiVersion: iam.kaws.io/v1alpha1\nkind: Role\nmetadata: {{name: outside}}\nspec:\n  roleName: {elsewhere}\n  path: /admin/\n{TRUST_YAML}---\napiVersion: iam.kaws.io/v1alpha1\nkind: Role\nmetadata: {{name: unbounded}}\nspec:\n  roleName: {other}\n  permissionsBoundary: arn:aws:iam::aws:policy/AdministratorAccess\n{TRUST_YAML}---\napiVersion: iam.kaws.io/v1alpha1\nkind: Role\nmetadata:\n  name: takeover\n  annotations: {{kaws.io/adopt: \"true\"}}\nspec:\n  roleName: {admin}\n{TRUST_YAML}---\napiVersion: iam.kaws.io/v1alpha1\nkind: InstanceProfile\nmetadata: {{name: admin}}\nspec:\n  instanceProfileName: {profile}\n  roleName: {admin}\n"
    ));
    let outside = env
        .wait_condition_of::<Role>("outside", "Synced", "False", Some("InvalidSpec"))
        .await?;
    assert!(
        synced_message(&outside).contains("outside the IAM path prefix \"/kaws/\""),
        "{outside}"
    );
    let unbounded = env
        .wait_condition_of::<Role>("unbounded", "Synced", "False", Some("InvalidSpec"))
        .await?;
    assert!(
        synced_message(&unbounded).contains("is not the boundary kaws sets"),
        "{unbounded}"
    );
    let takeover = env
        .wait_condition_of::<Role>("takeover", "Synced", "False", Some("InvalidSpec"))
        .await?;
    assert!(
        synced_message(&takeover).contains("kaws will not change it"),
        "{takeover}"
    );
    let profile_obj = env
        .wait_condition_of::<InstanceProfile>("admin", "Synced", "False", Some("InvalidSpec"))
        .await?;
    assert!(
        synced_message(&profile_obj).contains("kaws hands EC2 no role it could not create itself"),
        "{profile_obj}"
    );
    let metrics = env.kaws.metrics().await?;
    assert_eq!(iam_writes(&metrics), 0, "no IAM write at all");
    assert!(iam.get_role().role_name(&elsewhere).send().await.is_err());
    assert!(iam.get_role().role_name(&other).send().await.is_err());
    let admin_role = iam.get_role().role_name(&admin).send().await?;
    assert!(
        admin_role.role().is_some_and(|r| r.tags().is_empty()),
        "the admin role was not tagged"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_in_an_instance_profile_kaws_does_not_own_is_not_deleted_until_it_leaves()
-> anyhow::Result<()> {
    let (env, iam) = env("10m").await?;
    let role = unique_name("shared");
    env.apply_ok(&format!(
        "apiVersion: iam.kaws.io/v1alpha1\nkind: Role\nmetadata: {{name: shared}}\nspec:\n  roleName: {role}\n{TRUST_YAML}"
    ));
    env.wait_condition_of::<Role>("shared", "Ready", "True", None)
        .await?;
    let foreign = unique_name("foreign");
    iam.create_instance_profile()
        .instance_profile_name(&foreign)
        .send()
        .await?;
    iam.add_role_to_instance_profile()
        .instance_profile_name(&foreign)
        .role_name(&role)
        .send()
        .await?;
    env.kubectl_ok(&["delete", "roles.iam.kaws.io", "shared", "--wait=false"]);
    let obj = env
        .wait_condition_of::<Role>("shared", "Synced", "False", Some("RoleInUse"))
        .await?;
    assert!(synced_message(&obj).contains(&foreign), "{obj}");
    assert!(iam.get_role().role_name(&role).send().await.is_ok());
    let before = iam_calls(&env.kaws.metrics().await?, "DeleteRole");
    assert_eq!(before, 0, "no DeleteRole while the profile holds the role");
    iam.remove_role_from_instance_profile()
        .instance_profile_name(&foreign)
        .role_name(&role)
        .send()
        .await?;
    // Blocked deletes are retried on a slow schedule; a change to the object wakes it now.
    env.kubectl_ok(&[
        "annotate",
        "roles.iam.kaws.io",
        "shared",
        "kaws.io/reconcile-requested-at=now",
    ]);
    env.wait_gone_of::<Role>("shared", Duration::from_secs(60))
        .await?;
    assert!(iam.get_role().role_name(&role).send().await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_waits_for_its_role_and_runs_with_its_arn() -> anyhow::Result<()> {
    let (env, iam) = env("10m").await?;
    let role = unique_name("fn");
    let function = unique_name("fn");
    // The Function first: it waits for the Role it names, then deploys as soon as that is Ready.
    env.apply_ok(&format!(
        "apiVersion: lambda.kaws.io/v1alpha1\nkind: Function\nmetadata: {{name: fn}}\nspec:\n  functionName: {function}\n  runtime: python3.12\n  handler: app.handler\n  roleRef: {{name: fn}}\n  code: {{zipFile: UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==}}\n"
    ));
    env.wait_condition_of::<Function>("fn", "Ready", "False", Some("DependencyNotReady"))
        .await?;
    env.apply_ok(&format!(
        "apiVersion: iam.kaws.io/v1alpha1\nkind: Role\nmetadata: {{name: fn}}\nspec:\n  roleName: {role}\n{TRUST_YAML}"
    ));
    env.wait_condition_of::<Role>("fn", "Ready", "True", None)
        .await?;
    let started = std::time::Instant::now();
    env.wait_condition_of::<Function>("fn", "Ready", "True", None)
        .await?;
    let waited = started.elapsed();
    let role_arn = iam
        .get_role()
        .role_name(&role)
        .send()
        .await?
        .role()
        .map(|r| r.arn().to_string())
        .expect("role");
    let lambda = aws_sdk_lambda::Client::new(&env.aws);
    let got = lambda
        .get_function()
        .function_name(&function)
        .send()
        .await?;
    assert_eq!(
        got.configuration().and_then(|c| c.role()),
        Some(role_arn.as_str())
    );
    // The watch on Roles woke the Function, not its 10 minute resync.
    assert!(waited < Duration::from_secs(30), "took {waited:?}");
    Ok(())
}

/// `examples/iam.yaml` (with an AMI moto knows): one apply, and the Function and the Instance
/// end up Ready with the role and the instance profile kaws made for them.
#[tokio::test(flavor = "multi_thread")]
async fn the_iam_example_becomes_ready_with_one_apply() -> anyhow::Result<()> {
    let (env, iam) = env("10m").await?;
    let ec2 = aws_sdk_ec2::Client::new(&env.aws);
    let ami = kaws_e2e::fixtures::moto_ami(&env.aws).await?;
    let example =
        std::fs::read_to_string(kaws_e2e::moto::workspace_root().join("examples/iam.yaml"))?;
    // The example names a real AMI; moto knows other ids. Names are unique per test run (moto
    // is shared by the tests of one run).
    let suffix = unique_name("x");
    let manifest = example.replace("ami-0abcdef1234567890", &ami).replace(
        "kaws-example-worker",
        &format!("kaws-example-worker-{suffix}"),
    );
    env.apply_ok(&manifest);
    for kind in ["policy", "role", "instanceprofile", "function", "instance"] {
        env.kubectl_ok(&[
            "wait",
            "--for=condition=Ready",
            &format!(
                "{kind}.kaws.io",
                kind = match kind {
                    "function" => "functions.lambda",
                    "instance" => "instances.ec2",
                    "policy" => "policies.iam",
                    "role" => "roles.iam",
                    _ => "instanceprofiles.iam",
                }
            ),
            "--all",
            "--timeout=90s",
        ]);
    }
    let profile_arn = iam
        .get_instance_profile()
        .instance_profile_name(format!("kaws-example-worker-{suffix}"))
        .send()
        .await?
        .instance_profile()
        .map(|p| p.arn().to_string())
        .expect("profile");
    let instance: kaws::resources::instance::Instance = env.api().get("worker").await?;
    let id = instance
        .status
        .and_then(|s| s.instance_id)
        .expect("an instance id");
    let described = ec2.describe_instances().instance_ids(&id).send().await?;
    let used = described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find_map(|i| i.iam_instance_profile().and_then(|p| p.arn()))
        .map(str::to_string);
    assert_eq!(used.as_deref(), Some(profile_arn.as_str()));
    let role_arn = iam
        .get_role()
        .role_name(format!("kaws-example-worker-{suffix}-function"))
        .send()
        .await?
        .role()
        .map(|r| r.arn().to_string())
        .expect("role");
    let lambda = aws_sdk_lambda::Client::new(&env.aws);
    let f = lambda
        .get_function()
        .function_name(format!("kaws-example-worker-{suffix}"))
        .send()
        .await?;
    assert_eq!(
        f.configuration().and_then(|c| c.role()),
        Some(role_arn.as_str())
    );
    Ok(())
}

/// Roles made outside kaws: not taken without `kaws.io/adopt`, adopted with it (tagged, and the
/// inline policy the spec does not name removed), read without writes under ObserveOnly (even
/// outside the prefix: reading grants nothing), and left in IAM by `Retain`.
#[tokio::test(flavor = "multi_thread")]
async fn existing_roles_are_adopted_only_when_asked_observed_without_writes_and_retained()
-> anyhow::Result<()> {
    let (env, iam) = env("10m").await?;
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let legacy = unique_name("legacy");
    iam.create_role()
        .role_name(&legacy)
        .path("/kaws/")
        .assume_role_policy_document(trust)
        .send()
        .await?;
    iam.put_role_policy()
        .role_name(&legacy)
        .policy_name("extra")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#)
        .send()
        .await?;
    let admin = unique_name("admin");
    iam.create_role()
        .role_name(&admin)
        .path("/")
        .assume_role_policy_document(trust)
        .send()
        .await?;
    let role_yaml = |name: &str, role: &str, annotations: &str, extra: &str| {
        format!(
            "apiVersion: iam.kaws.io/v1alpha1\nkind: Role\nmetadata:\n  name: {name}\n  annotations: {{{annotations}}}\nspec:\n  roleName: {role}\n{TRUST_YAML}{extra}"
        )
    };
    env.apply_ok(&role_yaml(
        "legacy",
        &legacy,
        "",
        "  deletionPolicy: Retain\n",
    ));
    env.wait_condition_of::<Role>("legacy", "Synced", "False", Some("AlreadyExists"))
        .await?;
    env.apply_ok(&role_yaml(
        "admin",
        &admin,
        "",
        "  managementPolicy: ObserveOnly\n",
    ));
    let observed = env
        .wait_condition_of::<Role>("admin", "Ready", "True", None)
        .await?;
    assert_eq!(
        observed["status"]["arn"],
        format!("arn:aws:iam::{ACCOUNT}:role/{admin}")
    );
    let writes = iam_writes(&env.kaws.metrics().await?);
    assert_eq!(writes, 0, "refusing and observing wrote nothing");

    env.apply_ok(&role_yaml(
        "legacy",
        &legacy,
        "kaws.io/adopt: \"true\"",
        "  deletionPolicy: Retain\n",
    ));
    env.wait_for::<Role>(
        "legacy",
        Duration::from_secs(60),
        "adopted and converged",
        |o| {
            condition(o, "Ready").is_some_and(|c| c["status"] == "True")
                && o["status"]["inlinePolicyCount"] == 0
        },
    )
    .await?;
    let got = iam.get_role().role_name(&legacy).send().await?;
    assert!(
        got.role()
            .is_some_and(|r| r.tags().iter().any(|t| t.key() == "kaws.io/owner")),
        "the adopted role carries the owner tag"
    );
    env.kubectl_ok(&["delete", "roles.iam.kaws.io", "legacy", "admin"]);
    assert!(
        iam.get_role().role_name(&legacy).send().await.is_ok(),
        "Retain left the role"
    );
    assert!(
        iam.get_role().role_name(&admin).send().await.is_ok(),
        "ObserveOnly left the role"
    );
    Ok(())
}
