//! End to end for Instance: the real kaws binary, the test API server, moto and real kubectl.
//! moto moves an instance to its final state on the next describe (pending → running,
//! stopping → stopped, shutting-down → terminated), so every waiting path is crossed once.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use aws_sdk_ec2::types as ec2;
use kaws::resources::instance::Instance;
use kaws_e2e::{
    Env,
    env::{EnvOptions, condition},
    moto::workspace_root,
    unique_name,
};
use serde_json::Value;

fn ec2_client(env: &Env) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&env.aws)
}

/// An AMI moto knows in the test region.
async fn ami(env: &Env) -> anyhow::Result<String> {
    kaws_e2e::fixtures::moto_ami(&env.aws).await
}

async fn security_group(env: &Env, name: &str) -> anyhow::Result<String> {
    let out = ec2_client(env)
        .create_security_group()
        .group_name(unique_name(name))
        .description("kaws e2e")
        .send()
        .await?;
    Ok(out.group_id().unwrap_or_default().to_string())
}

fn instance_yaml(name: &str, ami: &str, extra_spec: &str, annotations: &str) -> String {
    let mut yaml =
        format!("apiVersion: ec2.kaws.io/v1alpha1\nkind: Instance\nmetadata:\n  name: {name}\n");
    if !annotations.is_empty() {
        yaml.push_str("  annotations:\n");
        for line in annotations.lines() {
            yaml.push_str(&format!("    {line}\n"));
        }
    }
    yaml.push_str(&format!(
        "spec:\n  imageId: {ami}\n  instanceType: t3.micro\n"
    ));
    for line in extra_spec.lines() {
        yaml.push_str(&format!("  {line}\n"));
    }
    yaml
}

async fn wait_ready(env: &Env, name: &str) -> anyhow::Result<Value> {
    env.wait_for::<Instance>(
        name,
        Duration::from_secs(60),
        "Ready, Synced and current",
        |o| {
            condition(o, "Ready").is_some_and(|c| c["status"] == "True")
                && condition(o, "Synced").is_some_and(|c| c["status"] == "True")
                && o["status"]["observedGeneration"] == o["metadata"]["generation"]
        },
    )
    .await
}

fn instance_id(obj: &Value) -> String {
    obj["status"]["instanceId"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The instance as EC2 (moto) reports it.
async fn describe(env: &Env, id: &str) -> anyhow::Result<ec2::Instance> {
    let out = ec2_client(env)
        .describe_instances()
        .instance_ids(id)
        .send()
        .await?;
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .next()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("instance {id} not found"))
}

fn state_of(i: &ec2::Instance) -> String {
    i.state()
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_string())
        .unwrap_or_default()
}

fn tags_of(i: &ec2::Instance) -> BTreeMap<String, String> {
    i.tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
        .collect()
}

/// Every instance carrying `uid` in its `kaws.io/uid` tag, in any state.
async fn instances_with_uid(env: &Env, uid: &str) -> anyhow::Result<Vec<ec2::Instance>> {
    let out = ec2_client(env)
        .describe_instances()
        .filters(
            ec2::Filter::builder()
                .name("tag:kaws.io/uid")
                .values(uid)
                .build(),
        )
        .send()
        .await?;
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances().iter().cloned())
        .collect())
}

async fn ec2_calls(env: &Env, operation: &str) -> anyhow::Result<u64> {
    let op = format!("operation=\"{operation}\"");
    env.kaws
        .aws_calls(|l| l.contains("service=\"ec2\"") && l.contains(&op))
        .await
}

