//! The `keyward` command line: the operator, its CRDs and the hand tools.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use keyward::controller::{self, JobOptions, Policy, RunOptions};
use keyward::crypto::{KeyMaterial, Keyring, Verdict};
use keyward::leader::{Election, RoleCell};
use keyward::metrics::Metrics;
use keyward::telemetry::{self, LogFormat};
use keyward::tools;
use keyward::{http, reencrypt};

/// keyward keeps an API-management platform's secrets safe on Kubernetes: OAuth client
/// secrets stored only as hashes, one AES-256-GCM key shared by every API-manager pod,
/// and key rotation run as a rolling, resumable re-encryption.
///
/// Exit codes: 0 success (for `verify`: the secret is valid), 1 the secret is invalid,
/// 2 an error, 3 (`reencrypt`) some values do not decrypt.
#[derive(Parser, Debug)]
#[command(name = "keyward", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator: reconcile OAuthClients and EncryptionKeys until SIGTERM.
    ///
    /// Uses the in-cluster service account, or the kubeconfig named by $KUBECONFIG
    /// (default ~/.kube/config) outside a cluster.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML (`keyward crds | kubectl apply -f -`).
    Crds,
    /// Hash a secret read from standard input and print the hex digest.
    Hash {
        /// SHA-256, SHA-384, SHA-512, or the legacy SHA-1 or MD5.
        #[arg(long, default_value = "SHA-256")]
        algorithm: String,
    },
    /// Check a secret read from standard input against a verifier record.
    ///
    /// The record is an OAuthClient's verifier Secret, from the cluster (--secret) or
    /// from a file written by `kubectl get secret NAME -o yaml` (--file), or a hashed
    /// secret as WSO2 API Manager stores it (--wso2-record). The previous secret is
    /// accepted while its grace period lasts. A verifier Secret's `wso2HashedSecret`, when
    /// present, must agree with its hash, or the record is refused. Exits 0 when valid, 1
    /// when not.
    Verify {
        /// Name of the verifier Secret in the cluster.
        #[arg(
            long,
            conflicts_with_all = ["file", "wso2_record"],
            required_unless_present_any = ["file", "wso2_record"]
        )]
        secret: Option<String>,
        /// Namespace of --secret (default: the kubeconfig's namespace).
        #[arg(long, short = 'n', requires = "secret")]
        namespace: Option<String>,
        /// A Secret manifest file holding the verifier record.
        #[arg(long, conflicts_with = "wso2_record")]
        file: Option<PathBuf>,
        /// A file holding a hashed client secret as WSO2 API Manager stores it,
        /// `{"hash":"<hex>","algorithm":"SHA-256"}`, byte for byte (one trailing newline
        /// allowed): the text of WSO2's database column or of a verifier Secret's
        /// `wso2HashedSecret`.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["keyring", "kek"])]
        wso2_record: Option<PathBuf>,
        /// Keyring file, for an encrypted record read with --file (with --secret the
        /// EncryptionKey's keyring is read from the cluster).
        #[arg(long, requires = "file")]
        keyring: Option<PathBuf>,
        /// Key-encryption key file, when that keyring is wrapped.
        #[arg(long, requires = "keyring")]
        kek: Option<PathBuf>,
    },
    /// Generate a 256-bit key from the operating system's CSPRNG and print it.
    Genkey {
        /// Output form.
        #[arg(long, value_enum, default_value_t = KeyOutput::Hex)]
        output: KeyOutput,
        /// Keyring name (the EncryptionKey's name), for --output keyring.
        #[arg(long, required_if_eq("output", "keyring"))]
        name: Option<String>,
    },
    /// Encrypt a value read from standard input; print the envelope.
    Encrypt(CipherArgs),
    /// Decrypt an envelope read from standard input; print the value.
    Decrypt(CipherArgs),
    /// Re-encrypt a key's ciphertext under older versions to its primary (the rotation Job).
    ///
    /// Lists the Secrets matching --selector in the key's namespace, --batch-size at a
    /// time. Every value that is an envelope of the key under a version other than the
    /// primary is decrypted (bound to its namespace, Secret and field, as `keyward
    /// encrypt --context` and encrypted OAuthClients seal it), encrypted again under the
    /// primary for the same place, and written back only if its Secret has not changed
    /// since it was read; on a conflict the Secret is read again and decided again, so a
    /// concurrent writer's value is never overwritten. Secrets with nothing to rewrite
    /// are not written at all. Running it again is always safe: values already under the
    /// primary are skipped, which is all a restarted Job needs.
    ///
    /// Prints `re-encrypted D of T values to version V (F failed, W writes)`. Values
    /// that cannot be rewritten are named NAMESPACE/NAME/FIELD in the log and in the
    /// --progress ConfigMap; no value, encrypted or not, is ever shown.
    ///
    /// Uses the in-cluster service account, or the kubeconfig named by $KUBECONFIG. It
    /// needs to read the EncryptionKey and its keyring (and key-encryption key), list,
    /// get and update the selected Secrets, and patch the --progress ConfigMap.
    ///
    /// Exit codes: 0 every value found is now under the primary version; 3 some values
    /// do not decrypt (altered, copied from another Secret or field, or under a version
    /// the keyring no longer holds): retrying will not help, restore the value or the
    /// key version; 2 any other error, including Secrets that kept changing under the
    /// run: retrying helps.
    Reencrypt(ReencryptArgs),
    /// Count a key's ciphertexts per key version (the rotation's verification scan).
    ///
    /// What proves an old version is no longer needed in the Secrets a rotation
    /// re-encrypts. Counts the envelopes of the key in every value of the Secrets matching --selector
    /// in the key's namespace, without decrypting anything. Every version the
    /// EncryptionKey's status lists is shown, with 0 when nothing is under it. Prints
    /// `version N: COUNT` lines, or with `-o json` an object such as
    /// {"versions": {"1": 0, "2": 1000}}. Ciphertext outside those Secrets (git,
    /// backups) is not seen; `keyward scan database` counts a WSO2 database's.
    ///
    /// Uses the in-cluster service account, or the kubeconfig named by $KUBECONFIG.
    Scan(ScanArgs),
    /// Show the state of an EncryptionKey or an OAuthClient, as the operator reports it.
    ///
    /// For an EncryptionKey: Ready and why; the key versions with their state, age and
    /// non-secret fingerprint, and the primary; how many ready pods hold the current
    /// keyring; the current or last rotation (phase, target and previous version, trigger,
    /// attempt, time in the phase, what it waits on, re-encryption progress done / total
    /// / failed, the last failure); the ciphertexts per version the last scan found (and,
    /// for a key with databases, the values without key id); the next rotation
    /// spec.rotation.period schedules; the conditions and the newest Events.
    ///
    /// For an OAuthClient: Ready and why; the client id, secret type, secret version,
    /// hash algorithm and issue time; the grace period (until when the previous secret
    /// still verifies, and how long is left); the delivery Secret (and whether it was
    /// deleted after its TTL), the verifier Secret, the import source; the conditions and
    /// the newest Events.
    ///
    /// Reads only the resource and the Events about it, never a Secret: it needs `get`
    /// on the resource (and `list` on Events, which are left out without it). No client
    /// secret or key material is ever shown.
    ///
    /// Uses the kubeconfig named by $KUBECONFIG (default ~/.kube/config), or the
    /// in-cluster service account. Exits 0 when the report is shown, whatever the
    /// resource's state; 2 when it cannot be (not found, forbidden, CRDs not installed).
    #[command(after_long_help = "Examples:
  keyward status ek apim -n wso2                  a key: versions, rotation, pods in sync
  keyward status oauthclient developer-portal     a client, in the kubeconfig's namespace
  keyward status ek apim -n wso2 -o json | jq .rotation.waitingOn")]
    Status(StatusArgs),
}

