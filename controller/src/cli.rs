//! Command-line interface: every flag also reads an environment variable.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum, builder::PossibleValuesParser};

use crate::core::api::DeletionPolicy;

#[derive(Debug, Parser)]
#[command(
    name = "kaws",
    version,
    about = "Kubernetes controller for AWS resources"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller.
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML.
    Crds(CrdsArgs),
    /// Print what the Helm chart needs to know about each kind (charts/kaws/files/kinds.yaml).
    Kinds,
}

/// `--kinds`: one of the registry's kind names (`resources::KINDS`), e.g. `dbinstance`.
fn kind_name() -> PossibleValuesParser {
    PossibleValuesParser::new(crate::resources::kind_names())
}

/// `--resync-period`: a humantime duration within 1 s and 30 days.
fn resync_period(value: &str) -> Result<std::time::Duration, String> {
    use crate::core::backoff::{MAX_RESYNC_PERIOD, MIN_RESYNC_PERIOD};
    let d = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if (MIN_RESYNC_PERIOD..=MAX_RESYNC_PERIOD).contains(&d) {
        Ok(d)
    } else {
        Err(format!(
            "{value} is outside 1s..30days: a shorter period would keep every object resyncing, a longer one is not a drift check"
        ))
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeletionPolicyArg {
    Delete,
    Retain,
}

impl From<DeletionPolicyArg> for DeletionPolicy {
    fn from(p: DeletionPolicyArg) -> Self {
        match p {
            DeletionPolicyArg::Delete => DeletionPolicy::Delete,
            DeletionPolicyArg::Retain => DeletionPolicy::Retain,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Kubeconfig file; absent: in-cluster config, then $KUBECONFIG, then ~/.kube/config.
    #[arg(long, env = "KAWS_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Default AWS region for objects that name none; absent: the SDK's chain (AWS_REGION,
    /// profile, IMDS).
    #[arg(long, env = "KAWS_AWS_REGION")]
    pub aws_region: Option<String>,

    /// Custom AWS endpoint (AWS-compatible services, VPC endpoints, moto in tests).
    #[arg(long, env = "KAWS_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,

    /// Kinds to run, comma-separated. Default: all.
    #[arg(long, env = "KAWS_KINDS", value_delimiter = ',', value_parser = kind_name())]
    pub kinds: Vec<String>,

    /// Namespaces to watch, comma-separated. Empty: all namespaces.
    #[arg(long, env = "KAWS_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,

    /// How often each object is checked for drift (jittered by ±10%, then due on ticks of 2% of it,
    /// at most 10 s, so that resyncs run together). Per-object override:
    /// the annotation kaws.io/resync-period.
    #[arg(long, env = "KAWS_RESYNC_PERIOD", default_value = "10m", value_parser = resync_period)]
    pub resync_period: Duration,

    /// Every how many resyncs a steady object reads in full what changes rarely and no cheap
    /// read returns (a Bucket's settings, a Table's tags, TTL and backups, a Function's tags,
    /// reserved concurrency and image); in between it is taken from the last full read, and
    /// drift there is corrected within that many resync periods. 1: everything at every resync.
    #[arg(long, env = "KAWS_FULL_READ_EVERY", default_value_t = crate::core::batch::DETAILS_EVERY,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub full_read_every: u32,

    /// Deletion policy for objects that set none.
    #[arg(
        long,
        env = "KAWS_DEFAULT_DELETION_POLICY",
        value_enum,
        default_value = "delete"
    )]
    pub default_deletion_policy: DeletionPolicyArg,

    /// Cluster identity written into the kaws.io/owner tag. Default: the UID of the
    /// kube-system namespace.
    #[arg(long, env = "KAWS_CLUSTER_ID")]
    pub cluster_id: Option<String>,

    /// Only objects whose labels match this selector (e.g. `kaws.io/shard=a`): several kaws
    /// Deployments, each with its own selector and leader-election Lease, split the objects of
    /// one cluster between them. Empty: every object.
    #[arg(long, env = "KAWS_LABEL_SELECTOR")]
    pub label_selector: Option<String>,

    /// Objects of one kind reconciled at the same time, over all watched namespaces together.
    #[arg(long, env = "KAWS_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// Log format.
    #[arg(long, env = "KAWS_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "KAWS_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Instance name reported on Events (e.g. the pod name).
    #[arg(long, env = "KAWS_INSTANCE")]
    pub instance: Option<String>,

    /// Only the holder of a coordination.k8s.io Lease reconciles; needed for more than one
    /// replica. The others wait as standbys (serving /healthz, /readyz and /metrics).
    #[arg(long, env = "KAWS_LEADER_ELECTION", default_value_t = false)]
    pub leader_election: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "KAWS_LEADER_ELECTION_LEASE_NAME", default_value = "kaws")]
    pub leader_election_lease_name: String,

    /// Namespace of the leader-election Lease. Default: the pod's namespace in a cluster
    /// (the service account's), else the kubeconfig context's namespace.
    #[arg(long, env = "KAWS_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// How long the Lease stays valid without renewal: the longest a standby waits after the
    /// leader died. Whole seconds, at least 2s; renewed a third of it before expiry.
    #[arg(long, env = "KAWS_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub leader_election_lease_duration: Duration,

    /// IAM kinds: kaws creates and changes roles, policies and instance profiles only under this
    /// path (the shipped IAM policy grants no more); a spec naming a path outside is refused.
    #[arg(long, env = "KAWS_IAM_PATH_PREFIX", default_value = crate::iam::DEFAULT_PATH_PREFIX)]
    pub iam_path_prefix: String,

    /// IAM kinds: ARN of the managed policy kaws sets as permissions boundary on every role it
    /// creates (the shipped IAM policy lets kaws create roles only with it); a Role naming
    /// another boundary is refused.
    #[arg(long, env = "KAWS_IAM_PERMISSIONS_BOUNDARY")]
    pub iam_permissions_boundary: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct CrdsArgs {
    /// Kinds to print, comma-separated. Default: all.
    #[arg(long, value_delimiter = ',', value_parser = kind_name())]
    pub kinds: Vec<String>,
    /// Write one `<crd-name>.yaml` file per CRD into this directory instead of printing.
    #[arg(long)]
    pub out_dir: Option<std::path::PathBuf>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    #[test]
    fn the_resync_period_flag_is_bounded() {
        let parse = |v: &str| Cli::try_parse_from(["kaws", "run", "--resync-period", v]);
        assert!(parse("10m").is_ok());
        for bad in ["0s", "500ms", "31days", "soon"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn full_reads_are_due_every_1_to_1000_resyncs() {
        let parse = |v: &str| Cli::try_parse_from(["kaws", "run", "--full-read-every", v]);
        assert!(parse("1").is_ok());
        assert!(parse("1000").is_ok());
        for bad in ["0", "1001", "-1", "often"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
