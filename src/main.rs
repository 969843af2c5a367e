//! The `keyward` command line: runs the operator and prints its CRDs.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keyward::controller::{self, RunOptions};
use keyward::telemetry::{self, LogFormat};

/// keyward keeps an API-management platform's secrets safe on Kubernetes: OAuth client
/// secrets stored only as hashes, one AES-256-GCM key shared by every API-manager pod,
/// and key rotation run as a rolling, resumable re-encryption.
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
    Run {
        /// Watch only this namespace (default: all namespaces).
        #[arg(long, env = "KEYWARD_NAMESPACE")]
        namespace: Option<String>,
        /// Log line format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "KEYWARD_LOG_FORMAT")]
        log_format: LogFormat,
    },
    /// Print the CustomResourceDefinitions as YAML (`keyward crds | kubectl apply -f -`).
    Crds,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crds => print_crds(),
        Command::Run {
            namespace,
            log_format,
        } => {
            telemetry::init(log_format);
            run_operator(RunOptions { namespace })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keyward: {error}");
            ExitCode::FAILURE
        }
    }
}

fn print_crds() -> keyward::Result<()> {
    print!("{}", keyward::crd::crds_yaml()?);
    Ok(())
}

fn run_operator(options: RunOptions) -> keyward::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the async runtime starts");
    runtime.block_on(async {
        let client = kube::Client::try_default().await?;
        controller::run(client, options).await
    })
}