/// `keyward status KIND NAME`.
#[derive(Args, Debug)]
struct StatusArgs {
    /// The kind: encryptionkey (or encryptionkeys, ek) or oauthclient (or oauthclients,
    /// oac), in any case.
    #[arg(value_enum, ignore_case = true)]
    kind: keyward::status_report::Kind,
    /// The name of the resource.
    name: String,
    /// The namespace of the resource [default: the kubeconfig context's namespace].
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = StatusOutput::Text)]
    output: StatusOutput,
}

/// What `keyward status` prints.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum StatusOutput {
    /// A summary for a person, on one screen.
    Text,
    /// The same summary as one JSON object, whose shape is documented in the README
    /// (`reportVersion` 1; fields are only ever added).
    Json,
}

/// An EncryptionKey named on the command line as NAMESPACE/NAME.
#[derive(Clone, Debug)]
struct KeyRef {
    namespace: String,
    name: String,
}

fn parse_key_ref(text: &str) -> Result<KeyRef, String> {
    match text.split_once('/') {
        Some((namespace, name))
            if keyward::crypto::keyring::valid_key_name(namespace)
                && keyward::crypto::keyring::valid_key_name(name) =>
        {
            Ok(KeyRef {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
        }
        _ => Err("expected NAMESPACE/NAME, two Kubernetes object names".to_owned()),
    }
}

#[derive(Args, Debug)]
struct ReencryptArgs {
    /// The EncryptionKey whose ciphertext to re-encrypt; the Secrets are read in its
    /// namespace.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_key_ref)]
    key: KeyRef,
    /// Label selector of the Secrets holding the key's ciphertext [default:
    /// keyward.io/encryption-key=NAME].
    #[arg(long)]
    selector: Option<String>,
    /// Secrets listed, and rewritten, per page.
    #[arg(long, value_name = "N", default_value_t = reencrypt::DEFAULT_BATCH_SIZE,
          value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    /// Upper bound on Secret writes per second, over any stretch of the run (after an
    /// idle second, at most one second's worth go at once).
    #[arg(long, value_name = "N", default_value_t = reencrypt::DEFAULT_WRITES_PER_SECOND,
          value_parser = clap::value_parser!(u32).range(1..))]
    writes_per_second: u32,
    /// ConfigMap in the key's namespace that receives progress after every page (created
    /// when absent): targetVersion, total, done, failed, contended, failures (at most
    /// 100 NAMESPACE/NAME/FIELD lines), writes, elapsedSeconds, and finished.
    #[arg(long, value_name = "CONFIGMAP")]
    progress: Option<String>,
    /// Only give database values without a key id (WSO2's older rows) one, under the
    /// primary version: the first step of a rotation for a key with databases. Secrets
    /// always name their version and are left alone.
    #[arg(long)]
    backfill: bool,
    /// Log line format (logs go to standard error).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "KEYWARD_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct ScanArgs {
    #[command(subcommand)]
    target: Option<ScanTarget>,
    /// The EncryptionKey whose ciphertext to count; the Secrets are read in its
    /// namespace.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_key_ref, required = true)]
    key: Option<KeyRef>,
    /// Label selector of the Secrets holding the key's ciphertext [default:
    /// keyward.io/encryption-key=NAME].
    #[arg(long)]
    selector: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = ScanOutput::Text)]
    output: ScanOutput,
}