async fn ec2_write_calls(env: &Env) -> anyhow::Result<u64> {
    env.kaws
        .aws_calls(|l| l.contains("service=\"ec2\"") && !l.contains("operation=\"Describe"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_runs_with_secure_defaults_follows_desired_state_and_delete_waits_for_termination()
-> anyhow::Result<()> {
    let env = Env::start().await?;
    let ami = ami(&env).await?;
    env.apply_ok(&instance_yaml(
        "web",
        &ami,
        "userData: |\n    #!/bin/sh\n    echo hello\ntags: {team: web}",
        "",
    ));
    let obj = wait_ready(&env, "web").await?;
    let id = instance_id(&obj);
    assert!(id.starts_with("i-"), "status.instanceId: {obj}");
    assert_eq!(obj["status"]["state"], "running");
    assert!(obj["status"]["privateIpAddress"].is_string(), "{obj}");
    assert!(
        obj["status"]["arn"]
            .as_str()
            .is_some_and(|a| a.starts_with("arn:aws:ec2:eu-west-1:") && a.ends_with(&id)),
        "{obj}"
    );

    let i = describe(&env, &id).await?;
    let tags = tags_of(&i);
    assert_eq!(tags.get("team").map(String::as_str), Some("web"));
    assert!(
        tags.get("kaws.io/owner")
            .is_some_and(|o| o.ends_with(&format!("/{}/web", env.namespace))),
        "{tags:?}"
    );
    assert_eq!(
        i.metadata_options()
            .and_then(|m| m.http_tokens())
            .map(|t| t.as_str()),
        Some("required"),
        "IMDSv2 is required by default"
    );
    // The volumes carry the same tags as the instance.
    let volume = i
        .block_device_mappings()
        .iter()
        .find_map(|m| m.ebs().and_then(|e| e.volume_id()))
        .map(str::to_string)
        .expect("root volume");
    let vols = ec2_client(&env)
        .describe_volumes()
        .volume_ids(&volume)
        .send()
        .await?;
    let vol = vols.volumes().first().expect("volume");
    assert!(
        vol.tags()
            .iter()
            .any(|t| t.key() == Some("team") && t.value() == Some("web")),
        "volume tags: {:?}",
        vol.tags()
    );
    assert_eq!(
        vol.encrypted(),
        Some(true),
        "root volume encrypted by default"
    );

    // Printer columns and kubectl wait work.
    let table = env.kubectl_ok(&["get", "instances"]);
    assert!(table.contains(&id) && table.contains("t3.micro"), "{table}");
    env.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "instance/web",
        "--timeout=30s",
    ]);

    // Stop through the spec, then start again.
    env.kubectl_ok(&[
        "patch",
        "instance",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"desiredState":"stopped"}}"#,
    ]);
    let obj = env
        .wait_for::<Instance>("web", Duration::from_secs(60), "stopped and Ready", |o| {
            o["status"]["state"] == "stopped"
                && o["status"]["observedGeneration"] == o["metadata"]["generation"]
                && condition(o, "Ready").is_some_and(|c| c["status"] == "True")
        })
        .await?;
    assert_eq!(instance_id(&obj), id);
    assert_eq!(state_of(&describe(&env, &id).await?), "stopped");
    env.kubectl_ok(&[
        "patch",
        "instance",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"desiredState":"running"}}"#,
    ]);
    env.wait_for::<Instance>("web", Duration::from_secs(60), "running again", |o| {
        o["status"]["state"] == "running"
            && o["status"]["observedGeneration"] == o["metadata"]["generation"]
            && condition(o, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await?;
    assert_eq!(ec2_calls(&env, "StopInstances").await?, 1);
    assert_eq!(ec2_calls(&env, "StartInstances").await?, 1);

    // Delete: the finalizer stays until EC2 reports the instance terminated.
    env.kubectl_ok(&["delete", "instance", "web", "--wait=false"]);
    env.wait_gone_of::<Instance>("web", Duration::from_secs(60))
        .await?;
    assert_eq!(state_of(&describe(&env, &id).await?), "terminated");
    assert_eq!(ec2_calls(&env, "TerminateInstances").await?, 1);
    assert_eq!(ec2_calls(&env, "RunInstances").await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_change_stops_modifies_and_starts_while_security_groups_change_in_place()
-> anyhow::Result<()> {
    let env = Env::start().await?;
    let ami = ami(&env).await?;
    let sg1 = security_group(&env, "sg-a").await?;
    let sg2 = security_group(&env, "sg-b").await?;
    env.apply_ok(&instance_yaml(
        "app",
        &ami,
        &format!("securityGroupIds: [{sg1}]"),
        "",
    ));
    let id = instance_id(&wait_ready(&env, "app").await?);

    // Security groups change in place: no stop.
    env.apply_ok(&instance_yaml(
        "app",
        &ami,
        &format!("securityGroupIds: [{sg2}]"),
        "",
    ));
    wait_ready(&env, "app").await?;
    let groups: Vec<String> = describe(&env, &id)
        .await?
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id().map(str::to_string))
        .collect();
    assert_eq!(groups, vec![sg2.clone()]);
    assert_eq!(ec2_calls(&env, "StopInstances").await?, 0);

    // A type change on a running instance: stop, modify, start, one Event each.
    env.apply_ok(
        &instance_yaml(
            "app",
            &ami,
            &format!("securityGroupIds: [{sg2}]\ninstanceType: t3.large"),
            "",
        )
        .replace("  instanceType: t3.micro\n", ""),
    );
    let obj = env
        .wait_for::<Instance>("app", Duration::from_secs(60), "resized and running", |o| {
            o["status"]["instanceType"] == "t3.large"
                && o["status"]["state"] == "running"
                && o["status"]["observedGeneration"] == o["metadata"]["generation"]
                && condition(o, "Ready").is_some_and(|c| c["status"] == "True")
        })
        .await?;
    assert_eq!(instance_id(&obj), id, "resized in place, not replaced");
    let i = describe(&env, &id).await?;
    assert_eq!(i.instance_type().map(|t| t.as_str()), Some("t3.large"));
    assert_eq!(state_of(&i), "running");
    assert_eq!(ec2_calls(&env, "StopInstances").await?, 1);
    assert_eq!(ec2_calls(&env, "StartInstances").await?, 1);
    let notes: Vec<String> = env
        .event_reasons("app")
        .await?
        .into_iter()
        .filter(|(reason, _)| reason == "Updated")
        .map(|(_, note)| note)
        .collect();
    // One Event per reconcile that applied steps: moto shows each at once, so all three may be
    // told in one Event, in the order applied.
    let told = notes.join(" | ");
    let steps: Vec<usize> = ["stopping the instance", "instanceType", "starting"]
        .iter()
        .map(|step| {
            told.rfind(step)
                .unwrap_or_else(|| panic!("no Updated event for {step:?} in {notes:?}"))
        })
        .collect();
    assert!(
        steps.windows(2).all(|w| w[0] < w[1]),
        "stop, modify, start in order: {notes:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_outside_kubernetes_is_corrected_and_steady_state_only_reads() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        resync_period: "3s".into(),
        ..Default::default()
    })
    .await?;
    let ami = ami(&env).await?;
    env.apply_ok(&instance_yaml("drifty", &ami, "tags: {env: prod}", ""));
    let id = instance_id(&wait_ready(&env, "drifty").await?);

    // Steady state: a few resyncs, no write.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = ec2_write_calls(&env).await?;
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        ec2_write_calls(&env).await?,
        writes,
        "steady state makes no EC2 write"
    );

    let ec2 = ec2_client(&env);
    ec2.stop_instances().instance_ids(&id).send().await?;
    ec2.delete_tags()
        .resources(&id)
        .tags(ec2::Tag::builder().key("env").build())
        .send()
        .await?;
    let note = env.wait_event("drifty", "DriftCorrected").await?;
    assert!(
        note.contains("tags") || note.contains("desiredState"),
        "{note}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let i = describe(&env, &id).await?;
        if state_of(&i) == "running" && tags_of(&i).get("env").map(String::as_str) == Some("prod") {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "drift not corrected: {} {:?}",
            state_of(&i),
            tags_of(&i)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // A tag removed from the spec is removed from the instance (and its volumes).
    env.apply_ok(&instance_yaml("drifty", &ami, "tags: {}", ""));
    wait_ready(&env, "drifty").await?;
    let tags = tags_of(&describe(&env, &id).await?);
    assert!(!tags.contains_key("env"), "{tags:?}");
    assert!(tags.contains_key("kaws.io/owner"), "{tags:?}");
    assert_eq!(ec2_calls(&env, "DeleteTags").await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_terminated_outside_is_reported_and_replaced_only_with_opt_in()
-> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        resync_period: "2s".into(),
        ..Default::default()
    })
    .await?;
    let ami = ami(&env).await?;
    env.apply_ok(&instance_yaml("gone", &ami, "", ""));
    let obj = wait_ready(&env, "gone").await?;
    let id = instance_id(&obj);
    let uid = obj["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ec2 = ec2_client(&env);
    ec2.terminate_instances().instance_ids(&id).send().await?;

    let obj = env
        .wait_condition_of::<Instance>("gone", "Ready", "False", Some("Terminated"))
        .await?;
    assert_eq!(instance_id(&obj), id);
    env.wait_event("gone", "Terminated").await?;
    // Several resyncs later there is still no replacement.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(instances_with_uid(&env, &uid).await?.len(), 1);
    assert_eq!(ec2_calls(&env, "RunInstances").await?, 1);

    // Opting in replaces it once.
    env.apply_ok(&instance_yaml(
        "gone",
        &ami,
        "recreateOnTermination: true",
        "",
    ));
    let obj = env
        .wait_for::<Instance>("gone", Duration::from_secs(60), "a new instance", |o| {
            o["status"]["instanceId"] != id.as_str()
                && condition(o, "Ready").is_some_and(|c| c["status"] == "True")
        })
        .await?;
    let new_id = instance_id(&obj);
    assert_eq!(state_of(&describe(&env, &new_id).await?), "running");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let all = instances_with_uid(&env, &uid).await?;
    let live: Vec<_> = all.iter().filter(|i| state_of(i) != "terminated").collect();
    assert_eq!(live.len(), 1, "exactly one live instance: {all:?}");
    assert_eq!(ec2_calls(&env, "RunInstances").await?, 2);
    Ok(())
}

/// Tests that need the test API server's fault injection: `make test-cluster` skips this module
/// on an external cluster and counts its tests as skipped.
mod needs_fault_injection {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_after_run_instances_never_launches_a_second_instance() -> anyhow::Result<()> {
        let mut env = Env::start().await?;
        let faults = env.api_faults()?;
        let ami = ami(&env).await?;
        // Every status write of this object fails for a while: kaws launches the instance but cannot
        // record its id.
        faults.fail_next(
            &format!("/namespaces/{}/instances/crash/status", env.namespace),
            4,
            500,
            None,
        );
        env.apply_ok(&instance_yaml("crash", &ami, "", ""));
        let uid = loop {
            if let Some(obj) = env.api::<Instance>().get_opt("crash").await? {
                break obj.metadata.uid.unwrap_or_default();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while instances_with_uid(&env, &uid).await?.is_empty() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "kaws never launched the instance"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Kill kaws right after RunInstances, before it could write the id.
        std::process::Command::new("kill")
            .args(["-KILL", &env.kaws.pid().to_string()])
            .status()?;
        let restarted = env.start_kaws(&BTreeMap::new()).await?;
        env.kaws = restarted;
        let obj = wait_ready(&env, "crash").await?;
        let all = instances_with_uid(&env, &uid).await?;
        assert_eq!(all.len(), 1, "exactly one instance: {all:?}");
        assert_eq!(instance_id(&obj), all[0].instance_id().unwrap_or_default());
        assert_eq!(
            ec2_calls(&env, "RunInstances").await?,
            0,
            "the restarted kaws found the instance instead of launching another"
        );
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_instances_are_adopted_by_id_only_when_asked_and_never_taken_from_others()
-> anyhow::Result<()> {
    let env = Env::start().await?;
    let ami = ami(&env).await?;
    let ec2 = ec2_client(&env);
    let run = ec2
        .run_instances()
        .image_id(&ami)
        .instance_type(ec2::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .send()
        .await?;
    let legacy = run.instances()[0]
        .instance_id()
        .unwrap_or_default()
        .to_string();

    // Without kaws.io/adopt: AlreadyExists, nothing changed.
    env.apply_ok(&instance_yaml(
        "legacy",
        &ami,
        "tags: {owner: platform}",
        &format!("ec2.kaws.io/instance-id: {legacy}"),
    ));
    env.wait_condition_of::<Instance>("legacy", "Ready", "False", Some("AlreadyExists"))
        .await?;
    assert!(!tags_of(&describe(&env, &legacy).await?).contains_key("kaws.io/owner"));

    env.kubectl_ok(&["annotate", "instance", "legacy", "kaws.io/adopt=true"]);
    let obj = wait_ready(&env, "legacy").await?;
    assert_eq!(instance_id(&obj), legacy);
    let tags = tags_of(&describe(&env, &legacy).await?);
    assert_eq!(tags.get("owner").map(String::as_str), Some("platform"));
    assert!(tags.contains_key("kaws.io/owner"), "{tags:?}");
    assert!(
        env.event_reasons("legacy")
            .await?
            .iter()
            .any(|(r, _)| r == "Adopted")
    );

    // A second object may not take it, even with the adopt annotation.
    env.apply_ok(&instance_yaml(
        "thief",
        &ami,
        "",
        &format!("ec2.kaws.io/instance-id: {legacy}\nkaws.io/adopt: \"true\""),
    ));
    env.wait_condition_of::<Instance>("thief", "Ready", "False", Some("OwnedByOther"))
        .await?;
    env.kubectl_ok(&["delete", "instance", "thief"]);
    assert_eq!(state_of(&describe(&env, &legacy).await?), "running");

    // ObserveOnly reads any instance into status, changes nothing and deletes nothing.
    let writes = ec2_write_calls(&env).await?;
    env.apply_ok(&instance_yaml(
        "watcher",
        &ami,
        "managementPolicy: ObserveOnly
desiredState: stopped
monitoring: true",
        &format!("ec2.kaws.io/instance-id: {legacy}"),
    ));
    let obj = env
        .wait_condition_of::<Instance>("watcher", "Synced", "True", Some("Observed"))
        .await?;
    assert_eq!(instance_id(&obj), legacy);
    assert_eq!(obj["status"]["state"], "running");
    env.kubectl_ok(&["delete", "instance", "watcher"]);
    env.wait_gone_of::<Instance>("watcher", Duration::from_secs(30))
        .await?;
    assert_eq!(state_of(&describe(&env, &legacy).await?), "running");
    assert_eq!(
        ec2_write_calls(&env).await?,
        writes,
        "ObserveOnly never writes"
    );

    // Retain: the object goes, the instance stays.
    env.kubectl_ok(&[
        "patch",
        "instance",
        "legacy",
        "--type=merge",
        "-p",
        r#"{"spec":{"deletionPolicy":"Retain"}}"#,
    ]);
    wait_ready(&env, "legacy").await?;
    env.kubectl_ok(&["delete", "instance", "legacy"]);
    env.wait_gone_of::<Instance>("legacy", Duration::from_secs(30))
        .await?;
    assert_eq!(state_of(&describe(&env, &legacy).await?), "running");
    assert_eq!(ec2_calls(&env, "TerminateInstances").await?, 0);
    assert_eq!(ec2_calls(&env, "RunInstances").await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn termination_protection_blocks_delete_until_turned_off() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let ami = ami(&env).await?;
    env.apply_ok(&instance_yaml(
        "guarded",
        &ami,
        "disableApiTermination: true",
        "",
    ));
    let id = instance_id(&wait_ready(&env, "guarded").await?);
    env.kubectl_ok(&["delete", "instance", "guarded", "--wait=false"]);
    env.wait_condition_of::<Instance>("guarded", "Synced", "False", Some("TerminationProtected"))
        .await?;
    assert_eq!(state_of(&describe(&env, &id).await?), "running");
    env.kubectl_ok(&[
        "patch",
        "instance",
        "guarded",
        "--type=merge",
        "-p",
        r#"{"spec":{"disableApiTermination":false}}"#,
    ]);
    env.wait_gone_of::<Instance>("guarded", Duration::from_secs(60))
        .await?;
    assert_eq!(state_of(&describe(&env, &id).await?), "terminated");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_data_is_immutable_unless_replacement_is_allowed() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let ami = ami(&env).await?;
    env.apply_ok(&instance_yaml("boot", &ami, "userData: v1", ""));
    let obj = wait_ready(&env, "boot").await?;
    let first = instance_id(&obj);
    let uid = obj["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // The API server refuses the edit.
    let out = env.apply(&instance_yaml("boot", &ami, "userData: v2", ""));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("replaceOnUserDataChange"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // With the opt-in, the instance is replaced by one running the new user data.
    env.apply_ok(&instance_yaml(
        "boot",
        &ami,
        "userData: v2\nreplaceOnUserDataChange: true",
        "",
    ));
    let obj = env
        .wait_for::<Instance>("boot", Duration::from_secs(60), "replaced", |o| {
            o["status"]["instanceId"] != first.as_str()
                && o["status"]["observedGeneration"] == o["metadata"]["generation"]
                && condition(o, "Ready").is_some_and(|c| c["status"] == "True")
        })
        .await?;
    let second = instance_id(&obj);
    assert_eq!(state_of(&describe(&env, &first).await?), "terminated");
    let attr = ec2_client(&env)
        .describe_instance_attribute()
        .instance_id(&second)
        .attribute(ec2::InstanceAttributeName::UserData)
        .send()
        .await?;
    let data = attr
        .user_data()
        .and_then(|v| v.value())
        .unwrap_or_default()
        .to_string();
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&data)
        .map(|b| String::from_utf8_lossy(&b).to_string())
        .unwrap_or(data);
    assert_eq!(decoded, "v2");
    let live = instances_with_uid(&env, &uid)
        .await?
        .into_iter()
        .filter(|i| state_of(i) != "terminated")
        .count();
    assert_eq!(live, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_refused_or_terminal_without_launching() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let ami = ami(&env).await?;
    // Refused by the CRD schema before kaws sees it.
    let out = env.apply(&instance_yaml("bad-ami", "ami-XYZ", "", ""));
    assert!(!out.status.success(), "imageId pattern");
    let out = env.apply(&instance_yaml(
        "bad-sg",
        &ami,
        "securityGroupIds: [default]",
        "",
    ));
    assert!(!out.status.success(), "security group pattern");

    // Well-formed but unknown to EC2: terminal, no launch, no hot loop.
    env.apply_ok(&instance_yaml("no-type", &ami, "", "").replace("t3.micro", "t3.gigantic"));
    let obj = env
        .wait_condition_of::<Instance>("no-type", "Ready", "False", Some("InvalidSpec"))
        .await?;
    let message = condition(&obj, "Ready")
        .map(|c| c["message"].to_string())
        .unwrap_or_default();
    assert!(message.contains("t3.gigantic"), "{message}");
    env.apply_ok(&instance_yaml("no-ami", "ami-0000000000000000a", "", ""));
    env.wait_condition_of::<Instance>("no-ami", "Ready", "False", Some("InvalidSpec"))
        .await?;
    // An unknown type on a running instance is refused before the instance is stopped.
    env.apply_ok(&instance_yaml("running", &ami, "", ""));
    let id = instance_id(&wait_ready(&env, "running").await?);
    env.apply_ok(&instance_yaml("running", &ami, "", "").replace("t3.micro", "t3.gigantic"));
    env.wait_condition_of::<Instance>("running", "Synced", "False", Some("InvalidSpec"))
        .await?;
    assert_eq!(state_of(&describe(&env, &id).await?), "running");
    assert_eq!(ec2_calls(&env, "StopInstances").await?, 0);

    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = env.kaws.reconciles("Instance").await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        env.kaws.reconciles("Instance").await? <= before + 1,
        "terminal errors do not loop"
    );
    assert_eq!(
        ec2_calls(&env, "RunInstances").await?,
        1,
        "only the valid one"
    );
    Ok(())
}

/// The headline property: at a steady state one `DescribeInstances` serves every object, so the
/// number of calls follows the clock, not the number of objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_instances_resync_with_a_number_of_describe_calls_independent_of_their_count()
-> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        resync_period: "8s".into(),
        ..Default::default()
    })
    .await?;
    let ami = ami(&env).await?;
    let count = 50;
    let manifest: String = (0..count)
        .map(|n| {
            format!(
                "---\n{}",
                instance_yaml(&format!("fleet-{n}"), &ami, "", "")
            )
        })
        .collect();
    env.apply_ok(&manifest);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let list = env.api::<Instance>().list(&Default::default()).await?;
        let ready = list
            .items
            .iter()
            .filter(|i| {
                i.status.as_ref().is_some_and(|s| {
                    s.common.observed_generation == i.metadata.generation
                        && s.common
                            .conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count();
        if ready == count {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "only {ready}/{count} Ready");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Let the objects settle into steady state, then measure one window.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let window = Duration::from_secs(24);
    let reconciles = env.kaws.reconciles("Instance").await?;
    let describes = ec2_calls(&env, "DescribeInstances").await?;
    let attributes = ec2_calls(&env, "DescribeInstanceAttribute").await?;
    let writes = ec2_write_calls(&env).await?;
    tokio::time::sleep(window).await;
    let reconciles = env.kaws.reconciles("Instance").await? - reconciles;
    let describes = ec2_calls(&env, "DescribeInstances").await? - describes;
    let attributes = ec2_calls(&env, "DescribeInstanceAttribute").await? - attributes;
    let writes = ec2_write_calls(&env).await? - writes;
    let rss = std::fs::read_to_string(format!("/proc/{}/status", env.kaws.pid()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.trim_start_matches("VmRSS:").trim().to_string())
        })
        .unwrap_or_default();
    println!(
        "{count} instances, resync 8s, {window:?} window: {reconciles} reconciles, {describes} DescribeInstances, {attributes} DescribeInstanceAttribute, {writes} writes; kaws RSS {rss}"
    );
    assert!(
        reconciles >= 2 * count as u64,
        "every object resynced at least twice: {reconciles}"
    );
    // One snapshot lives a quarter of the resync period (2s): at most one call per 2s window.
    let bound = window.as_secs() / 2 + 2;
    assert!(
        describes <= bound,
        "{describes} DescribeInstances for {reconciles} reconciles (bound {bound})"
    );
    assert_eq!(
        attributes, 0,
        "steady state reads no per-instance attribute"
    );
    assert_eq!(writes, 0, "steady state writes nothing");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_instance_becomes_ready() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let ami = ami(&env).await?;
    let example = std::fs::read_to_string(workspace_root().join("examples/instance.yaml"))?;
    // The example names a real Amazon Linux AMI; moto knows other ids.
    let manifest: String = example
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("imageId:") {
                format!("  imageId: {ami}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    env.apply_ok(&manifest);
    env.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "instance/bastion",
        "--timeout=60s",
    ]);
    let all = env.kubectl_ok(&["get", "aws"]);
    assert!(all.contains("bastion"), "{all}");
    Ok(())
}

async fn instance_profile(env: &Env, name: &str) -> anyhow::Result<String> {
    let iam = aws_sdk_iam::Client::new(&env.aws);
    let name = unique_name(name);
    iam.create_instance_profile()
        .instance_profile_name(&name)
        .send()
        .await?;
    Ok(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_metadata_options_and_instance_profile_change_in_place() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let ami = ami(&env).await?;
    let first = instance_profile(&env, "profile-a").await?;
    let second = instance_profile(&env, "profile-b").await?;
    env.apply_ok(&instance_yaml("tuned", &ami, "", ""));
    let id = instance_id(&wait_ready(&env, "tuned").await?);

    // Monitoring on, IMDS tags on, hop limit 1, a profile: all without stopping.
    env.apply_ok(&instance_yaml(
        "tuned",
        &ami,
        &format!(
            "monitoring: true\nmetadataOptions: {{httpPutResponseHopLimit: 1, instanceMetadataTags: enabled}}\niamInstanceProfile: {{name: {first}}}"
        ),
        "",
    ));
    wait_ready(&env, "tuned").await?;
    let i = describe(&env, &id).await?;
    assert_eq!(
        i.monitoring().and_then(|m| m.state()).map(|s| s.as_str()),
        Some("enabled")
    );
    let m = i.metadata_options().expect("metadata options");
    assert_eq!(m.http_put_response_hop_limit(), Some(1));
    assert_eq!(m.http_tokens().map(|t| t.as_str()), Some("required"));
    assert!(
        i.iam_instance_profile()
            .and_then(|p| p.arn())
            .is_some_and(|a| a.ends_with(&first)),
        "{:?}",
        i.iam_instance_profile()
    );

    // Another profile replaces the association; monitoring off.
    env.apply_ok(&instance_yaml(
        "tuned",
        &ami,
        &format!(
            "metadataOptions: {{httpPutResponseHopLimit: 1, instanceMetadataTags: enabled}}\niamInstanceProfile: {{name: {second}}}"
        ),
        "",
    ));
    wait_ready(&env, "tuned").await?;
    let i = describe(&env, &id).await?;
    assert_eq!(
        i.monitoring().and_then(|m| m.state()).map(|s| s.as_str()),
        Some("disabled")
    );
    assert!(
        i.iam_instance_profile()
            .and_then(|p| p.arn())
            .is_some_and(|a| a.ends_with(&second))
    );
    assert_eq!(ec2_calls(&env, "StopInstances").await?, 0, "all in place");

    // No profile: the association goes. EBS optimisation needs a stop and a start.
    env.apply_ok(&instance_yaml(
        "tuned",
        &ami,
        "metadataOptions: {httpPutResponseHopLimit: 1, instanceMetadataTags: enabled}\nebsOptimized: true",
        "",
    ));
    env.wait_for::<Instance>(
        "tuned",
        Duration::from_secs(60),
        "optimised and running",
        |o| {
            o["status"]["state"] == "running"
                && o["status"]["observedGeneration"] == o["metadata"]["generation"]
                && condition(o, "Ready").is_some_and(|c| c["status"] == "True")
        },
    )
    .await?;
    let i = describe(&env, &id).await?;
    assert!(
        i.iam_instance_profile().is_none(),
        "{:?}",
        i.iam_instance_profile()
    );
    assert_eq!(i.ebs_optimized(), Some(true));
    assert_eq!(ec2_calls(&env, "StopInstances").await?, 1);
    assert_eq!(ec2_calls(&env, "StartInstances").await?, 1);
    for op in [
        "MonitorInstances",
        "UnmonitorInstances",
        "ModifyInstanceMetadataOptions",
        "AssociateIamInstanceProfile",
        "ReplaceIamInstanceProfileAssociation",
        "DisassociateIamInstanceProfile",
    ] {
        assert_eq!(ec2_calls(&env, op).await?, 1, "{op}");
    }
    Ok(())
}