#[derive(Subcommand, Debug)]
enum ScanTarget {
    /// Count the WSO2 ciphertext in a database's columns, without any key (the census).
    ///
    /// Reads every row of the columns (WSO2's known encrypted columns, or those of
    /// --columns-file) a page at a time in key order, and counts per column: values
    /// under each WSO2 key id, AES-GCM values without a key id (to backfill before a
    /// rotation is staged), legacy AES/ECB values (to backfill before it is promoted),
    /// RSA values, values that are not WSO2 ciphertext, and NULL or empty cells. Nothing
    /// is decrypted or written; no value is shown.
    ///
    /// Prints one line per column, or with `-o json` an object {"database", "columns":
    /// [{"column", "byKeyId", "withoutKeyId", "legacyEcb", "rsa", "emptyPlaintext",
    /// "notCiphertext", "absent"}], "skipped"}. A key id is the Base64 SHA-256 of a key:
    /// `keyward scan database` never needs the key itself.
    Database(ScanDatabaseArgs),
}

#[derive(Args, Debug)]
struct ScanDatabaseArgs {
    /// The database engine.
    #[arg(long, value_enum)]
    engine: EngineArg,
    /// A file holding the connection URL, postgres://USER:PASSWORD@HOST:PORT/DB or
    /// mysql://…, with TLS options as URL parameters. Read from a file so the password
    /// never shows in the process list; it is never printed.
    #[arg(long, value_name = "FILE")]
    url_file: PathBuf,
    /// A YAML list of columns, as an EncryptionKey's
    /// `spec.reencryption.databases[].columns` (table, column, keyColumns, where,
    /// jsonPath) [default: WSO2's known encrypted columns; tables the database lacks are
    /// skipped].
    #[arg(long, value_name = "FILE")]
    columns_file: Option<PathBuf>,
    /// The database's name in the output.
    #[arg(long, default_value = "database")]
    name: String,
    /// Rows read per page.
    #[arg(long, value_name = "N", default_value_t = keyward::database::DEFAULT_PAGE_SIZE,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    page_size: u32,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = ScanOutput::Text)]
    output: ScanOutput,
}

/// A database engine on the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum EngineArg {
    /// PostgreSQL.
    Postgresql,
    /// MySQL or MariaDB.
    Mysql,
}

/// What `keyward scan` prints.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ScanOutput {
    /// `version N: COUNT` lines, by version (for a database: a line per column).
    Text,
    /// {"versions": {"N": COUNT, …}} (for a database: its census as JSON).
    Json,
}

/// What `keyward genkey` prints.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum KeyOutput {
    /// 64 hex characters, for an EncryptionKey's spec.source Secret.
    Hex,
    /// Base64 of the 32 bytes.
    Base64,
    /// A keyring file with the key as its primary version 1 (needs --name).
    Keyring,
}

/// Where the cipher tool's keyring comes from and where the value lives.
#[derive(Args, Debug)]
struct CipherArgs {
    /// Keyring file (JSON, as `keyward genkey --output keyring` writes it).
    #[arg(long, conflicts_with = "key", required_unless_present = "key")]
    keyring: Option<PathBuf>,
    /// Key-encryption key file (hex or base64), when the keyring file is wrapped.
    #[arg(long, requires = "keyring")]
    kek: Option<PathBuf>,
    /// Use the keyring of this EncryptionKey in the cluster, in the context's namespace
    /// (read through $KUBECONFIG, unwrapped with its key-encryption key).
    #[arg(long)]
    key: Option<String>,
    /// Where the value lives, NAMESPACE/NAME/FIELD; it is bound into the ciphertext, so a
    /// ciphertext moved elsewhere does not decrypt.
    #[arg(long)]
    context: String,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Watch only this namespace; repeatable, or comma-separated (default: all
    /// namespaces). With several, each gets its own watches.
    #[arg(long, env = "KEYWARD_NAMESPACE", value_delimiter = ',')]
    namespace: Vec<String>,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "KEYWARD_LOG_FORMAT")]
    log_format: LogFormat,
    /// Allow the legacy hash algorithms SHA-1 and MD5 (resources using them get a warning).
    #[arg(long, env = "KEYWARD_ALLOW_LEGACY_ALGORITHMS")]
    allow_legacy_algorithms: bool,
    /// Allow `secretType: Plaintext`, which stores the secret itself for the verifier.
    #[arg(long, env = "KEYWARD_ALLOW_PLAINTEXT_SECRETS")]
    allow_plaintext_secrets: bool,
    /// Name events are reported under, and this replica's identity in the leader Lease
    /// (set to the pod name in a cluster). Default: the host name with a random suffix.
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Container image of the re-encryption Jobs a key rotation runs: keyward itself.
    /// Default: the operator's own image, read from its Pod ($POD_NAMESPACE and
    /// $POD_NAME, set through the downward API), else ghcr.io/keyward/keyward:<version>.
    #[arg(long, env = "KEYWARD_JOB_IMAGE")]
    job_image: Option<String>,
    /// Node selector of the re-encryption Jobs' pods, as KEY=VALUE; repeatable.
    #[arg(long = "job-node-selector", value_name = "KEY=VALUE", value_parser = parse_label)]
    job_node_selector: Vec<(String, String)>,
    /// Toleration of the re-encryption Jobs' pods, as KEY[=VALUE]:EFFECT (EFFECT is
    /// NoSchedule, PreferNoSchedule or NoExecute); repeatable.
    #[arg(long = "job-toleration", value_name = "KEY[=VALUE]:EFFECT", value_parser = parse_toleration)]
    job_tolerations: Vec<k8s_openapi::api::core::v1::Toleration>,
    /// Run the Job templates of `spec.reencryption.jobTemplate` (re-encryption of data
    /// outside Kubernetes). Off by default: whoever may edit an EncryptionKey could then
    /// run any image under any ServiceAccount of its namespace.
    #[arg(long, env = "KEYWARD_ALLOW_JOB_TEMPLATES")]
    allow_job_templates: bool,
    /// Reconciles each controller runs at once; 0 for no bound. Bounds the load on the
    /// API server and the memory a bulk apply of thousands of objects takes.
    #[arg(long, default_value_t = 32, env = "KEYWARD_CONCURRENCY")]
    concurrency: u16,
    /// Where /metrics is served, as HOST:PORT or :PORT.
    #[arg(long, default_value = ":8080", value_parser = http::parse_listen_addr, env = "KEYWARD_METRICS_ADDR")]
    metrics_addr: SocketAddr,
    /// Where /healthz and /readyz are served, as HOST:PORT or :PORT.
    #[arg(long, default_value = ":8081", value_parser = http::parse_listen_addr, env = "KEYWARD_HEALTH_ADDR")]
    health_addr: SocketAddr,
    /// Elect one leader among the replicas through a Lease; only it reconciles.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    leader_elect: bool,
    /// Namespace of the leader Lease [default: $POD_NAMESPACE, else the first
    /// --namespace, else the kubeconfig's namespace].
    #[arg(long, env = "KEYWARD_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, default_value = "keyward")]
    leader_election_lease: String,
    /// How long the Lease stays held after its last renewal; then a replica standing by
    /// takes over.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    leader_election_lease_duration: Duration,
    /// How long the leader keeps reconciling without a renewal (shorter than the lease
    /// duration); it renews every half of it.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    leader_election_renew_deadline: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration: kube::core::Duration = text
        .parse()
        .map_err(|_| format!("expected a duration such as 15s or 1m, got {text:?}"))?;
    if duration.is_negative() {
        return Err(format!("{text:?} is negative"));
    }
    Ok(duration.into())
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

fn parse_toleration(text: &str) -> Result<k8s_openapi::api::core::v1::Toleration, String> {
    let (selector, effect) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("expected KEY[=VALUE]:EFFECT, got {text:?}"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(format!(
            "effect {effect:?} is not NoSchedule, PreferNoSchedule or NoExecute"
        ));
    }
    let (key, value) = match selector.split_once('=') {
        Some((key, value)) => (key, Some(value.to_owned())),
        None => (selector, None),
    };
    if key.is_empty() {
        return Err(format!("expected KEY[=VALUE]:EFFECT, got {text:?}"));
    }
    Ok(k8s_openapi::api::core::v1::Toleration {
        key: Some(key.to_owned()),
        operator: Some(if value.is_some() { "Equal" } else { "Exists" }.to_owned()),
        value,
        effect: Some(effect.to_owned()),
        ..Default::default()
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crds => print_crds().map(|()| ExitCode::SUCCESS),
        Command::Run(args) => {
            telemetry::init(args.log_format);
            block_on(run(args)).map(|()| ExitCode::SUCCESS)
        }
        Command::Hash { algorithm } => hash(&algorithm).map_err(|error| error.to_string()),
        Command::Verify {
            secret,
            namespace,
            file,
            wso2_record,
            keyring,
            kek,
        } => match wso2_record {
            Some(path) => verify_wso2(&path),
            None => verify(secret, namespace, file, keyring, kek),
        }
        .map_err(|error| error.to_string()),
        Command::Genkey { output, name } => genkey(output, name).map_err(|error| error.to_string()),
        Command::Encrypt(args) => cipher(&args, true).map_err(|error| error.to_string()),
        Command::Decrypt(args) => cipher(&args, false).map_err(|error| error.to_string()),
        Command::Reencrypt(args) => {
            telemetry::init(args.log_format);
            run_reencrypt(args)
        }
        Command::Scan(args) => scan(args),
        Command::Status(args) => status(&args),
    };
    result.unwrap_or_else(|message| {
        eprintln!("keyward: {message}");
        ExitCode::from(2)
    })
}

/// `keyward run`: the endpoints, then the controllers (under leader election).
async fn run(args: RunArgs) -> Result<(), String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|error| format!("cannot connect to the Kubernetes API: {error}"))?;
    let instance = args.instance.clone();
    let election = if args.leader_elect {
        let namespace = args
            .leader_election_namespace
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .or_else(|| args.namespace.first().cloned())
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let election = Election {
            namespace,
            lease_name: args.leader_election_lease,
            // The Pod's name; never the process id, which is 1 in every container.
            identity: keyward::leader::default_identity(instance.as_deref())
                .map_err(|error| format!("cannot choose an identity for the Lease: {error}"))?,
            lease_duration: args.leader_election_lease_duration,
            renew_deadline: args.leader_election_renew_deadline,
        };
        election.validate()?;
        Some(election)
    } else {
        None
    };
    let metrics = Arc::new(Metrics::new());
    let role = Arc::new(RoleCell::default());
    let endpoints = http::Endpoints {
        metrics: metrics.clone(),
        role: role.clone(),
    };
    let (metrics_at, health_at) = http::serve(endpoints, args.metrics_addr, args.health_addr)
        .await
        .map_err(|error| format!("cannot listen for the HTTP endpoints: {error}"))?;
    tracing::info!(metrics = %metrics_at, health = %health_at, "serving /metrics, /healthz and /readyz");
    let options = RunOptions {
        namespaces: args.namespace,
        policy: Policy {
            allow_legacy_algorithms: args.allow_legacy_algorithms,
            allow_plaintext_secrets: args.allow_plaintext_secrets,
        },
        instance,
        jobs: JobOptions {
            image: args.job_image.unwrap_or_default(),
            node_selector: args.job_node_selector.into_iter().collect(),
            tolerations: args.job_tolerations,
            allow_templates: args.allow_job_templates,
            own_account: None,
        },
        election,
        concurrency: args.concurrency,
    };
    controller::run(client, options, metrics, role)
        .await
        .map_err(|error| error.to_string())
}

fn print_crds() -> Result<(), String> {
    let yaml = keyward::crd::crds_yaml().map_err(|error| error.to_string())?;
    print!("{yaml}");
    Ok(())
}

fn hash(algorithm: &str) -> Result<ExitCode, tools::ToolError> {
    let algorithm = tools::algorithm(algorithm)?;
    let secret = tools::read_secret(std::io::stdin().lock())?;
    println!("{}", tools::hash_hex(algorithm, &secret));
    Ok(ExitCode::SUCCESS)
}

fn verify(
    secret: Option<String>,
    namespace: Option<String>,
    file: Option<PathBuf>,
    keyring: Option<PathBuf>,
    kek: Option<PathBuf>,
) -> Result<ExitCode, tools::ToolError> {
    let presented = tools::read_secret(std::io::stdin().lock())?;
    let keyring = keyring
        .map(|path| tools::keyring_from_file(&path, kek.as_deref()))
        .transpose()?;
    let record = match (file, secret) {
        (Some(path), _) => tools::record_from_file(&path, keyring.as_ref())?,
        (None, Some(name)) => block_on(tools::record_from_cluster(namespace.as_deref(), &name))?,
        (None, None) => unreachable!("clap requires --secret or --file"),
    };
    let (verdict, message) = tools::verify(&record, &presented);
    println!("{message}");
    Ok(verdict_exit_code(verdict))
}

/// `keyward verify --wso2-record FILE`: the presented secret against WSO2's stored form.
fn verify_wso2(path: &std::path::Path) -> Result<ExitCode, tools::ToolError> {
    let presented = tools::read_secret(std::io::stdin().lock())?;
    let record = tools::wso2_record_from_file(path)?;
    let (verdict, message) = tools::verify_wso2(&record, &presented);
    println!("{message}");
    Ok(verdict_exit_code(verdict))
}

/// 0 for a valid secret, 1 for an invalid one.
fn verdict_exit_code(verdict: Verdict) -> ExitCode {
    if verdict == Verdict::Rejected {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn genkey(output: KeyOutput, name: Option<String>) -> Result<ExitCode, tools::ToolError> {
    use base64::Engine;
    let key = KeyMaterial::generate()?;
    let text = match output {
        KeyOutput::Hex => zeroize::Zeroizing::new(hex::encode(key.expose())),
        KeyOutput::Base64 => {
            zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key.expose()))
        }
        KeyOutput::Keyring => {
            let name = name.unwrap_or_default();
            if !keyward::crypto::keyring::valid_key_name(&name) {
                return Err(tools::ToolError::Context(format!(
                    "--name {name:?} is not a Kubernetes object name"
                )));
            }
            let keyring = Keyring::new(&name, key, k8s_openapi::jiff::Timestamp::now());
            keyring.to_json().map_err(|error| tools::ToolError::Key {
                path: "generated keyring".into(),
                source: error,
            })?
        }
    };
    println!("{}", text.as_str());
    Ok(ExitCode::SUCCESS)
}

fn cipher(args: &CipherArgs, encrypt: bool) -> Result<ExitCode, tools::ToolError> {
    let context = tools::parse_context(&args.context)?;
    let keyring = match (&args.keyring, &args.key) {
        (Some(path), _) => tools::keyring_from_file(path, args.kek.as_deref())?,
        (None, Some(key)) => block_on(async {
            tools::keyring_from_cluster(&tools::cluster_client().await?, &context.0, key).await
        })?,
        (None, None) => unreachable!("clap requires --keyring or --key"),
    };
    let input = tools::read_secret(std::io::stdin().lock())?;
    if encrypt {
        println!("{}", tools::encrypt(&keyring, &context, &input)?);
    } else {
        let plaintext = tools::decrypt(&keyring, &context, &input)?;
        std::io::stdout()
            .write_all(plaintext.expose())
            .map_err(tools::ToolError::Stdin)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn run_reencrypt(args: ReencryptArgs) -> Result<ExitCode, String> {
    let options = reencrypt::Options {
        key_namespace: args.key.namespace,
        key_name: args.key.name,
        selector: args.selector,
        batch_size: args.batch_size,
        writes_per_second: args.writes_per_second,
        progress: args.progress,
        backfill: args.backfill,
    };
    let report = block_on(async {
        let client = tools::cluster_client()
            .await
            .map_err(|error| error.to_string())?;
        reencrypt::run(&client, &options)
            .await
            .map_err(|error| error.to_string())
    })?;
    println!(
        "re-encrypted {} of {} values to version {} ({} failed, {} writes)",
        report.done, report.total, report.target_version, report.failed, report.writes
    );
    Ok(if report.undecryptable() > 0 {
        eprintln!(
            "keyward: {} values do not decrypt; they are named in the log{}",
            report.undecryptable(),
            if options.progress.is_some() {
                " and the progress ConfigMap"
            } else {
                ""
            }
        );
        ExitCode::from(3)
    } else if report.contended > 0 {
        eprintln!(
            "keyward: {} values were left because their Secrets kept changing; run again",
            report.contended
        );
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn scan(args: ScanArgs) -> Result<ExitCode, String> {
    if let Some(ScanTarget::Database(database)) = args.target {
        return scan_database(database);
    }
    let key = args.key.ok_or("--key is required")?;
    let counts = block_on(async {
        let client = tools::cluster_client()
            .await
            .map_err(|error| error.to_string())?;
        reencrypt::scan(&client, &key.namespace, &key.name, args.selector.as_deref())
            .await
            .map_err(|error| error.to_string())
    })?;
    match args.output {
        ScanOutput::Text => {
            for (version, count) in &counts {
                println!("version {version}: {count}");
            }
        }
        ScanOutput::Json => println!("{}", serde_json::json!({ "versions": counts })),
    }
    Ok(ExitCode::SUCCESS)
}

/// `keyward scan database`: the census of one database, by hand.
fn scan_database(args: ScanDatabaseArgs) -> Result<ExitCode, String> {
    use keyward::crd::database::{DatabaseEngine, EncryptedColumn};
    use keyward::database::{Connection, ConnectionUrl};

    let engine = match args.engine {
        EngineArg::Postgresql => DatabaseEngine::PostgreSQL,
        EngineArg::Mysql => DatabaseEngine::MySQL,
    };
    let url = std::fs::read(&args.url_file)
        .map_err(|error| format!("cannot read {}: {error}", args.url_file.display()))?;
    let url = zeroize::Zeroizing::new(url);
    let url = ConnectionUrl::new(
        std::str::from_utf8(&url)
            .map_err(|_| format!("{} is not UTF-8 text", args.url_file.display()))?,
    );
    let columns: Vec<EncryptedColumn> = match &args.columns_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
            serde_yaml::from_str(&text)
                .map_err(|error| format!("{} is not a list of columns: {error}", path.display()))?
        }
        None => Vec::new(),
    };
    let census = block_on(async {
        let connection = Connection::connect(&args.name, engine, &url).await?;
        let census = keyward::database::census(&connection, &columns, args.page_size).await;
        connection.close().await;
        census
    })
    .map_err(|error| error.to_string())?;
    match args.output {
        ScanOutput::Json => println!(
            "{}",
            serde_json::to_string(&census).map_err(|error| error.to_string())?
        ),
        ScanOutput::Text => {
            for column in &census.columns {
                let mut parts: Vec<String> = column
                    .by_key_id
                    .iter()
                    .map(|(id, count)| format!("{count} under key id {id}"))
                    .collect();
                parts.push(format!("{} without key id", column.without_key_id));
                parts.push(format!("{} legacy AES/ECB", column.legacy_ecb));
                parts.push(format!("{} RSA", column.rsa));
                parts.push(format!("{} empty plaintext", column.empty_plaintext));
                parts.push(format!("{} not ciphertext", column.not_ciphertext));
                parts.push(format!("{} NULL or empty", column.absent));
                println!("{}: {}", column.column, parts.join(", "));
            }
            for skipped in &census.skipped {
                println!("{skipped}: skipped (no such table)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `keyward status`: the report on one resource, as text or JSON.
fn status(args: &StatusArgs) -> Result<ExitCode, String> {
    use keyward::status_report;
    let report = block_on(async {
        let client = tools::cluster_client()
            .await
            .map_err(|error| error.to_string())?;
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        status_report::fetch(&client, args.kind, &namespace, &args.name)
            .await
            .map_err(|error| error.to_string())
    })?;
    match args.output {
        StatusOutput::Text => print!("{}", status_report::text::render(&report)),
        StatusOutput::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|error| error.to_string())?
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the async runtime starts")
        .block_on(future)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn scan_counts_a_key_or_a_database() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["keyward", "scan"], args].concat());
        assert!(parse(&["--key", "apim/shared"]).is_ok());
        assert!(parse(&[]).is_err());
        assert!(parse(&["database", "--engine", "postgresql", "--url-file", "url"]).is_ok());
        assert!(
            parse(&[
                "database",
                "--engine",
                "mysql",
                "--url-file",
                "url",
                "-o",
                "json"
            ])
            .is_ok()
        );
        assert!(parse(&["database", "--url-file", "url"]).is_err());
        assert!(parse(&["--key", "apim/shared", "database", "--engine", "mysql"]).is_err());
    }

    #[test]
    fn status_takes_a_kind_by_name_plural_or_short_name_in_any_case() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["keyward", "status"], args].concat());
        for kind in [
            "encryptionkey",
            "EncryptionKey",
            "encryptionkeys",
            "ek",
            "EK",
        ] {
            let Ok(Cli {
                command: Command::Status(args),
            }) = parse(&[kind, "apim"])
            else {
                panic!("{kind} is refused");
            };
            assert_eq!(args.kind, keyward::status_report::Kind::EncryptionKey);
        }
        for kind in ["oauthclient", "OAuthClients", "oac"] {
            assert!(parse(&[kind, "portal", "-n", "wso2", "-o", "json"]).is_ok());
        }
        assert!(parse(&["secret", "portal"]).is_err());
        assert!(parse(&["ek"]).is_err());
        assert!(parse(&["ek", "apim", "-o", "yaml"]).is_err());
    }

    #[test]
    fn verify_takes_exactly_one_record_source() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["keyward", "verify"], args].concat());
        assert!(parse(&["--wso2-record", "record.json"]).is_ok());
        assert!(parse(&["--secret", "portal-verifier"]).is_ok());
        assert!(parse(&[]).is_err());
        assert!(
            parse(&[
                "--wso2-record",
                "record.json",
                "--secret",
                "portal-verifier"
            ])
            .is_err()
        );
        assert!(parse(&["--wso2-record", "record.json", "--file", "verifier.yaml"]).is_err());
        assert!(parse(&["--wso2-record", "record.json", "--keyring", "keyring.json"]).is_err());
    }
}
